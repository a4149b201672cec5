"""Code version, environment and the comparison `--from-run` prints (no Ray, no training)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from ssd_ray import provenance
from ssd_ray.config import config_from_dict, config_to_dict
from ssd_ray.train.reproduce import (PREFIX, code_tags, data_differences, describe_differences, parse_run_ref)

REPO = Path(__file__).resolve().parents[1]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.com")
    _git(repo, "config", "user.name", "t")
    (repo / "a.py").write_text("x = 1\n")
    (repo / ".gitignore").write_text("ignored/\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "one")
    return repo


def test_clean_checkout_has_commit_and_no_diff(tmp_path):
    repo = _repo(tmp_path)
    (repo / "ignored").mkdir()
    (repo / "ignored" / "big.bin").write_bytes(b"x" * 10)  # ignored files do not make it dirty
    cv = provenance.code_version(repo)
    assert cv.git_commit == _git(repo, "rev-parse", "HEAD").strip() and len(cv.git_commit) == 40
    assert cv.git_dirty is False and cv.diff is None
    assert cv.git_branch == _git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip()


def test_dirty_diff_applies_back_onto_the_commit(tmp_path):
    repo = _repo(tmp_path)
    (repo / "a.py").write_text("x = 2\n")
    (repo / "new.py").write_text("y = 3\n")  # untracked, not ignored
    (repo / "pkg").mkdir()
    (repo / "pkg" / "no_newline.txt").write_text("a\nb")
    (repo / "pkg" / "empty.txt").write_text("")
    (repo / "run.sh").write_text("#!/bin/sh\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "blob.bin").write_bytes(bytes(range(256)))  # binary: git writes its patch
    (repo / "with space.py").write_text("z = 4\n")  # a name git quotes
    cv = provenance.code_version(repo)
    assert cv.git_dirty is True and "x = 2" in cv.diff and "y = 3" in cv.diff
    # The patch recreates the working tree on a clean clone of the commit.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    (tmp_path / "code.diff").write_text(cv.diff)
    _git(clone, "apply", str(tmp_path / "code.diff"))
    for rel in ("a.py", "new.py", "pkg/no_newline.txt", "pkg/empty.txt", "run.sh", "blob.bin", "with space.py"):
        assert (clone / rel).read_bytes() == (repo / rel).read_bytes(), rel
    assert os.access(clone / "run.sh", os.X_OK)


def test_big_untracked_file_listed_not_included(tmp_path, monkeypatch):
    repo = _repo(tmp_path)
    monkeypatch.setattr(provenance, "UNTRACKED_FILE_LIMIT", 100)
    (repo / "data.bin").write_bytes(b"z" * 101)
    cv = provenance.code_version(repo)
    assert cv.git_dirty and "data.bin (101 bytes)" in cv.diff and "zzz" not in cv.diff


def test_not_a_checkout_gives_package_version_only(tmp_path):
    cv = provenance.code_version(tmp_path)  # a plain folder
    assert cv.git_commit is None and cv.git_dirty is None
    assert cv.package_version == importlib.metadata.version("ssd-ray")
    # A folder inside a repository is not the top of its checkout: not attributed to that repo.
    repo = _repo(tmp_path)
    (repo / "sub").mkdir()
    assert provenance.code_version(repo / "sub").git_commit is None


def test_this_checkout(tmp_path):
    if not (REPO / ".git").exists():
        pytest.skip("not running from a git checkout")
    cv = provenance.code_version()
    assert cv.git_commit == _git(REPO, "rev-parse", "HEAD").strip()
    assert cv.git_dirty == bool(_git(REPO, "status", "--porcelain").strip())
    tags = code_tags(cv)
    assert tags["mlflow.source.git.commit"] == cv.git_commit and tags[f"{PREFIX}code.git_dirty"] in ("true", "false")


def test_source_digest_follows_the_sources(tmp_path):
    pkg = Path(shutil.copytree(REPO / "ssd_ray", tmp_path / "ssd_ray", ignore=shutil.ignore_patterns("__pycache__")))
    before = provenance.source_digest({"ssd_ray": pkg})
    assert before == provenance.source_digest({"ssd_ray": pkg})
    assert before == provenance.source_digest({"ssd_ray": REPO / "ssd_ray"})  # path-independent
    (pkg / "boxes.py").write_text((pkg / "boxes.py").read_text() + "\n# edit\n")
    assert provenance.source_digest({"ssd_ray": pkg}) != before


def test_environment_and_packages():
    env = provenance.environment()
    assert env["torch"] == torch.__version__ and env["cuda"] == torch.version.cuda
    assert env["ray"] == importlib.metadata.version("ray") and env["ssd_ray"] == importlib.metadata.version("ssd-ray")
    packages = provenance.installed_packages()
    assert f"torch=={importlib.metadata.version('torch')}" in packages
    names = [p.split("==")[0].lower() for p in packages]
    assert names == sorted(names) and len(names) == len(set(names))


def test_seeds_and_cluster_shape_without_ray():
    raw = {"name": "s", "data": {"root": "/d", "synthetic": {"seed": 7}}, "train": {"seed": 3},
           "priors": {"feature_maps": [1], "steps": [300], "min_sizes": [30], "max_sizes": [60],
                      "aspect_ratios": [[2]]}}
    cfg = config_from_dict(raw)
    assert provenance.seeds(config_to_dict(cfg)) == {"data.synthetic.seed": 7, "train.seed": 3}
    shape = provenance.cluster_shape(cfg)
    assert shape["workers"] == 1 and shape["gpus_per_worker"] == 0 and shape["data_cpus"] == cfg.ray.data_cpus


def _tags(commit="a" * 40, digest="sha256:1", dirty="false", torch_v="2.0", train="sha256:t", val="sha256:v",
          objects="10"):
    return {f"{PREFIX}code.git_commit": commit, f"{PREFIX}code.source_digest": digest,
            f"{PREFIX}code.git_dirty": dirty, f"{PREFIX}env.torch": torch_v,
            f"{PREFIX}data.train.fingerprint": train, f"{PREFIX}data.train.images": "5",
            f"{PREFIX}data.train.objects": objects, f"{PREFIX}data.val.fingerprint": val}


def test_differences_name_what_changed():
    rec = _tags()
    assert describe_differences(rec, _tags()) == []
    diffs = describe_differences(rec, _tags(commit="b" * 40, digest="sha256:2", torch_v="2.1", train="sha256:x",
                                            objects="11"))
    assert diffs[0] == f"code: git commit {'a' * 40} recorded, {'b' * 40} now"  # one line for the code
    assert "environment: torch 2.0 recorded, 2.1 now" in diffs
    assert any(d.startswith("data: train fingerprint sha256:t recorded, sha256:x now (objects 10 -> 11") for d in diffs)
    assert not any("val" in d for d in diffs) and len(diffs) == 3
    # Same commit, other sources (uncommitted changes): said as such.
    same = describe_differences(rec, _tags(digest="sha256:2", dirty="true"))
    assert same == ["code: same commit but the ssd_ray/pipelines sources differ (uncommitted changes: "
                    "false recorded, true now)"]
    assert data_differences(rec, _tags(val="sha256:w")) == [
        "data: val fingerprint sha256:v recorded, sha256:w now (same counts: annotations changed)"]


@pytest.mark.parametrize("ref,run_id", [("0123abcd", "0123abcd"), ("runs:/0123abcd", "0123abcd"),
                                        ("runs:/0123abcd/model", "0123abcd"), (" runs:/0123abcd/ ", "0123abcd")])
def test_parse_run_ref(ref, run_id):
    assert parse_run_ref(ref) == run_id


@pytest.mark.parametrize("ref", ["", "runs:/", "models:/x/1", "a/b"])
def test_parse_run_ref_rejects(ref):
    with pytest.raises(ValueError, match="run id"):
        parse_run_ref(ref)


def test_dataclass_json():
    cv = provenance.code_version()
    assert json.loads(json.dumps(cv.to_dict()))["source_digest"].startswith("sha256:")
