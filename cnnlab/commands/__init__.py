"""One module per ``cnnlab`` sub-command (see :mod:`cnnlab.cli` for the protocol)."""

# Module names, in the order `cnnlab --help` lists them.
COMMANDS: list[str] = ["train", "valid", "predict", "models", "summary", "datasets", "data", "darknet", "export"]
