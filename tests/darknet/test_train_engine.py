"""``cnnlab darknet classifier train`` on the engine: darknet's loss scale through the engine's
accumulation, the [net] policies as a torch scheduler, the engine's NaN stop in darknet's words,
whole updates when images cannot be read, and -topk through the engine's evaluation."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.cli import main
from cnnlab.darknet.schedule import DarknetRate, NetTraining
from cnnlab.darknet.task import AsIs, DarknetClassify
from cnnlab.darknet.train import train_classifier
from cnnlab.data.loader import Batch
from cnnlab.engine.loop import Trainer, train_step
from cnnlab.engine.state import TrainState

from .test_train import CFG, PROGRESS, dataset, net_section  # noqa: F401  (dataset: the fixture)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 5)

    def forward_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.fc(x.flatten(1)), 1)


def _update(model: nn.Module, micro: list[tuple[torch.Tensor, torch.Tensor]], batch: int) -> None:
    """One update of plain SGD (lr 1) through the engine's train_step and the darknet task."""
    s = len(micro)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    task = DarknetClassify(["a"] * 5, torch.device("cpu"), batch, s, top=1, k=1)
    t = Trainer(model, task, AsIs(), opt, sched, torch.amp.GradScaler("cpu", enabled=False), None, torch.device("cpu"), None, s)
    state = TrainState()
    for x, y in micro:
        train_step(t, Batch(x, y, torch.arange(len(y)), size=len(y)), state)
    assert state.step == 1


@pytest.mark.parametrize("subdivisions, batch", [(1, 3), (2, 5), (7, 5), (25, 3), (41, 7), (61, 5)])
def test_gradient_scale_rounds_once_for_any_subdivisions(subdivisions: int, batch: int) -> None:
    # darknet's update divides the summed loss by batch × subdivisions; through the engine's
    # accumulation (÷ subdivisions per micro-batch) the gradient must be the same to the bit
    g = torch.Generator().manual_seed(subdivisions * 100 + batch)
    micro = [(torch.randn(batch, 12, generator=g), torch.randint(0, 5, (batch,), generator=g)) for _ in range(subdivisions)]
    engine, reference = Tiny(), Tiny()
    reference.load_state_dict(engine.state_dict())
    _update(engine, micro, batch)
    for x, y in micro:
        (F.nll_loss(reference.forward_log_probs(x), y, reduction="sum") / (batch * subdivisions)).backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= p.grad
    for a, b in zip(engine.parameters(), reference.parameters()):
        assert torch.equal(a, b)


def test_darknet_rate_sets_the_rate_of_the_update_about_to_be_reached() -> None:
    t = NetTraining.from_net(net_section("learning_rate=0.1\npolicy=steps\nsteps=10,20\nscales=.5,.1\nburn_in=4\npower=2\nmax_batches=30"))
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=t.learning_rate)
    sched = DarknetRate(opt, t, start=2)  # a run resumed after update 2
    rates = []
    for _ in range(20):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == [t.rate(b) for b in range(3, 23)]  # exactly darknet's numbers, not factors of a base rate
    resumed = DarknetRate(torch.optim.SGD([p], lr=t.learning_rate), t, start=2)
    resumed.load_state_dict(sched.state_dict())
    assert resumed.last_epoch == 20 and resumed.get_lr() == [t.rate(23)]


def test_a_nan_loss_stops_with_darknets_advice(dataset: Path, tmp_path: Path, capsys) -> None:  # noqa: F811  (dataset: the imported fixture)
    (tmp_path / "net.cfg").write_text(CFG.replace("learning_rate=0.1", "learning_rate=100000"))
    code = main(["darknet", "classifier", "train", str(dataset), str(tmp_path / "net.cfg")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and re.fullmatch(r"cnnlab darknet: error: loss became nan .*at optimizer step \d+ \(epoch \d+\).*", err[-1]), err[-1]
    assert "lower learning_rate= (or add burn_in=) in [net]" in err[-1] and "--lr" not in err[-1]
    assert not (tmp_path / "backup" / "net.weights").exists()  # nothing from the failed update on is saved


def test_an_unreadable_image_is_replaced_so_every_update_has_its_images(dataset: Path) -> None:  # noqa: F811
    # one image per micro-batch: dropping the unreadable one would leave a micro-batch empty
    listing = dataset.parent / "train.list"
    broken = dataset.parent / "img" / "red" / "broken.png"
    broken.write_bytes(b"not a png")
    listing.write_text(f"{broken}\n" + listing.read_text())
    (dataset.parent / "net.cfg").write_text(CFG.replace("batch=24", "batch=4").replace("subdivisions=2", "subdivisions=4"))
    out, err = io.StringIO(), io.StringIO()
    train_classifier(str(dataset), str(dataset.parent / "net.cfg"), max_batches=20, out=out, err=err)
    m = [PROGRESS.fullmatch(line).groups() for line in out.getvalue().splitlines() if PROGRESS.fullmatch(line)]
    assert [int(g[0]) for g in m] == list(range(1, 21)) and [int(g[5]) for g in m] == [4 * b for b in range(1, 21)]
    assert err.getvalue().count("warning: skipping") == 1 and f"skipped 1 unreadable image(s): {broken}" in err.getvalue()


def test_topk_skips_an_unreadable_validation_image(dataset: Path) -> None:  # noqa: F811
    valid = dataset.parent / "valid.list"
    broken = dataset.parent / "img" / "blue" / "broken.png"
    broken.write_bytes(b"")
    valid.write_text((dataset.parent / "train.list").read_text() + f"{broken}\n")
    dataset.write_text(dataset.read_text() + f"valid={valid}\n")
    out, err = io.StringIO(), io.StringIO()
    train_classifier(str(dataset), str(dataset.parent / "net.cfg"), flavor="alexeyab", max_batches=2, topk=True, out=out, err=err)
    assert re.fullmatch(r" accuracy top2 = \d\.\d{6} ", out.getvalue().splitlines()[-1])
    assert err.getvalue().count(f"warning: skipping {broken}") == 1
