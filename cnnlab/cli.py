"""The ``cnnlab`` command line: thin parsing; each command is one module in ``cnnlab.commands``.

A command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
User errors (:class:`CnnlabError`) print one line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import importlib
import sys
from typing import Any, NoReturn

from cnnlab.commands import COMMANDS
from cnnlab.errors import CnnlabError


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the problem, and where the valid choices are listed.

    Abbreviations are off (``allow_abbrev=False``) for the main parser and every subcommand: with
    them ``--epoch 3`` was silently taken as ``--epochs 3``, and adding an option could change what
    an old command line meant. A prefix is now an unknown option, reported with the closest name.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> Parser:
    from cnnlab import __version__

    parser = Parser(prog="cnnlab", description="Train, evaluate and export convolutional networks.")
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for module_name in COMMANDS:
        module = importlib.import_module(f"cnnlab.commands.{module_name}")
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _parser=p)
        if module.NAME in THREADED:
            _add_threads(p)
    return parser


THREADED = {"train", "valid", "predict", "darknet"}  # the commands that run a network get --threads


def _add_threads(p: argparse.ArgumentParser) -> None:
    """``--threads N`` on ``p`` and on each of its sub-commands (``darknet classifier predict``), unless it has one."""
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subs:
        for sub in set(action.choices.values()):
            _add_threads(sub)
    if not subs and "--threads" not in p._option_string_actions:
        p.add_argument("--threads", type=int, metavar="N", help="compute threads per process (default: every core, or OMP_NUM_THREADS; see README, Threads)")


def _unknown_options(parser: Parser, args: argparse.Namespace, extras: list[str]) -> NoReturn:
    """``--lerning-rate 0.1`` → one line naming it and the closest real option."""
    sub: Parser = _leaf_parser(getattr(args, "_parser", parser), args)
    options = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
    flag = next((e.split("=")[0] for e in extras if e.startswith("-")), extras[0])
    close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    sub.error(f"unrecognized argument {' '.join(extras)!r}{hint}")


def _leaf_parser(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost sub-command's parser (``cnnlab darknet detector map``), whose help lists its options."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction) and getattr(args, action.dest or "", None) in action.choices:
            return _leaf_parser(action.choices[getattr(args, action.dest)], args)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extras = parser.parse_known_args(argv)
    if extras:
        _unknown_options(parser, args, extras)
    args._argv = argv  # the command as given (cnnlab train --nproc passes it on to its workers)
    try:
        _threads(args)
        return int(args._run(args) or 0)
    except CnnlabError as e:
        _say(f"{_rank_prefix()}cnnlab {args.command}: error: {e}")
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        _say(f"cnnlab {args.command}: interrupted")
        return 130
    except OSError as e:
        if e.errno not in _WRITE_ERRNOS:
            raise
        # a file operation outside cnnlab.fileio's writers (a folder made, a log line appended): still one line
        where = f"{e.filename}: " if e.filename else ""
        _say(f"{_rank_prefix()}cnnlab {args.command}: error: {where}{e.strerror or e}")
        return 1


def _threads(args: argparse.Namespace) -> None:
    """Thread count and OpenMP wait policy, before the command imports torch (see :mod:`cnnlab.threads`)."""
    from cnnlab import threads

    flag = getattr(args, "threads", None)
    if flag is not None and flag < 1:
        raise CnnlabError(f"--threads {flag}: give at least 1")
    threads.apply(flag)


# Disk full, file too large, quota, read-only filesystem, no permission: the system's own words suffice.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _say(line: str) -> None:
    """One line to stderr in one write: the ranks of a distributed run share the terminal, and
    ``print`` writes the text and its newline separately when stderr is unbuffered (torchrun)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _rank_prefix() -> str:
    """``rank N: `` on the processes of a distributed run, so a failed rank names itself."""
    import os

    return f"rank {os.environ['RANK']}: " if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and "RANK" in os.environ else ""


if __name__ == "__main__":
    sys.exit(main())
