"""One meaning per name across the commands (README, "Names across commands"): a flag that two
commands share takes the same values in both."""

from __future__ import annotations

import argparse

import pytest

from prep.cli import build_parser as prep_parser
from train.cli import build_parser as train_parser
from train.tag.cli import build_parser as tag_parser


def choices(parser: argparse.ArgumentParser, flag: str) -> tuple:
    """The choices of ``flag`` in ``parser`` (its non-deprecated action)."""
    (action,) = [a for a in parser._actions if flag in a.option_strings]
    return tuple(action.choices)


def test_train_and_tag_offer_the_same_precisions():
    train, tag = choices(train_parser(), "--precision"), choices(tag_parser(), "--precision")
    assert train == tag == ("auto", "bf16", "fp16", "fp32")


@pytest.mark.parametrize("value", ["auto", "bf16", "fp16", "fp32"])
def test_each_precision_parses_in_train_and_tag(value):
    assert train_parser().parse_args(["--precision", value]).precision == value
    args = tag_parser().parse_args(["--model", "run/", "pics/", "--precision", value])
    assert args.precision == value


def test_tag_resizes_with_prep_make_shards_names():
    _, subs = prep_parser()
    assert choices(tag_parser(), "--resize-mode") == ("auto",
                                                      *choices(subs["make-shards"],
                                                               "--resize-mode"))
