"""What produced a run, besides its config and data: code version, environment, cluster shape, seeds.

Gathered on the driver (the process that creates the MLflow run); each function is cheap (a few git
calls, package metadata) and needs no network. `ssd_ray.train.reproduce` logs these into MLflow and
compares them when a run is re-run with `--from-run`.

- `code_version()`: the installed ssd-ray version, a digest of its Python sources (`ssd_ray/`,
  `pipelines/`: comparable with or without git), and when ssd-ray runs from a git checkout the commit,
  branch, a dirty flag and the uncommitted changes as a patch (`git diff HEAD` plus untracked files).
- `environment()`: Python, platform, torch (+ CUDA, cuDNN), torchvision, Ray, MLflow, numpy, ssd-ray.
- `installed_packages()`: every installed distribution as `name==version` (pip freeze's format).
- `cluster_shape(cfg)`: nodes, CPUs, GPUs and accelerators Ray sees, and the run's worker layout.
- `seeds(config_dict)`: every `seed` key of the resolved config.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import platform
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

UNTRACKED_FILE_LIMIT = 1 << 20  # untracked files larger than this are listed in the patch, not included
_GIT_TIMEOUT_S = 30


@dataclass
class CodeVersion:
    package_version: str  # ssd-ray's installed version
    source_digest: str  # "sha256:…" over ssd_ray/**/*.py and pipelines/**/*.py (paths and bytes)
    git_commit: str | None = None  # None: not running from a git checkout
    git_branch: str | None = None
    git_dirty: bool | None = None  # uncommitted changes or untracked (not ignored) files
    diff: str | None = field(default=None, repr=False)  # the patch when dirty

    def to_dict(self, with_diff: bool = False) -> dict:
        d = asdict(self)
        if not with_diff:
            d.pop("diff")
        return d

    def describe(self) -> str:
        if self.git_commit:
            return f"{self.git_commit[:12]}{' (dirty)' if self.git_dirty else ''}"
        return f"ssd-ray {self.package_version} (sources {self.source_digest.split(':')[-1][:12]})"


def package_roots() -> dict[str, Path]:
    """The folders of the `ssd_ray` and `pipelines` packages this process imports."""
    roots = {"ssd_ray": Path(__file__).resolve().parent}
    spec = importlib.util.find_spec("pipelines")
    if spec and spec.submodule_search_locations:
        roots["pipelines"] = Path(next(iter(spec.submodule_search_locations))).resolve()
    return roots


def source_digest(roots: dict[str, Path] | None = None) -> str:
    """sha256 over the sorted (package-relative path, bytes) of every .py file of the packages."""
    h = hashlib.sha256()
    for name, root in sorted((roots or package_roots()).items()):
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            rel = f"{name}/{path.relative_to(root).as_posix()}".encode()
            data = path.read_bytes()
            h.update(len(rel).to_bytes(8, "little") + rel + len(data).to_bytes(8, "little") + data)
    return f"sha256:{h.hexdigest()}"


def package_version() -> str:
    try:
        return importlib.metadata.version("ssd-ray")
    except importlib.metadata.PackageNotFoundError:  # running from a checkout that was never installed
        from . import __version__

        return __version__


def _git(repo: Path, *args: str, ok_codes: tuple[int, ...] = (0,)) -> str | None:
    try:
        p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=_GIT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):  # no git on this machine, or a hung filesystem
        return None
    if p.returncode not in ok_codes:
        return None
    return p.stdout.decode("utf-8", errors="replace")


_PLAIN_NAME = re.compile(r"^[A-Za-z0-9._/+-]+$")  # names git writes unquoted in patch headers


def _new_file_patch(rel: str, data: bytes, executable: bool) -> str | None:
    """A git patch creating `rel` with `data` (UTF-8 text only), written here rather than by one
    `git diff --no-index` process per file (a checkout can have dozens of untracked files)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.splitlines(keepends=True)
    out = [f"diff --git a/{rel} b/{rel}\n", f"new file mode {'100755' if executable else '100644'}\n"]
    if lines:
        out += ["--- /dev/null\n", f"+++ b/{rel}\n", f"@@ -0,0 +1,{len(lines)} @@\n"]
        out += [f"+{line}" for line in lines]
        if not lines[-1].endswith("\n"):
            out.append("\n\\ No newline at end of file\n")
    return "".join(out)


