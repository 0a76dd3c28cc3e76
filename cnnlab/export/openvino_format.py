"""OpenVINO IR export: fp32 converted from the ONNX export (the same graph onnxruntime runs), bf16
converted from the PyTorch module with its weights cast to bfloat16 (half the file; the CPU plugin
then runs it in bf16 where the CPU has the instructions). Metadata goes into ``rt_info['cnnlab']``."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

from torch import nn

from cnnlab.export.metadata import RT_INFO_SECTION
from cnnlab.export.failures import translating
from cnnlab.export.onnx_format import write_onnx
from cnnlab.export.prepare import Prepared, prepare, temp_beside
from cnnlab.model_meta import Preprocess


def _save(ov_model, metadata: dict[str, str], xml: Path) -> Path:
    """Save ``ov_model`` as ``xml`` + ``.bin`` with the metadata, via temporary names then renames."""
    import openvino as ov

    for key, value in metadata.items():
        ov_model.set_rt_info(value, [RT_INFO_SECTION, key])
    xml.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(xml, ".xml")
    try:
        ov.save_model(ov_model, str(tmp), compress_to_fp16=False)  # keep the weights' own precision
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp, xml)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".bin").unlink(missing_ok=True)
    return xml


def onnx_to_openvino(onnx_path: str | Path, xml_path: str | Path) -> Path:
    """An ONNX file written by :func:`export_onnx` → OpenVINO IR, metadata carried over."""
    import onnx
    import openvino as ov

    proto = onnx.load(str(onnx_path), load_external_data=False)
    metadata = {p.key: p.value for p in proto.metadata_props}
    with translating("openvino", metadata.get("model", Path(onnx_path).name)):
        converted = ov.convert_model(str(onnx_path))
    return _save(converted, metadata, Path(xml_path))


def _bf16_model(prep: Prepared, dynamic_batch: bool):
    import openvino as ov

    shape = [-1 if dynamic_batch else prep.example.shape[0], *prep.example.shape[1:]]
    dtype = ov.Type.u8 if prep.metadata["input_dtype"] == "uint8" else ov.Type.f32
    with translating("openvino", prep.metadata["model"]), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the torch frontend traces with torch.jit, which warns it is deprecated
        model = ov.convert_model(prep.graph, example_input=prep.example, input=[(ov.PartialShape(shape), dtype)])
    model.inputs[0].get_tensor().set_names({"images"})
    for out, name in zip(model.outputs, prep.output_names):
        out.get_tensor().set_names({name})
    return model


def write_openvino(prep: Prepared, xml: Path, dynamic_batch: bool = True) -> Path:
    """``prep`` → ``xml`` + ``.bin``; fp32 through a temporary ONNX file, bf16 from the module."""
    import openvino as ov

    prep.metadata["batch"] = "dynamic" if dynamic_batch else str(len(prep.example))
    if prep.metadata["precision"] == "bf16":
        return _save(_bf16_model(prep, dynamic_batch), prep.metadata, xml)
    onnx_tmp = temp_beside(xml, ".onnx")
    try:
        write_onnx(prep, onnx_tmp, dynamic_batch)
        with translating("openvino", prep.metadata["model"]):
            converted = ov.convert_model(str(onnx_tmp))
        return _save(converted, prep.metadata, xml)
    finally:
        onnx_tmp.unlink(missing_ok=True)


def export_openvino(
    model: nn.Module,
    preprocess: Preprocess,
    path: str | Path,
    *,
    input_uint8: bool = False,
    dynamic_batch: bool = True,
    precision: str = "fp32",
    classes: list[str] | None = None,
) -> Path:
    """``model`` → OpenVINO IR at ``path`` (``.xml``, with ``.bin`` beside it); ``precision`` fp32 | bf16."""
    prep = prepare(model, preprocess, classes=classes, input_uint8=input_uint8, precision=precision)
    return write_openvino(prep, Path(path), dynamic_batch)
