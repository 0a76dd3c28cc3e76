"""Training configuration: defaults < YAML recipe < command line.

One flat dataclass, so every key is visible in one place, can be set in a recipe and on the command
line (``lr`` ↔ ``--lr``, ``warmup_epochs`` ↔ ``--warmup-epochs``), and is saved with the run.
Unknown keys are errors that suggest the closest valid key.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from cnnlab.errors import CnnlabError
from cnnlab.fileio import write_text_atomic

RECIPES_DIR = Path(__file__).parent / "recipes"


@dataclass
class TrainConfig:
    # --- what to train on what
    task: str = "classify"  # classify | embedding (metric learning from positive and negative pairs) | detect (darknet YOLO cfgs)
    embedding_dim: int = 64  # embedding: size of the L2-normalised embedding (the network's output width)
    embedding_loss: Literal["triplet", "contrastive"] = "triplet"  # embedding: triplet (batch-all, mined from the batch's labels) | contrastive (every pair)
    margin: float = 0.2  # embedding: triplet margin (0.2), or the distance contrastive pushes negatives beyond (0.5); 0 < margin <= 2
    model: str = "resnet18"  # a zoo architecture (cnnlab models lists them) or darknet:PATH.cfg
    data: str = "mnist5k"  # built-in dataset name or a path (class folders, MNIST idx, CIFAR batches)
    out: str = ""  # run directory; default runs/<model>-<data>[-N], never an existing one
    init: str = ""  # checkpoint to start from (same classes); see also finetune
    finetune: str = ""  # checkpoint whose weights (all but the classifier) start a new head
    model_kwargs: dict = field(default_factory=dict)  # extra builder arguments, e.g. {shortcut: A}

    # --- fine-tuning and transfer (docs: README "Fine-tuning")
    classes: str = ""  # train and evaluate on these classes only: names or indices as the data set names them, comma-separated (e.g. 5,6,7,8,9); "" = all
    per_class: int = 0  # train on N seeded images per class (evaluation keeps every held-out image); 0 = all
    freeze: str = ""  # N: the first N stages of the model (in forward order; the run names those it froze) get no gradient and keep their BatchNorm statistics; features: every stage forward_features runs (a fixed feature extractor); "" = none
    unfreeze_at: int = 0  # from this epoch on (1-based, as printed) the frozen stages train too; 0 = never
    head_lr_mult: float = 1.0  # the classifier's (and auxiliary heads') learning rate is lr x this
    layer_decay: float = 1.0  # layer-wise lr decay: stage i of n trains at lr x layer_decay^(n - i), the head at lr x head_lr_mult; 1 = off

    # --- schedule of the run
    epochs: int = 10  # passes over the training images
    batch_size: int | Literal["auto"] = 64  # images per process per micro-batch; auto: the largest that fits in memory (with global_batch)
    accum_steps: int = 1  # gradient accumulation: micro-batches per optimizer step
    global_batch: int = 0  # images per optimizer step over all processes (processes × batch_size × accum_steps): given, accum_steps follows from it; 0 = that product
    train_limit: int = 0  # train on a seeded random N images only (quick trials); 0 = all
    val_limit: int = 0  # evaluate on N held-out images only; 0 = all
    workers: int = 2  # DataLoader worker processes (0 = load in the main process)
    seed: int = 0  # seeds weights, data order, augmentation and subsets: the same seed gives the same run
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps

    # --- optimizer
    opt: str = "sgd"  # sgd | adamw
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum (AdamW: beta1)
    nesterov: bool = False  # SGD: Nesterov momentum
    weight_decay: float = 1e-4  # L2 penalty (SGD) or decoupled decay (AdamW)
    no_decay_bn_bias: bool = True  # no weight decay on BatchNorm and bias parameters
    clip_grad: float = 0.0  # max global grad norm; 0 = off
    label_smoothing: float = 0.0  # cross-entropy target smoothing (0.1 is common); 0 = off
    ema_decay: float = 0.0  # exponential moving average of weights; 0 = off (e.g. 0.999)
    class_weights: str = ""  # loss weight per class: auto (inverse frequency) or a file (one per class); "" = off
    balance: Literal["none", "sampler"] = "none"  # none | sampler (draw every class equally often)
    balance_alpha: float = 1.0  # --balance sampler: an image of a class of n_c images has weight n_c^-alpha (1: classes equally often, 0.5: square root, 0: natural)

    # --- learning-rate schedule (stepped every optimizer step)
    sched: str = "cosine"  # constant | step | multistep | cosine | onecycle
    warmup_epochs: float = 0.0  # linear warm-up from warmup_factor × lr
    warmup_factor: float = 0.01  # warm-up starts at this fraction of lr
    step_size: int = 30  # step: epochs between decays
    milestones: list[int] = field(default_factory=lambda: [30, 60, 90])  # multistep: epochs
    gamma: float = 0.1  # step / multistep decay factor
    min_lr_factor: float = 0.0  # cosine / onecycle: final lr = min_lr_factor × lr
    pct_start: float = 0.25  # onecycle: fraction of the run spent rising

    # --- speed
    amp: str = "auto"  # auto (bf16 on CPU, fp16 on CUDA) | off | bf16 | fp16
    channels_last: bool = True  # NHWC activations (faster convolutions on recent CPUs and GPUs)
    compile: bool = False  # torch.compile the model
    sync_bn: bool = False  # SyncBatchNorm across processes (CUDA only; on the CPU statistics are averaged per epoch)

    # --- augmentation (train only; evaluation uses the model's resize + center crop)
    crop: Literal["rrc", "center"] = "rrc"  # rrc (random resized crop) | center (resize + center crop, as in eval)
    rrc_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # rrc: range of the crop's area, as a fraction of the image
    rrc_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])  # rrc: range of the crop's aspect ratio
    hflip: float = 0.5  # probability
    rotation: float = 0.0  # degrees, uniform in ±rotation
    translate: float = 0.0  # fraction of the size, uniform in ±translate
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # affine zoom range
    color_jitter: float = 0.0  # brightness/contrast/saturation strength (0.4 is common)
    pca_lighting: float = 0.0  # AlexNet PCA lighting noise std (0.1 in the paper)

    # --- bookkeeping
    ckpt_every: int = 0  # also save last.pt every N optimizer steps (0 = once per epoch)
    log_every: int = 20  # TensorBoard scalars every N optimizer steps
    max_bad_fraction: float = 0.01  # stop with an error when more of the images are unreadable
    preprocess: dict = field(default_factory=dict)  # override the model's Preprocess fields
    progress: bool = True  # progress bar

    def __post_init__(self) -> None:
        # Choice-like keys are Literal[...] and checked here, once, however the config was made.
        for name, typ in _field_types().items():
            if typing.get_origin(typ) is Literal and getattr(self, name) not in typing.get_args(typ):
                choices = ", ".join(typing.get_args(typ))
                raise CnnlabError(f"config key {name!r} must be one of {choices}, got {getattr(self, name)!r}")
        if self.freeze not in ("", "features") and not self.freeze.isdecimal():
            raise CnnlabError(f"--freeze takes a number of stages or 'features', got {self.freeze!r}")
        self._check_ranges()

    def _check_ranges(self) -> None:
        """Numbers out of range — ones torch, torchvision or the optimizer would refuse with a traceback
        among them — refused first, in one line naming the flag."""
        for key, (ok, what) in _RANGES.items():
            value = getattr(self, key)
            if not (math.isfinite(value) and ok(value)):
                raise CnnlabError(f"--{key.replace('_', '-')} must be {what}, got {value}")
        for key, lo, hi in (("rrc_scale", 0.0, 1.0), ("rrc_ratio", 0.0, math.inf), ("scale", 0.0, math.inf)):
            pair = getattr(self, key)
            if len(pair) != 2 or not lo < pair[0] <= pair[1] <= hi:
                bound = f" at most {hi:g}" if math.isfinite(hi) else ""
                raise CnnlabError(f"--{key.replace('_', '-')} takes two numbers MIN MAX with 0 < MIN <= MAX{bound}, got {pair}")


_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {  # key -> (accepts, what it must be); NaN/inf never
    "per_class": (lambda v: v >= 0, "0 or more"),
    "unfreeze_at": (lambda v: v >= 0, "0 or more"),
    "head_lr_mult": (lambda v: v >= 0, "a finite number >= 0"),
    "layer_decay": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "lr": (lambda v: v > 0, "a number > 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (lambda v: v >= 0, "0 or more"),
    "clip_grad": (lambda v: v >= 0, "0 (off) or more"),
    "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "ema_decay": (lambda v: 0 <= v < 1, "in [0, 1) (0 = off)"),
    "balance_alpha": (lambda v: v >= 0, "0 or more"),
    "warmup_epochs": (lambda v: v >= 0, "0 or more"),
    "warmup_factor": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "gamma": (lambda v: v > 0, "a number > 0"),
    "min_lr_factor": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "pct_start": (lambda v: 0 < v < 1, "in (0, 1)"),
    "hflip": (lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    "rotation": (lambda v: v >= 0, "0 or more degrees (the angle is drawn in ±rotation)"),
    "translate": (lambda v: 0 <= v <= 1, "a fraction of the size in [0, 1]"),
    "color_jitter": (lambda v: v >= 0, "0 (off) or more"),
    "pca_lighting": (lambda v: v >= 0, "0 (off) or more"),
    "max_bad_fraction": (lambda v: 0 <= v <= 1, "a fraction in [0, 1]"),
    "accum_steps": (lambda v: v >= 1, "1 or more"),
    "step_size": (lambda v: v >= 1, "1 or more epochs"),
    "train_limit": (lambda v: v >= 0, "0 (all) or more"),
    "val_limit": (lambda v: v >= 0, "0 (all) or more"),
    "workers": (lambda v: v >= 0, "0 or more"),
    "ckpt_every": (lambda v: v >= 0, "0 or more"),
    "log_every": (lambda v: v >= 1, "1 or more"),
}


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig)}


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check and convert one value to the field's type (YAML gives ints for floats, etc.)."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):  # e.g. int | Literal["auto"]: the first option that takes the value
        for option in typing.get_args(typ):
            if typing.get_origin(option) is Literal:
                if value in typing.get_args(option):
                    return value
            else:
                try:
                    return _coerce(key, value, option)
                except CnnlabError:
                    pass
        raise CnnlabError(f"config key {key!r} must be {_describe(typ)}, got {value!r}")
    try:
        if typ is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if not isinstance(value, bool):
                raise ValueError
            return value
        if origin is Literal:  # the value is checked against the choices in TrainConfig.__post_init__
            return str(value)
        if typ in (int, float, str):
            if isinstance(value, bool) or (typ is not str and isinstance(value, (list, dict))):
                raise ValueError
            if typ is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return typ(value)
        if origin is list:
            (item,) = typing.get_args(typ)
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split()]
            return [_coerce(key, v, item) for v in value]
        if typ is dict or origin is dict:
            if isinstance(value, str):
                value = yaml.safe_load(value) or {}
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except (ValueError, TypeError, yaml.YAMLError):
        pass
    name = getattr(typ, "__name__", str(typ))
    raise CnnlabError(f"config key {key!r} must be {name}, got {value!r}")


def _describe(typ: Any) -> str:
    """``int or 'auto'`` for ``int | Literal["auto"]``."""
    if typing.get_origin(typ) is Literal:
        return " or ".join(map(repr, typing.get_args(typ)))
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        return " or ".join(_describe(t) for t in typing.get_args(typ))
    return getattr(typ, "__name__", str(typ))


def _check_keys(d: dict, where: str) -> None:
    valid = list(_field_types())
    for key in d:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CnnlabError(f"unknown config key {key!r} in {where}{hint}; valid keys are listed by `cnnlab train --help`")


def load_recipe(path: str) -> dict:
    """A YAML recipe: a path, or the name of a bundled recipe in cnnlab/recipes/."""
    p = Path(path)
    if not p.exists() and (RECIPES_DIR / f"{path}.yaml").exists():
        p = RECIPES_DIR / f"{path}.yaml"
    if not p.exists():
        raise CnnlabError(f"recipe {path!r} not found; give a YAML file path or one of: {', '.join(list_recipes())}")
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise CnnlabError(f"recipe {p} is not valid YAML: {e}".splitlines()[0]) from None
    if not isinstance(d, dict):
        raise CnnlabError(f"recipe {p} must be a mapping of config keys to values")
    _check_keys(d, str(p))
    return d


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def resolve(recipe: dict | None = None, overrides: dict | None = None) -> TrainConfig:
    """defaults < recipe < overrides; every value type-checked."""
    types_ = _field_types()
    merged: dict[str, Any] = {}
    for where, d in (("the recipe", recipe or {}), ("the command line", overrides or {})):
        _check_keys(d, where)
        for key, value in d.items():
            merged[key] = _coerce(key, value, types_[key])
    return TrainConfig(**merged)


def to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def save(cfg: TrainConfig, path: Path, extra: dict | None = None) -> None:
    doc = to_dict(cfg)
    write_text_atomic(path, yaml.safe_dump(doc, sort_keys=False) + (yaml.safe_dump(extra, sort_keys=False) if extra else ""))


def load_saved(path: Path) -> dict:
    """The config keys saved in a run directory's config.yaml (extra provenance keys dropped)."""
    d = yaml.safe_load(path.read_text()) or {}
    return {k: v for k, v in d.items() if k in _field_types()}