def _untracked_patch(repo: Path, files: list[str]) -> str:
    """New-file patches for untracked files (`git apply` recreates them); big ones are only listed."""
    chunks, too_big = [], []
    for rel in files:
        path = repo / rel
        try:
            size = path.stat().st_size
            if size > UNTRACKED_FILE_LIMIT:
                too_big.append(f"{rel} ({size} bytes)")
                continue
            patch = _new_file_patch(rel, path.read_bytes(), os.access(path, os.X_OK)) \
                if _PLAIN_NAME.match(rel) else None
        except OSError:  # deleted since `git status` listed it
            continue
        if patch is None:  # binary, or a name git would quote: git writes that patch itself
            # --no-index exits 1 when the files differ, which they always do here.
            patch = _git(repo, "diff", "--no-index", "--binary", "--", os.devnull, rel, ok_codes=(0, 1))
        if patch:
            chunks.append(patch)
    if too_big:
        chunks.append("# untracked files not included (larger than "
                      f"{UNTRACKED_FILE_LIMIT} bytes):\n" + "".join(f"#   {f}\n" for f in too_big))
    return "".join(chunks)


def code_version(repo: Path | None = None) -> CodeVersion:
    """ssd-ray's version; with git, the commit of the checkout ssd-ray is imported from.

    `repo` defaults to the folder above the `ssd_ray` package; it counts as a checkout only when it
    is the top level of a git work tree (an installed copy inside some other repository is not).
    """
    cv = CodeVersion(package_version=package_version(), source_digest=source_digest())
    repo = (repo or Path(__file__).resolve().parents[1]).resolve()
    top = _git(repo, "rev-parse", "--show-toplevel")
    if top is None or Path(top.strip()).resolve() != repo:
        return cv
    commit = _git(repo, "rev-parse", "HEAD")
    if commit is None:  # a repository without commits
        return cv
    cv.git_commit = commit.strip()
    branch = (_git(repo, "rev-parse", "--abbrev-ref", "HEAD") or "").strip()
    cv.git_branch = branch if branch and branch != "HEAD" else None
    status = _git(repo, "status", "--porcelain", "-z", "--untracked-files=all") or ""
    entries = [e for e in status.split("\0") if e]
    cv.git_dirty = bool(entries)
    if cv.git_dirty:
        tracked = _git(repo, "diff", "HEAD", "--binary") or ""
        untracked = [e[3:] for e in entries if e.startswith("?? ")]
        cv.diff = tracked + _untracked_patch(repo, untracked)
    return cv


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, str | None]:
    """Versions that decide whether a run can be repeated (imports torch; the rest is metadata)."""
    import torch

    cudnn = None
    try:
        if torch.backends.cudnn.is_available():
            cudnn = str(torch.backends.cudnn.version())
    except Exception:  # noqa: BLE001 - a broken CUDA install must not stop a CPU run
        cudnn = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "torchvision": _version("torchvision"),
        "ray": _version("ray"),
        "mlflow": _version("mlflow"),
        "numpy": _version("numpy"),
        "ssd_ray": package_version(),
    }


def installed_packages() -> list[str]:
    """`name==version` of every installed distribution, sorted by name (pip freeze's format)."""
    seen: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() not in seen:
            seen[name.lower()] = f"{name}=={dist.version}"
    return [seen[k] for k in sorted(seen)]


def cluster_shape(cfg) -> dict:
    """The run's worker layout (from the config) and, when Ray is up, what the cluster holds."""
    r = cfg.ray
    workers = list(r.num_workers) if isinstance(r.num_workers, (list, tuple)) else r.num_workers  # [min, max]: elastic
    shape = {"workers": workers, "use_gpu": r.use_gpu, "gpus_per_worker": 1 if r.use_gpu else 0,
             "cpus_per_worker": r.cpus_per_worker, "data_cpus": r.data_cpus,
             "data_concurrency": r.data_concurrency}
    try:
        import ray

        if ray.is_initialized():
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            total = ray.cluster_resources()
            accel = sorted({k.removeprefix("accelerator_type:") for n in nodes for k in n.get("Resources", {})
                            if k.startswith("accelerator_type:")})
            shape.update({"nodes": len(nodes), "cluster_cpus": total.get("CPU", 0.0),
                          "cluster_gpus": total.get("GPU", 0.0), "accelerators": accel})
    except Exception as e:  # noqa: BLE001 - the shape is information, never a reason to fail a run
        log.warning("could not read the Ray cluster's shape: %s", e)
    return shape


def seeds(config: dict, prefix: str = "") -> dict[str, int]:
    """Every `seed` value in a (resolved) config dict, by dotted key: {"train.seed": 0, ...}."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(seeds(v, f"{prefix}{k}."))
        elif k == "seed" and v is not None:
            out[f"{prefix}{k}"] = v
    return out
