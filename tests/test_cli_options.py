"""Command-line options are matched exactly: a prefix or typo is an error, never another option."""

from __future__ import annotations

import argparse

import pytest

from cnnlab.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every parser of the CLI (main, subcommands and their subcommands) with its command path."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def _matched_action(parser: argparse.ArgumentParser, arg: str) -> argparse.Action | None:
    """The action argparse would give ``arg`` to (its own matcher, without the required-argument checks)."""
    found = parser._parse_optional(arg)
    if isinstance(found, list):  # Python >= 3.12.7 returns the candidates as a list
        found = found[0] if len(found) == 1 else None
    return found[0] if found else None


def test_epoch_is_not_taken_as_epochs(capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's reproduction: ``--epoch 3`` trained for 3 epochs without a word."""
    with pytest.raises(SystemExit) as e:
        main(["train", "--epoch", "3", "--data", "/nonexistent/data"])  # if accepted: fails fast, trains nothing
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--epoch" in err and "did you mean --epochs?" in err and "Traceback" not in err


def test_no_parser_accepts_a_prefix_of_its_options() -> None:
    """Every long option of every (sub)command, shortened by one letter, is unrecognised."""
    checked = 0
    for path, parser in _parsers(build_parser()):
        assert parser.allow_abbrev is False, path
        options = {o for a in parser._actions for o in a.option_strings}
        for option in options:
            prefix = option[:-1]
            if not option.startswith("--") or len(prefix) < 3 or prefix in options:
                continue
            assert _matched_action(parser, prefix) is None, (path, prefix)
            checked += 1
    assert checked > 50
