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


def test_every_train_flag_is_described_by_its_config_comment(capsys: pytest.CaptureFixture[str]) -> None:
    """`cnnlab train --help` printed only "(default: ...)" for the 64 config keys; each now carries the
    comment written beside its default in TrainConfig (a key added without one fails here)."""
    import dataclasses

    from cnnlab.config import TrainConfig, field_comments

    comments = field_comments()
    assert [f.name for f in dataclasses.fields(TrainConfig) if not comments.get(f.name)] == []
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--freeze FREEZE N: the first N stages of the model" in text
    assert "--head-lr-mult HEAD_LR_MULT the classifier's (and auxiliary heads') learning rate is lr x this (default: 1.0)" in text


def test_every_option_and_argument_of_every_command_has_help() -> None:
    missing = [
        (" ".join(path), action.option_strings[-1] if action.option_strings else action.dest)
        for path, parser in _parsers(build_parser())
        for action in parser._actions
        if not action.help and not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
    ]
    assert missing == []


def test_an_unknown_option_of_a_sub_command_points_to_that_sub_commands_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["darknet", "detector", "map", "a.data", "b.cfg", "c.weights", "--flavor", "alexeyab"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "unrecognized argument '--flavor alexeyab'" in err
    assert "cnnlab darknet detector map --help" in err and len(err.strip().splitlines()) == 1


def test_the_run_says_which_epoch_best_pt_holds_when_it_is_not_the_last() -> None:
    from cnnlab.commands.train import best_checkpoint_line

    assert best_checkpoint_line({"best_epoch": 20, "epochs": 20, "best": 98.8}) is None
    assert best_checkpoint_line({"best_epoch": -1, "epochs": 3, "best": 0.0}) is None
    line = best_checkpoint_line({"best_epoch": 17, "epochs": 20, "best": 98.9})
    assert line is not None and "epoch 17's (held-out 98.9, the best)" in line and "valid" in line
