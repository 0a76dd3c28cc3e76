# Two commands do all the set-up on a fresh clone:
#   make demo   train LeNet-5 on the bundled mnist5k digits, evaluate, predict
#   (make demo-shards: the same from WebDataset shards written first)
#   make test   run the test suite
# Both create .venv when it is missing and install cnnlab into it (editable) with pip.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.cnnlab-installed
TORCH  := torch==2.14.1 torchvision==0.29.1
DEMO   := runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: demo demo-shards test install clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m cnnlab train --config lenet5_mnist5k --out $(DEMO)
	$(PY) -m cnnlab valid -c $(DEMO) --no-progress
	$(PY) -m cnnlab datasets mnist5k --export $(DEMO)/samples --split val --per-class 1 --limit 4
	$(PY) -m cnnlab predict -c $(DEMO) $(DEMO)/samples/val/*/*.png
	@echo "demo run: $(DEMO)  (tensorboard --logdir $(DEMO)/tb)"

# The same recipe read from WebDataset shards (docs/shards.md); the shards are kept in runs/shards.
demo-shards: $(STAMP)
	test -f runs/shards/mnist5k/val/manifest.json || $(PY) -m cnnlab data shards mnist5k --out runs/shards/mnist5k
	$(PY) -m cnnlab train --config lenet5_mnist5k --data shards:runs/shards/mnist5k --out $(DEMO)
	$(PY) -m cnnlab valid -c $(DEMO) --data shards:runs/shards/mnist5k --no-progress
	$(PY) -m cnnlab predict -c $(DEMO) shards:runs/shards/mnist5k/val --format csv > $(DEMO)/predictions.csv
	head -6 $(DEMO)/predictions.csv

test: $(STAMP)
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
