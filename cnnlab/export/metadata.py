"""What travels inside every exported file, as string key → string value pairs.

The same dict goes into ONNX ``metadata_props``, OpenVINO ``rt_info`` (under ``cnnlab``) and a
TorchScript extra file (``cnnlab_metadata.json``), so one reader (:func:`cnnlab.export.read_metadata`)
serves all three. Lists and dicts are JSON strings. Keys:

``model``, ``task`` (classify | detect | embedding), ``outputs`` (JSON names: ``logits``, ``log_probs``, ``embedding`` or
``head0``…), ``classes`` (JSON list), ``input`` (``uint8 NCHW, normalised in the graph`` or
``float32 NCHW, normalised``), ``input_dtype``, ``input_size`` (JSON [C, H, W]), ``mean``, ``std``
(per channel, for pixels in [0, 1]), ``resize``, ``resize_mode``, ``interpolation``, ``color_order``
(RGB, or GRAY for one channel), ``preprocess`` (the whole :class:`~cnnlab.model_meta.Preprocess` as
JSON), ``precision``, ``batchnorm_folded``, ``cnnlab_version``; detectors add ``heads`` (JSON, one
entry per [yolo]/[region] layer: what :mod:`cnnlab.export.yolo_decode` needs) and ``decode``; an
embedding run's network adds ``embedding`` (how to use its raw output).
"""

from __future__ import annotations

import json

from cnnlab.model_meta import Preprocess

RT_INFO_SECTION = "cnnlab"  # OpenVINO rt_info namespace
TORCHSCRIPT_FILE = "cnnlab_metadata.json"


def build_metadata(
    name: str,
    classes: list[str],
    pre: Preprocess,
    outputs: list[str],
    *,
    input_uint8: bool,
    precision: str = "fp32",
    bn_folded: int = 0,
    heads: list[dict] | None = None,
) -> dict[str, str]:
    from cnnlab import __version__

    meta = {
        "model": name,
        "task": "detect" if heads else "classify",
        "outputs": json.dumps(outputs),
        "classes": json.dumps(list(classes)),
        "input": "uint8 NCHW, normalised in the graph" if input_uint8 else "float32 NCHW, normalised: (x/255 - mean) / std",
        "input_dtype": "uint8" if input_uint8 else "float32",
        "input_size": json.dumps(list(pre.input_size)),
        "mean": json.dumps(list(pre.mean)),
        "std": json.dumps(list(pre.std)),
        "resize": str(pre.resize),
        "resize_mode": pre.resize_mode,
        "interpolation": pre.interpolation,
        "color_order": "RGB" if pre.channels == 3 else "GRAY" if pre.channels == 1 else f"{pre.channels} channels",
        "preprocess": json.dumps(pre.to_dict()),
        "precision": precision,
        "batchnorm_folded": str(bn_folded),
        "cnnlab_version": __version__,
    }
    if heads:
        meta["heads"] = json.dumps(heads)
        meta["decode"] = "raw [yolo]/[region] outputs; boxes and NMS: cnnlab.export.yolo_decode (docs/export.md)"
    return meta


def preprocess_of(meta: dict[str, str]) -> Preprocess:
    return Preprocess.from_dict(json.loads(meta["preprocess"]))


def classes_of(meta: dict[str, str]) -> list[str]:
    return list(json.loads(meta["classes"]))
