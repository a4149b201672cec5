"""Where predictions go, written as they arrive; which images a previous run already wrote (resume).

Formats, in the output folder DST (rows: `ssd_ray.inference.results`):
- `jsonl`: `predictions.jsonl`, one JSON row per image, appended and flushed per batch;
- `parquet`: `predictions/part-NNNNN.parquet`, one file per `ROWS_PER_PART` rows, each written to a
  temporary name and renamed when complete (`pyarrow.parquet.read_table(DST/predictions)` reads all);
- `per-image`: `<key>.json` per image plus the drawn copy `<key>.jpg` (`.png` for PNG inputs), with
  keys relative to the source folder (`sub/a` for `SRC/sub/a.jpg`); each file written atomically.
Beside them: `skipped.jsonl` (this run's unreadable images: `{"image", "reason"}`, rewritten each
run, since a re-run tries them again) and `runs.jsonl` (one summary line appended per run).

Resume: an image counts as done when its row is in `predictions.jsonl` / a complete part file, or
its `<key>.json` exists; `overwrite=True` starts over (replacing this format's earlier results).
A half-written last line of `predictions.jsonl` (a run killed mid-write) is cut off on resume.
"""

from __future__ import annotations

import abc

import glob
import json
import logging
import os
from pathlib import Path

from .results import ImageResult, arrow_table, json_row

log = logging.getLogger("ssd_ray.predict")

FORMATS = ("per-image", "jsonl", "parquet")
PREDICTIONS_JSONL = "predictions.jsonl"
PARQUET_DIR = "predictions"
SKIPPED_REPORT = "skipped.jsonl"
RUNS_LOG = "runs.jsonl"
ROWS_PER_PART = 4096  # Parquet rows per file: what a killed run can lose, and a file count of N / 4096


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class Sink(abc.ABC):
    """Base: `done_mask(listing)` before the run, `write(results)` per batch, `close()` at the end."""

    draws = False  # whether `write` wants `ImageResult.drawn`

    def __init__(self, out_dir: str | os.PathLike, overwrite: bool = False):
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.overwrite = overwrite
        self.written = 0

    @abc.abstractmethod
    def done_mask(self, listing) -> list[bool]:
        """Per listed image: True when its result is already written (skipped unless overwrite)."""

    @abc.abstractmethod
    def write(self, results: list[ImageResult]) -> None:
        """Write one batch of results as they arrive."""

    def close(self) -> None:
        pass


class JsonlSink(Sink):
    def __init__(self, out_dir, overwrite=False):
        super().__init__(out_dir, overwrite)
        self.path = self.out / PREDICTIONS_JSONL
        self._done: set[str] = set() if overwrite else self._read_done()
        self._file = open(self.path, "w" if overwrite else "a", encoding="utf-8")

    def _read_done(self) -> set[str]:
        if not self.path.exists():
            return set()
        with open(self.path, "rb") as f:
            lines = f.readlines()
        done, good_bytes = set(), 0
        for n, line in enumerate(lines, 1):
            try:
                image = json.loads(line)["image"] if line.endswith(b"\n") else None
            except (ValueError, KeyError, TypeError):
                image = None
            if image is None:
                if n < len(lines):  # not our doing: appends can only cut the last line short
                    raise ValueError(f"{self.path} line {n} is not a prediction row; fix it or use --overwrite")
                log.warning("%s: dropping a half-written last row (a run stopped mid-write)", self.path)
                with open(self.path, "r+b") as f:
                    f.truncate(good_bytes)
                break
            done.add(image)
            good_bytes += len(line)
        return done

    def done_mask(self, listing) -> list[bool]:
        return [p in self._done for p in listing.paths]

    def write(self, results):
        if results:
            self._file.write("".join(json.dumps(json_row(r)) + "\n" for r in results))
            self._file.flush()
            self.written += len(results)

    def close(self):
        self._file.close()


