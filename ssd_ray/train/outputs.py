"""A run's `outputs/` folder wherever the run lives: on the local disk, or in a bucket.

The driver writes config, owner record, provenance, model file and curves with ordinary file calls,
and MLflow logs artifacts from local files. With `ray.storage_path` on a local (or mounted) disk,
`local` *is* `<run_dir>/outputs` and `push`/`pull` do nothing. With a bucket (`s3://bucket/runs`),
`local` is a temporary folder that mirrors `<run_dir>/outputs`: `pull` fetches what an earlier attempt
of the run left there (a resumed run keeps its owner record and provenance), `push` uploads what
changed since the last push, and `close` pushes and removes the folder. Files written by the train
workers (the best model) go straight to `uri(name)`, which every node reaches.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from .. import storage

log = logging.getLogger("ssd_ray.train")


class RunOutputs:
    def __init__(self, run_dir: str):
        self.run_dir = str(run_dir)
        self.remote = storage.join(self.run_dir, "outputs")
        self.mirrored = storage.is_uri(self.run_dir)
        if self.mirrored:
            # `<tmp>/outputs`, so that `local.parent` stands for the run folder as on a local disk.
            self._tmp = tempfile.mkdtemp(prefix="ssd_ray_outputs_")
            self.local = Path(self._tmp) / "outputs"
        else:
            self._tmp = None
            self.local = Path(self.run_dir) / "outputs"
        self.local.mkdir(parents=True, exist_ok=True)
        self._pushed: dict[str, tuple[int, int]] = {}  # relative name -> (size, mtime_ns) last uploaded

    def uri(self, name: str) -> str:
        """Where `outputs/<name>` lives for everyone (a bucket URI or the local path)."""
        return storage.join(self.remote, name) if self.mirrored else str(self.local / name)

    def _state(self) -> dict[str, tuple[int, int]]:
        return {p.relative_to(self.local).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
                for p in self.local.rglob("*") if p.is_file() and not p.name.endswith(".tmp")}

    def pull(self, max_bytes: int = 1 << 20) -> int:
        """Fetch the small files of the bucket's `outputs/` (a resumed run's owner record, provenance,
        config); model files stay in the bucket until `pull_file` asks for one. A file not fetched is
        never pushed back, so it stays as it is. Returns the number of files fetched."""
        if not self.mirrored:
            return 0
        try:
            entries = [e for e in storage.list_dir(self.remote, recursive=True) if not e.is_dir and e.size <= max_bytes]
        except FileNotFoundError:
            return 0
        for e in entries:
            storage.download(e.path, self.local / e.name)
        self._pushed = self._state()
        return len(entries)

    def pull_file(self, name: str) -> Path | None:
        """Fetch one file written into the bucket by a worker; its local path, or None if absent."""
        if not self.mirrored:
            return self.local / name if (self.local / name).is_file() else None
        if not storage.is_file(self.uri(name)):
            return None
        storage.download(self.uri(name), self.local / name)
        self._pushed[name] = (self.local / name).stat().st_size, (self.local / name).stat().st_mtime_ns
        return self.local / name

    def push(self) -> int:
        """Upload the files changed since the last push; returns how many. StorageError when refused."""
        if not self.mirrored:
            return 0
        state = self._state()
        changed = [name for name, sig in state.items() if self._pushed.get(name) != sig]
        for name in changed:
            storage.upload(self.local / name, self.uri(name))
        self._pushed.update({n: state[n] for n in changed})
        return len(changed)

    def close(self) -> None:
        """Push what is left and remove the local mirror (kept when the push fails: nothing is lost)."""
        if not self.mirrored:
            return
        self.push()
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None

    def discard(self) -> None:
        """Remove the local mirror without pushing (a failed run: what it wrote before training was pushed)."""
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
