"""Keep the calling thread's alternate signal stack across a call into OpenVINO.

OpenVINO's CPU plugin (2026.4) maps an alternate signal stack for the thread that compiles a model
and, when that model is freed, puts back the stack it found and unmaps its own. Two models freed in
the order they were made (the older first) leave the thread on the younger one's saved stack, which
the older one already unmapped. Python installs every signal handler with ``SA_ONSTACK``, so the next
signal the thread handles (a DataLoader worker's SIGCHLD, Ctrl-C) makes the kernel kill the process
with SIGSEGV instead. Putting our stack back right after the compile means no thread ever runs on
OpenVINO's stack, and the one it restores when freed is the one that was there before.

No library exposes ``sigaltstack``; this is the one call, through ctypes, on Linux only.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator


class _StackT(ctypes.Structure):  # <signal.h> stack_t
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def current_signal_stack() -> tuple[int, int, int] | None:
    """``(address, flags, size)`` of the calling thread's alternate signal stack; None off Linux."""
    libc = _libc()
    if libc is None:
        return None
    stack = _StackT()
    if libc.sigaltstack(None, ctypes.byref(stack)) != 0:
        return None
    return stack.ss_sp or 0, stack.ss_flags, stack.ss_size


@contextlib.contextmanager
def keep_signal_stack() -> Iterator[None]:
    """Run the body, then give the calling thread back the alternate signal stack it had before."""
    libc = _libc()
    before = _StackT()
    if libc is None or libc.sigaltstack(None, ctypes.byref(before)) != 0:
        yield
        return
    try:
        yield
    finally:
        # SS_ONSTACK is a state flag the call must not be given; a stack in use cannot be swapped anyway.
        before.ss_flags &= ~1
        libc.sigaltstack(ctypes.byref(before), None)
