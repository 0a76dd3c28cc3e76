"""An exporter that cannot translate a model: one line naming the operation, not its traceback."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from cnnlab.errors import CnnlabError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch's ONNX exporter colours its messages


class ExportFailed(CnnlabError):
    """The exporter (torch.onnx, OpenVINO's converter, torch.jit) gave up on the model; callers add the fix
    that fits them (another --format, --backend torch)."""


@contextmanager
def translating(fmt: str, model: str) -> Iterator[None]:
    """Turn an exporter's exception inside the block into an :class:`ExportFailed`."""
    try:
        yield
    except CnnlabError:
        raise
    except Exception as e:
        raise ExportFailed(f"the {fmt} exporter could not translate {model}: {reason(e)}") from e


def reason(e: BaseException) -> str:
    """The first line of the innermost cause (the operation the exporter lacks, usually)."""
    while e.__cause__ is not None:
        e = e.__cause__
    lines = [ln.strip() for ln in _ANSI.sub("", str(e)).splitlines() if ln.strip() and not ln.startswith("-")]
    first = lines[0] if lines else type(e).__name__
    return first if len(first) <= 240 else first[:237] + "..."
