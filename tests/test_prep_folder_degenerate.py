"""A folder nothing can be learnt from is named, never trained on: images with neither captions
nor class folders (make-shards refuses them), one class folder (train refuses the one-class
shards, naming the class)."""

from __future__ import annotations

from support.shard_builds import make_shards, write_images


def test_images_without_captions_or_class_folders(tmp_path, capsys):
    write_images(tmp_path / "in", 4)
    code, err = make_shards(capsys, "--folder", str(tmp_path / "in"), "--out",
                            str(tmp_path / "out"))
    assert code == 2 and err.count("\n") == 0
    assert "no caption files and no class folders" in err and ".txt" in err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_one_class_folder_is_named_and_not_trained_on(tmp_path, capsys):
    from train.cli import main as train_main
    write_images(tmp_path / "in" / "pics", 6)
    code, err = make_shards(capsys, "--folder", str(tmp_path / "in"), "--out",
                            str(tmp_path / "out"), "--val-fraction", "0.3")
    assert code == 0, err
    code = train_main(["--stream", "--shards", str(tmp_path / "out"), "--out",
                       str(tmp_path / "run"), "--arch", "resnet18", "--weights", "none",
                       "--image-size", "16", "--epochs", "1", "--workers", "0", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "1 class (pics)" in err
    assert not (tmp_path / "run").exists()


def test_two_class_folders_are_taken(tmp_path, capsys):
    write_images(tmp_path / "in" / "a", 3)
    write_images(tmp_path / "in" / "b", 3, seed=1)
    code, err = make_shards(capsys, "--folder", str(tmp_path / "in"), "--out",
                            str(tmp_path / "out"))
    assert code == 0, err
    assert (tmp_path / "out" / "manifest.json").exists()
