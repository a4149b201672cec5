"""Files that are not ssd-ray checkpoints: one message saying what the file is, never torch's
`weights_only=False` advice, no traceback, exit 2 from every entry point that takes a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ssd_ray.checkpoint import load, load_model
from ssd_ray.errors import CheckpointError, CheckpointNotFoundError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    files = {
        "six_bytes": d / "model.pt",
        "empty": d / "empty.pt",
        "whole_model": d / "whole.pt",
        "state_dict": d / "state_dict.pt",
        "list": d / "list.pt",
        "jpeg": d / "photo.pt",
        "lfs": d / "lfs.pt",
    }
    files["six_bytes"].write_text("hello\n")
    files["empty"].write_bytes(b"")
    torch.save(nn.Linear(2, 2), files["whole_model"])  # pickled module: refused by weights_only=True
    torch.save(nn.Linear(2, 2).state_dict(), files["state_dict"])
    torch.save([1, 2, 3], files["list"])
    files["jpeg"].write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    files["lfs"].write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n")
    return files


@pytest.mark.parametrize("kind, says", [
    ("six_bytes", "(a 6-byte text file)"),
    ("empty", "(an empty file)"),
    ("whole_model", "PyTorch file holding pickled Python objects"),
    ("state_dict", "a bare state dict of 2 tensors"),
    ("list", "a PyTorch file holding a list"),
    ("jpeg", "104-byte JPEG image"),
    ("lfs", "Git LFS pointer"),
])
def test_load_model_says_what_the_file_is(bad_files, kind, says):
    path = bad_files[kind]
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    msg = str(e.value)
    assert msg.startswith(f"not an ssd-ray checkpoint or model file: {path} (")
    assert says in msg
    assert "weights_only=False" not in msg
    # torch's own error (and its advice) is not chained into the traceback
    assert e.value.__cause__ is None and (e.value.__context__ is None or e.value.__suppress_context__)


def test_missing_paths(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="not found: .*nope.pt"):
        load(tmp_path / "nope.pt")
    with pytest.raises(CheckpointNotFoundError, match="a folder without checkpoint.pt"):
        load(tmp_path)
    assert issubclass(CheckpointNotFoundError, FileNotFoundError)


def _assert_exit_2(capsys, fn, argv, path):
    with pytest.raises(SystemExit) as e:
        fn(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"not an ssd-ray checkpoint or model file: {path}" in err
    assert "Traceback" not in err and "weights_only=False" not in err
    return err


def test_entry_points_exit_2(bad_files, capsys, tmp_path):
    from pipelines.evaluate import main as evaluate_main
    from pipelines.export import main as export_main

    bad = bad_files["six_bytes"]
    err = _assert_exit_2(capsys, export_main, ["--checkpoint", str(bad), "--out", str(tmp_path / "m.onnx")], bad)
    assert err.strip() == f"checkpoint error: not an ssd-ray checkpoint or model file: {bad} (a 6-byte text file)"
    assert not (tmp_path / "m.onnx").exists()
    _assert_exit_2(capsys, evaluate_main, ["--config", str(REPO / "configs" / "shapes.yaml"), "--checkpoint",
                                           str(bad_files["whole_model"]), "--out", str(tmp_path / "ev")],
                   bad_files["whole_model"])
    assert not (tmp_path / "ev").exists()


def test_predict_exits_2(bad_files, capsys, tmp_path):
    import cv2
    import numpy as np

    from pipelines.predict import main as predict_main

    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    code = predict_main(["--checkpoint", str(bad_files["empty"]), "--images", str(tmp_path / "a.jpg"),
                         "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"not an ssd-ray checkpoint or model file: {bad_files['empty']} (an empty file)" in err
    assert "weights_only=False" not in err


def test_train_init_from_exits_2_before_writing(bad_files, capsys, tmp_path):
    from pipelines.train import main as train_main
    from test_voc import _add, _split

    data = tmp_path / "data"
    for n in ("a", "b"):
        _add(data, "2007", n, [("widget", 1, 1, 20, 20)], w=32, h=32)
    _split(data, "2007", "train", ["a", "b"])
    _split(data, "2007", "val", ["a"])
    cfg = tmp_path / "c.yaml"
    cfg.write_text((REPO / "configs" / "shapes.yaml").read_text().replace(
        "  synthetic: {train: 4000, val: 300, seed: 0, size: 256}\n", "  classes: [widget]\n"))
    runs = tmp_path / "runs"
    _assert_exit_2(capsys, train_main, ["--config", str(cfg), "--set", f"data.root={data}", "--set",
                                        f"ray.storage_path={runs}", "--init-from", str(bad_files["jpeg"])],
                   bad_files["jpeg"])
    assert not runs.exists()
