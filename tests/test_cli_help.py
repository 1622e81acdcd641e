"""Help that helps: every option of every command has a one-line help, and every `--help` runs
and shows the defaults and the subcommands."""

from __future__ import annotations

import argparse

import pytest

from cli_kit.command_line import HelpFormatter


def parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser, by its command line."""
    from prep.cli import build_parser as prep
    from scrape.cli import build_parser as scrape
    from train.cli import build_parser as train
    from train.export.cli import build_parser as export
    from train.report.cli import build_parser as report
    from train.tag.cli import build_parser as tag
    from train.tag.review.cli import build_parser as review
    top, subs = prep()
    found = {"scrape": scrape(), "prep": top, "train": train(), "train export": export(),
             "train report": report(), "tag": tag(), "tag review": review()}
    found.update({f"prep {name}": sub for name, sub in subs.items()})
    return found


def test_every_option_of_every_command_has_help():
    missing = []
    for command, parser in parsers().items():
        assert parser.formatter_class is HelpFormatter, command
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS or "\n" in action.help:
                missing.append(f"{command} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"options without a one-line help: {', '.join(missing)}"


def test_defaults_are_shown_once_and_none_is_not():
    text = parsers()["train"].format_help()
    assert "(default: 10)" in text and "(default: None)" not in text
    assert text.count("default: resnet50") == 1        # --arch, not its deprecated alias
    assert "(default: 8)" in parsers()["scrape"].format_help()


COMMANDS = [["scrape"], ["prep"], ["prep", "make-tag-index"], ["prep", "make-shards"],
            ["prep", "merge-shards"], ["train"], ["train", "export"], ["train", "report"],
            ["tag"], ["tag", "review"]]


def _main(command: str):
    """The function `python -m command` runs (test_project_layout runs `-m` itself)."""
    from prep.cli import main as prep
    from scrape.cli import main as scrape
    from train.entry import train_main
    from train.tag.cli import main as tag
    return {"scrape": scrape, "prep": prep, "train": train_main, "tag": tag}[command]


def test_every_help_runs_and_shows_defaults_and_subcommands(capsys):
    outputs = {}
    for command in COMMANDS:
        try:
            code = _main(command[0])([*command[1:], "--help"])
        except SystemExit as exit_:                 # argparse's exit, when not caught
            code = exit_.code
        out = capsys.readouterr().out
        assert code in (0, None), command
        assert "default" in out, command
        outputs[" ".join(command)] = out
    assert "train export" in outputs["train"] and "train report" in outputs["train"]
    assert "tag review" in outputs["tag"]
    for name in ("make-tag-index", "make-shards", "merge-shards"):
        assert name in outputs["prep"]


@pytest.mark.parametrize("command", ["train", "tag"])
def test_old_spellings_are_marked_deprecated_in_help(command):
    text = parsers()[command].format_help()
    assert "deprecated spelling of" in text
