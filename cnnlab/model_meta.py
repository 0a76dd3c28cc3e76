"""What every model carries as data: its preprocessing and metadata (a leaf module).

``data/``, ``models/``, ``darknet/`` and ``engine/`` all read these; keeping them here, importing
nothing of cnnlab, means none of those packages has to import another to learn how to feed a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("short", "letterbox")


@dataclass(frozen=True)
class Preprocess:
    """How pixels become the network's input; the one definition every command uses.

    Evaluation (``resize_mode="short"``): resize the shorter side to ``resize`` (``interpolation``),
    then center-crop to ``input_size`` — padding with zeros where the image is smaller (so 28×28 MNIST
    digits sit in LeNet-5's 32×32 field, as in the paper). ``resize_mode="letterbox"`` (pjreddie
    darknet) instead fits the whole image inside ``input_size`` keeping its aspect and centres it on a
    grey (128) canvas; ``resize`` is then unused. Then ``(x / 255 - mean) / std`` per channel.
    A "mean pixel" recipe (AlexNet, VGG) is ``mean=<pixel>/255, std=(1/255, …)``.
    """

    input_size: tuple[int, int, int]  # (C, H, W) the network sees
    mean: tuple[float, ...]  # per channel, for pixels scaled to [0, 1]
    std: tuple[float, ...]
    resize: int  # eval: shorter side resized to this before the center crop
    interpolation: str = "bilinear"  # bilinear | bicubic | nearest
    resize_mode: str = "short"  # short (shorter side + centre crop) | letterbox (fit, grey borders)

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, not {self.resize_mode!r}")

    @property
    def channels(self) -> int:
        return self.input_size[0]

    @property
    def crop_pct(self) -> float:
        return self.input_size[1] / self.resize

    def with_channels(self, in_chans: int) -> "Preprocess":
        """The same recipe for a different channel count (grey ↔ RGB)."""
        if in_chans == self.channels:
            return self
        mean = sum(self.mean) / len(self.mean)
        std = sum(self.std) / len(self.std)
        return replace(
            self,
            input_size=(in_chans, *self.input_size[1:]),
            mean=(mean,) * in_chans,
            std=(std,) * in_chans,
        )

    def to_dict(self) -> dict:
        return {
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": self.resize,
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(
            input_size=tuple(d["input_size"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            resize=int(d["resize"]),
            interpolation=d.get("interpolation", "bilinear"),
            resize_mode=d.get("resize_mode", "short"),  # checkpoints from before letterbox existed
        )


@dataclass
class ModelMeta:
    """What the rest of cnnlab needs to know about an architecture, kept as data."""

    name: str
    preprocess: Preprocess
    first_conv: str  # dotted module name of the first convolution
    classifier: str  # dotted module name of the final classifier layer
    paper: str = ""  # citation for the architecture
    extra: dict = field(default_factory=dict)
