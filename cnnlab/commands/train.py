"""``cnnlab train``: defaults < ``--config`` recipe < command-line flags (one flag per config key)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cnnlab import config

NAME = "train"
HELP = "train a model (every config key is a flag; see the defaults below)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="RECIPE", help=f"YAML recipe file, or a bundled one: {', '.join(config.list_recipes())}")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run exactly where it stopped")
    p.add_argument("--nproc", type=int, metavar="N", help="train with N processes on this machine (torchrun; gloo on CPU, nccl on CUDA)")
    p.add_argument("--max-restarts", type=int, default=0, metavar="K", help="with --nproc: restart the processes up to K times after a failure, resuming from the last checkpoint")
    config.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    from cnnlab.engine.train import train

    if args.nproc is not None:
        from cnnlab.engine.launch import launch

        return launch(args.nproc, args._argv[1:], args.max_restarts)

    from cnnlab.errors import CnnlabError

    overrides = config.overrides_from_args(args)
    if args.resume:
        saved = Path(args.resume) / "config.yaml"
        if args.config:  # its keys would be ignored: the run's own recipe is its config.yaml
            raise CnnlabError(f"--config with --resume: a resumed run keeps its own recipe ({saved}); drop --config, and give "
                              "what may change as flags (e.g. --epochs N)")  # fmt: skip
        if not saved.is_file():
            raise CnnlabError(f"{args.resume} is not a run directory (no config.yaml); start a new run without --resume")
        if (Path(args.resume) / "checkpoints" / "last.pt").is_file():  # a run stopped before its first checkpoint may change anything
            config.check_resume_overrides(config.load_saved(saved), overrides, Path(args.resume))
        cfg = config.resolve(config.load_saved(saved), overrides)
    else:
        recipe = config.load_recipe(args.config) if args.config else {}
        cfg = config.resolve({**_task_defaults({**recipe, **overrides}), **recipe}, overrides)
    summary = train(cfg, resume=args.resume)
    if summary is None:  # not the main process of a distributed run
        return 0
    print(
        f"held-out {summary['headline']}  ({summary['val_images']} images; {summary['epochs']} epoch{'s' if summary['epochs'] != 1 else ''} in "
        f"{summary['train_seconds']:.1f} s, {summary['images_per_second']:.0f} img/s)"
    )
    if line := best_checkpoint_line(summary):
        print(line)
    if summary["bad_images"]:
        print(f"skipped {len(summary['bad_images'])} unreadable image(s); they are listed in {summary['run_dir']}/summary.json")
    print(f"run directory: {summary['run_dir']}")
    return 0


def best_checkpoint_line(summary: dict) -> str | None:
    """When the best epoch was not the last: ``valid -c RUN`` reads best.pt, so its figure differs from
    the last epoch's printed above; say which epoch it holds."""
    if not 0 < summary["best_epoch"] != summary["epochs"]:
        return None
    return (f"checkpoints/best.pt is epoch {summary['best_epoch']}'s (held-out {summary['best']:.4g}, the best); "
            "cnnlab valid and predict -c RUN use it")  # fmt: skip


def _task_defaults(chosen: dict) -> dict:
    """The task's own defaults for what neither the recipe nor the command line set; says so once."""
    from cnnlab.engine.task import task_defaults

    default = config.TrainConfig()
    values, why = task_defaults(chosen.get("task", default.task), chosen.get("model", default.model))
    used = {k: v for k, v in values.items() if k not in chosen}
    if used and int(os.environ.get("RANK", "0")) == 0:
        flags = ", ".join("--" + k.replace("_", "-") + f" {v}" for k, v in used.items())
        print(f"{why}: {flags} (set them to override)")
    return used