class ParquetSink(Sink):
    def __init__(self, out_dir, overwrite=False, rows_per_part: int = ROWS_PER_PART):
        super().__init__(out_dir, overwrite)
        self.dir = self.out / PARQUET_DIR
        self.dir.mkdir(exist_ok=True)
        self.rows_per_part = int(rows_per_part)
        for tmp in glob.glob(str(self.dir / "part-*.parquet.tmp")):  # a killed run's unfinished part
            os.remove(tmp)
        parts = sorted(glob.glob(str(self.dir / "part-*.parquet")))
        if overwrite:
            for p in parts:
                os.remove(p)
            parts = []
        self._next = 1 + max((int(Path(p).name[5:10]) for p in parts), default=-1)
        self._done = set() if overwrite else self._read_done(parts)
        self._buffer: list[ImageResult] = []

    @staticmethod
    def _read_done(parts) -> set[str]:
        import pyarrow.parquet as pq

        done: set[str] = set()
        for p in parts:
            done.update(pq.read_table(p, columns=["image"])["image"].to_pylist())
        return done

    def done_mask(self, listing) -> list[bool]:
        return [p in self._done for p in listing.paths]

    def write(self, results):
        self._buffer.extend(results)
        while len(self._buffer) >= self.rows_per_part:
            self._flush(self.rows_per_part)

    def _flush(self, rows: int) -> None:
        import pyarrow.parquet as pq

        part, self._buffer = self._buffer[:rows], self._buffer[rows:]
        if not part:
            return
        path = self.dir / f"part-{self._next:05d}.parquet"
        pq.write_table(arrow_table(part), str(path) + ".tmp")
        os.replace(str(path) + ".tmp", path)
        self._next += 1
        self.written += len(part)

    def close(self):
        self._flush(len(self._buffer))


class PerImageSink(Sink):
    def __init__(self, out_dir, overwrite=False, draw: bool = True):
        super().__init__(out_dir, overwrite)
        self.draws = bool(draw)

    def done_mask(self, listing) -> list[bool]:
        if self.overwrite:
            return [False] * len(listing)
        return [(self.out / f"{k}.json").exists() for k in listing.keys]

    def write(self, results):
        from .draw import drawn_suffix

        for r in results:
            json_path = self.out / f"{r.key}.json"
            json_path.parent.mkdir(parents=True, exist_ok=True)
            if self.draws and r.drawn:  # the drawing first: a JSON file means the image is complete
                _write_atomic(self.out / f"{r.key}{drawn_suffix(r.path)}", r.drawn)
            _write_atomic(json_path, json.dumps(json_row(r), indent=1).encode())
            self.written += 1


def make_sink(fmt: str, out_dir, overwrite: bool = False, draw: bool = True) -> Sink:
    """The sink of `fmt` (one of FORMATS); `draw` applies to per-image output only."""
    if fmt == "jsonl":
        return JsonlSink(out_dir, overwrite)
    if fmt == "parquet":
        return ParquetSink(out_dir, overwrite)
    if fmt == "per-image":
        return PerImageSink(out_dir, overwrite, draw)
    raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")


def check_out_dir(out_dir, listing, recursive: bool, draws: bool) -> None:
    """ValueError when drawn copies would land among the source images: they could replace an original
    (`a.jpg` drawn over `a.jpg`) or be listed as inputs by the next run."""
    if not draws or listing.in_bucket:  # drawings go to a local folder: never among a bucket's objects
        return
    out, root = os.path.abspath(out_dir), os.path.abspath(listing.root)
    inside = out == root or (recursive and out.startswith(root.rstrip(os.sep) + os.sep))
    if inside:
        raise ValueError(f"--out {out_dir} is {'inside ' if out != root else ''}the source folder {listing.root}: "
                         f"drawn copies would mix with (or replace) the images; choose another --out, "
                         f"--no-draw or --format jsonl/parquet")


class SkippedReport:
    """`skipped.jsonl`: one `{"image", "reason"}` line per unreadable image of this run, flushed as found."""

    def __init__(self, out_dir):
        self.path = Path(out_dir) / SKIPPED_REPORT
        self._file = open(self.path, "w", encoding="utf-8")
        self.count = 0

    def add(self, path: str, reason: str) -> None:
        log.warning("skipped unreadable image %s: %s", path, reason)
        self._file.write(json.dumps({"image": path, "reason": reason}) + "\n")
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        self._file.close()


def append_run_summary(out_dir, summary: dict) -> None:
    with open(Path(out_dir) / RUNS_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(summary) + "\n")