def field_comments() -> dict[str, str]:
    """Each config key's comment in :class:`TrainConfig` (its one description, kept beside the default)."""
    import inspect
    import io
    import tokenize

    comments: dict[str, str] = {}
    current = None
    for tok in tokenize.generate_tokens(io.StringIO(inspect.getsource(TrainConfig)).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and current is None:
            current = tok.string  # a field (or def) starts at the class body's indentation
        elif tok.type == tokenize.COMMENT and current is not None and tok.start[1] > 4:
            comments[current] = tok.string.lstrip("# ").strip()
        if tok.type in (tokenize.NEWLINE, tokenize.NL):
            current = None
    return comments


def add_arguments(p: argparse.ArgumentParser) -> None:
    """One ``--flag`` per config key, described by its comment in TrainConfig; unset flags stay out of the overrides."""
    comments = field_comments()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        typ = _field_types()[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_ = f"(default: {default!r})"
        if f.name in comments:
            help_ = f"{comments[f.name]} {help_}".replace("%", "%%")  # argparse formats help with %
        elif typing.get_origin(typ) is Literal:
            help_ = f"{' | '.join(typing.get_args(typ))} {help_}"
        elif typing.get_origin(typ) in (typing.Union, types.UnionType):
            help_ = f"{_describe(typ)} {help_}"
        if typ is bool:
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif typing.get_origin(typ) is list:
            p.add_argument(flag, dest=f.name, nargs="+", default=None, help=help_)
        else:
            p.add_argument(flag, dest=f.name, default=None, help=help_)


# keys a resumed run may change: how long it trains (the schedule is laid over the new length), and how
# it runs, not what it computes; any other key is fixed by the optimizer, scheduler and data order it continues
CHANGEABLE_ON_RESUME = frozenset({"epochs", "workers", "progress", "log_every", "ckpt_every", "device", "max_bad_fraction", "out"})


def check_resume_overrides(saved: dict, overrides: dict, run_dir: Path) -> None:
    """Refuse a command-line key that differs from the run's own (in config.yaml) and that a resumed run
    could not apply: its optimizer, schedule and data order continue as saved."""
    then, now = resolve(saved), resolve(saved, overrides)
    for key in overrides:
        if key in ("data", "model", "task"):
            continue  # refused when the checkpoint is read, with what to do instead (train_checkpoint.check_resume)
        if key not in CHANGEABLE_ON_RESUME and getattr(then, key) != getattr(now, key):
            raise CnnlabError(
                f"--{key.replace('_', '-')} cannot change when resuming ({run_dir} has {getattr(then, key)!r}): the run continues "
                f"with the optimizer, schedule and data it had; resume without it, or start a new run from it with "
                f"--init {run_dir / 'checkpoints' / 'last.pt'}"
            )


def overrides_from_args(args: argparse.Namespace) -> dict:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if getattr(args, f.name, None) is not None}


