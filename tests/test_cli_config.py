"""One way to read settings: `--config FILE.toml` in scrape, prep, train and tag.

The file's values become the parser's defaults, so any flag given, abbreviated or not, wins;
each value is checked by the flag's own action, and a wrong one is a one-line error, exit 2.
Also the deprecated spellings (train --model, train export/report --run, tag --resize);
`--workers` is in test_workers.py.
"""

from __future__ import annotations

import argparse

import pytest
from support.shard_builds import write_images

from cli_kit.command_line import run_main


def parsed(name: str, argv: list[str]) -> argparse.Namespace:
    """The namespace `name`'s main() hands to its handler (config applied, flags parsed)."""
    from prep.cli import build_parser as prep_parser
    from scrape.cli import build_parser as scrape_parser
    from train.cli import build_parser as train_parser
    from train.tag.cli import build_parser as tag_parser
    got = []
    parser = {"scrape": scrape_parser, "train": train_parser, "tag": tag_parser}
    if name == "prep":
        parser, subs = prep_parser()
    else:
        parser, subs = parser[name](), None
    code = run_main(name, parser, argv, lambda args: got.append(args) or 0, subparsers=subs)
    assert code == 0
    return got[0]


def toml(tmp_path, text: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return str(path)


def test_scrape_file_values_and_an_abbreviated_flag_that_wins(tmp_path):
    from scrape.cli import settings_from
    config = toml(tmp_path, f'site = "danbooru"\ntags = "hami"\nout = "{tmp_path}"\n'
                  'concurrency = 2\nretry-failed = true\nratings = ["general", "sensitive"]\n')
    settings = settings_from(parsed("scrape", ["--config", config]))
    assert (settings.site, settings.tags, settings.concurrency) == ("danbooru", "hami", 2)
    assert settings.retry_failed is True and settings.ratings == ["general", "sensitive"]
    assert settings_from(parsed("scrape", ["--config", config, "--conc", "4"])).concurrency == 4


def test_train_file_values_and_an_abbreviated_flag_that_wins(tmp_path):
    from train.cli import settings_from
    config = toml(tmp_path, 'shards = "s/"\nout = "r/"\nepochs = 3\narch = "vgg16"\n'
                  'crop-scale = [0.5, 1.0]\nfreeze_backbone = true\nlr = 1\n')
    settings = settings_from(parsed("train", ["--config", config]))
    assert (settings.epochs, settings.model, settings.crop_scale) == (3, "vgg16", (0.5, 1.0))
    assert settings.freeze_backbone is True and settings.lr == 1.0
    assert settings.batch_size == 64                        # untouched: TrainSettings' default
    settings = settings_from(parsed("train", ["--config", config, "--epochs=1", "--arc",
                                              "resnet18"]))
    assert (settings.epochs, settings.model) == (1, "resnet18")


def test_prep_file_values_and_an_abbreviated_flag_that_wins(tmp_path):
    config = toml(tmp_path, 'posts = "raw/"\nout = "tags.csv"\ntop-k = 3\n'
                  'categories = ["general", "character"]\n')
    args = parsed("prep", ["make-tag-index", "--config", config])
    assert (args.posts, args.top_k, args.categories) == (["raw/"], 3, "general,character")
    assert parsed("prep", ["make-tag-index", "--config", config, "--top", "7"]).top_k == 7


def test_prep_make_shards_end_to_end_with_an_abbreviation_over_the_file(tmp_path, capsys):
    import json

    from prep.cli import main
    write_images(tmp_path / "in" / "a", 2)
    config = toml(tmp_path, f'folder = "{tmp_path / "in"}"\nimage-size = 32\nworkers = 0\n')
    assert main(["make-shards", "--config", config, "--out", str(tmp_path / "out"),
                 "--image-s", "24", "-q"]) == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["image"]["size"] == 24


def test_tag_reads_a_config_file_too(tmp_path):
    config = toml(tmp_path, 'model = "run/"\nbatch-size = 8\nresize-mode = "keep_ratio"\n')
    args = parsed("tag", ["--config", config, "pics/", "--batch", "4"])
    assert (args.model, args.batch_size, args.resize_mode) == ("run/", 4, "keep_ratio")


BAD = [
    ("epochs = \"three\"\n", "epochs: invalid int value 'three'"),
    ("epochs = 2.5\n", "epochs: invalid int value 2.5"),
    ("epochs = true\n", "epochs: invalid value True"),
    ("colour = \"blue\"\n", "colour: unknown option"),
    ("head = \"huge\"\n", "head: invalid choice 'huge' (choose from linear, mlp)"),
    ("freeze-backbone = \"yes\"\n", "freeze-backbone: must be true or false, not 'yes'"),
    ("crop_scale = [0.5]\n", "crop_scale: expected a list of 2 values"),
    ("epochs = [\n", "cannot read --config"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_train_bad_config_is_one_line_and_exit_2(tmp_path, capsys, text, message):
    from train.cli import main
    config = toml(tmp_path, text)
    assert main(["--config", config, "--shards", "s", "--out", "r"]) == 2
    err = capsys.readouterr().err
    head = "train: error: " if "cannot read" in message else f"train: error: {config}: "
    assert err.startswith(head + message) and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(("command", "argv", "text", "message"), [
    ("scrape", [], 'limit = 2.5\n', "limit: invalid int value 2.5"),
    ("scrape", [], 'variant = "huge"\n', "variant: invalid choice 'huge'"),
    ("scrape", [], 'colour = 1\n', "colour: unknown option"),
    ("prep", ["make-shards", "--out", "o"], 'image-size = "big"\n',
     "image-size: expected an integer, got 'big'"),
    ("prep", ["make-shards", "--out", "o"], 'resize-mode = "stretch"\n',
     "resize-mode: invalid choice 'stretch'"),
    ("prep", ["merge-shards", "--out", "o"], 'parts = "a"\nmove = 1\n',
     "move: must be true or false, not 1"),
    ("tag", ["pics/"], 'batch-size = "x"\n', "batch-size: invalid int value 'x'"),
])
def test_bad_config_in_every_command(tmp_path, capsys, command, argv, text, message):
    from prep.cli import main as prep_main
    from scrape.cli import main as scrape_main
    from train.tag.cli import main as tag_main
    main = {"scrape": scrape_main, "prep": prep_main, "tag": tag_main}[command]
    config = toml(tmp_path, text)
    assert main([*argv, "--config", config]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{command}: error: {config}: {message}"), err
    assert len(err.strip().splitlines()) == 1


def test_deprecated_spellings_still_work_with_a_warning(tmp_path, capsys):
    args = parsed("train", ["--shards", "s", "--out", "r", "--model", "vgg16"])
    assert args.model == "vgg16"
    assert "train: warning: --model is deprecated; use --arch" in capsys.readouterr().err
    args = parsed("tag", ["--model", "run/", "pics/", "--resize", "stretch"])
    assert args.resize_mode == "keep_ratio"
    assert "--resize is deprecated; use --resize-mode" in capsys.readouterr().err
    from train.export.cli import build_parser as export_parser
    from train.report.cli import build_parser as report_parser
    for build in (export_parser, report_parser):
        assert str(build().parse_args(["--run", "run/"]).model) == "run"
        assert "--run is deprecated; use --model" in capsys.readouterr().err
        assert str(build().parse_args(["--model", "run/"]).model) == "run"
        assert capsys.readouterr().err == ""
