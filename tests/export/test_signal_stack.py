"""OpenVINO models freed out of order must not leave the thread on an unmapped signal stack."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cnnlab.export import export_openvino, load_openvino
from cnnlab.export.signal_stack import current_signal_stack
from cnnlab.model_meta import Preprocess

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack is Linux's")

PRE = Preprocess((3, 16, 16), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 16)


def _tiny_xml(folder: Path) -> Path:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 2)).eval()
    return export_openvino(net, PRE, folder / "tiny.xml", input_uint8=True)


def test_loading_openvino_keeps_the_threads_signal_stack(tmp_path: Path) -> None:
    xml = _tiny_xml(tmp_path)
    before = current_signal_stack()
    runner = load_openvino(xml, threads=1)
    assert current_signal_stack() == before
    runner(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    del runner
    assert current_signal_stack() == before


def test_models_freed_oldest_first_then_a_signal_does_not_kill_the_process(tmp_path: Path) -> None:
    """The crash itself, in a child process (without the fix it dies of SIGSEGV at the SIGCHLD)."""
    xml = _tiny_xml(tmp_path)
    script = textwrap.dedent(f"""
        import faulthandler, gc, signal, subprocess, sys
        from cnnlab.export import load_openvino
        faulthandler.enable()  # pytest's own alternate stack, as in the suite
        older = load_openvino({str(xml)!r}, threads=1)
        younger = load_openvino({str(xml)!r}, threads=1)
        del older; gc.collect()
        del younger; gc.collect()
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a Python handler runs on the alternate stack
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        print("alive")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "alive", (done.returncode, done.stderr[-2000:])
