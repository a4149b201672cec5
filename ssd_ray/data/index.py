"""A compact index of a dataset's parsed annotations, so that a dataset in a bucket is parsed once.

Reading VOC07+12 from a bucket means one request per XML file (16k), and COCO means downloading a
450 MB JSON and parsing it: minutes at every start. The index is one Parquet file holding what the
reader produced -- per image its id, path (a URI), size, boxes, labels and difficult flags (every
`ImageRecord` field) -- with the class list, COCO category ids and the reader's skip counts in the
file's metadata. Loading it takes a fraction of a second for 40k images (docs/benchmarks.md).

Key: a SHA-256 over the index version, format, root, sets, reader options (classes, difficult,
empty images) and the *listing* of the source: the name, size and modification time of every
annotation file, split file and image file the reader looks at (listings cost one request per
1000 objects). Any object added, replaced or removed, or any other option, gives another key, so a
stale index is never used; an index whose key matches is reused. The log says which happened.

Where: `<ray.storage_path>/index/<key>.parquet` for training and evaluation (every run of a team
shares it), else a local cache folder (`$SSD_RAY_CACHE/index`, default `~/.cache/ssd-ray/index`).
Never inside `data.root`: that is the user's data, and often read-only. A missing, unreadable or
unwritable index is not an error: the data is read from the source, with a warning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from .. import storage
from .records import DetectionDataset, ImageRecord, SkipCounter

log = logging.getLogger(__name__)

INDEX_VERSION = 1  # bump when the reader's output or this file's layout changes: old indexes stop matching
_META_KEY = b"ssd_ray.index"


def default_index_dir() -> str:
    """The local cache folder for indexes: `$SSD_RAY_CACHE/index`, default `~/.cache/ssd-ray/index`."""
    return os.path.join(os.environ.get("SSD_RAY_CACHE") or os.path.expanduser("~/.cache/ssd-ray"), "index")


# ------------------------------------------------------------------------------------- the key
def _listing(folder: str, recursive: bool = False, names: set[str] | None = None) -> list[tuple[str, int, int]]:
    """(name, size, mtime) of the files in `folder` (those in `names` only, when given); [] when absent."""
    try:
        entries = storage.list_dir(folder, recursive=recursive)
    except FileNotFoundError:
        return []
    return [(e.name, e.size, e.mtime_ns) for e in entries if not e.is_dir and (names is None or e.name in names)]


def source_listing(root: str, fmt: str, sets: Sequence) -> dict:
    """What the reader of `sets` looks at, as listings: VOC: per year the split files, `Annotations/`
    and `JPEGImages/`; COCO: per split the annotation file and the image folder (recursive)."""
    out: dict[str, list] = {}
    if fmt == "voc":
        for year in sorted({str(y) for y, _ in sets}):
            base = storage.join(root, f"VOC{year}")
            splits = {f"{s}.txt" for y, s in sets if str(y) == year}
            out[f"VOC{year}/ImageSets/Main"] = _listing(storage.join(base, "ImageSets", "Main"), names=splits)
            out[f"VOC{year}/Annotations"] = _listing(storage.join(base, "Annotations"))
            out[f"VOC{year}/JPEGImages"] = _listing(storage.join(base, "JPEGImages"))
    else:
        from .coco import image_dir

        for split in sets:
            out[f"annotations/instances_{split}.json"] = _listing(
                storage.join(root, "annotations"), names={f"instances_{split}.json"})
            try:
                folder = image_dir(root, split)
            except FileNotFoundError:
                continue
            out[f"images of {split}"] = _listing(folder, recursive=True)
    return out


def index_key(root: str, fmt: str, sets: Sequence, options: dict) -> tuple[str, int]:
    """(hex key, number of files listed) of this source and reader options."""
    listing = source_listing(root, fmt, sets)
    h = hashlib.sha256()
    h.update(json.dumps({"version": INDEX_VERSION, "format": fmt, "root": root,
                         "sets": [list(s) if isinstance(s, (tuple, list)) else s for s in sets],
                         "options": options}, sort_keys=True, default=str).encode())
    for part in sorted(listing):
        h.update(part.encode())
        for name, size, mtime in listing[part]:
            h.update(f"\0{name}\0{size}\0{mtime}".encode())
    return h.hexdigest(), sum(len(v) for v in listing.values())


# ------------------------------------------------------------------------------ (de)serialising
def _array_fields(records: list[ImageRecord]) -> list[str]:
    first = records[0] if records else None
    return [f.name for f in dataclasses.fields(ImageRecord)
            if first is not None and isinstance(getattr(first, f.name), np.ndarray)]


def _jsonable_counter(c: Counter) -> list:
    return [[k, int(v)] for k, v in c.items()]


def to_parquet(ds: DetectionDataset, meta: dict) -> bytes:
    """The dataset as Parquet bytes: a row per record, list columns for its arrays (flattened; their
    trailing shape and dtype in the metadata), everything else of the dataset in the metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = ds.records
    arrays = _array_fields(recs)
    columns, shapes = {}, {}
    for f in dataclasses.fields(ImageRecord):
        values = [getattr(r, f.name) for r in recs]
        if f.name in arrays:
            flat = [np.ascontiguousarray(v).reshape(-1) for v in values]
            offsets = np.zeros(len(flat) + 1, np.int64)
            offsets[1:] = np.cumsum([len(v) for v in flat])
            dtype = values[0].dtype
            data = np.concatenate(flat) if flat else np.zeros(0, dtype)
            columns[f.name] = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(data))
            shapes[f.name] = {"shape": list(values[0].shape[1:]), "dtype": dtype.str}
        else:
            columns[f.name] = pa.array(values)
    skipped = ds.skipped
    extra = {f.name: getattr(ds, f.name) for f in dataclasses.fields(DetectionDataset)
             if f.name not in ("records", "skipped")}
    meta = {**meta, "arrays": shapes, "dataset": extra,
            "skipped": {"counts": _jsonable_counter(skipped), "examples": getattr(skipped, "examples", {}),
                        "keys": {r: _jsonable_counter(c) for r, c in getattr(skipped, "keys", {}).items()}}}
    table = pa.table(columns) if columns and recs else pa.table({})
    table = table.replace_schema_metadata({_META_KEY: json.dumps(meta, default=_json_default).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _json_default(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"not JSON: {type(v).__name__}")


def _tuples(v):
    """JSON turned the dataset's tuples (COCO sources) into lists: back to tuples, one level down."""
    if isinstance(v, list) and v and all(isinstance(x, list) for x in v):
        return [tuple(x) for x in v]
    return v


def from_parquet(data: bytes) -> tuple[DetectionDataset, dict]:
    """(dataset, metadata) of `to_parquet`'s bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(data))
    meta = json.loads(table.schema.metadata[_META_KEY])
    n = table.num_rows
    cols = {}
    for f in dataclasses.fields(ImageRecord):
        if n == 0:
            break
        col = table.column(f.name).combine_chunks()
        if f.name in meta["arrays"]:
            spec = meta["arrays"][f.name]
            # A writable copy (Arrow's buffers are read-only), cut into per-record views in one call.
            values = col.values.to_numpy(zero_copy_only=False).astype(np.dtype(spec["dtype"]), copy=True)
            per_row = int(np.prod(spec["shape"])) if spec["shape"] else 1
            offsets = col.offsets.to_numpy()[1:-1] // per_row
            cols[f.name] = np.split(values.reshape(-1, *spec["shape"]), offsets)
        else:
            cols[f.name] = col.to_pylist()
    names = [f.name for f in dataclasses.fields(ImageRecord)]
    # The arrays were validated by ImageRecord when the index was written and come back with their
    # dtypes and shapes: the records are rebuilt without __post_init__ (3x faster for 40k images).
    records = []
    for values in zip(*(cols[k] for k in names)) if n else ():
        rec = object.__new__(ImageRecord)
        rec.__dict__.update(zip(names, values))
        records.append(rec)
    sk = meta["skipped"]
    skipped = SkipCounter({k: v for k, v in sk["counts"]})
    skipped.examples = {r: list(ex) for r, ex in sk["examples"].items()}
    skipped.keys = {r: Counter({k: v for k, v in pairs}) for r, pairs in sk["keys"].items()}
    extra = {k: _tuples(v) for k, v in meta["dataset"].items()}
    return DetectionDataset(records=records, skipped=skipped, **extra), meta


# --------------------------------------------------------------------------------- reuse or build
def load_or_build(root: str, fmt: str, sets: Sequence, options: dict, read: Callable[[], DetectionDataset],
                  index_dir: str | None = None, what: str = "") -> DetectionDataset:
    """The dataset `read()` returns, from the index when one matches this source and `options`, else
    read now and indexed for next time (under `index_dir`, default `default_index_dir()`)."""
    t0 = time.perf_counter()
    index_dir = index_dir or default_index_dir()
    key, files = index_key(root, fmt, sets, options)
    uri = storage.join(index_dir, f"{fmt}-{key[:32]}.parquet")
    listed_s = time.perf_counter() - t0
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        data = None
    except OSError as e:
        log.warning("data index %s could not be read (%s); reading the data from %s", uri, e, root)
        data = None
    if data is not None:
        try:
            ds, meta = from_parquet(data)
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file: rebuild it
            log.warning("data index %s is unreadable (%s); rebuilding it", uri, e)
        else:
            if meta.get("key") == key:
                log.info("data index reused for %s: %s (%d images, built %s; %d files listed in %.1f s, "
                         "loaded in %.1f s)%s", what or root, uri, len(ds), meta.get("built_at", "?"), files,
                         listed_s, time.perf_counter() - t0 - listed_s,
                         f"; the reader skipped {ds.skipped.summary()}" if ds.skipped else "")
                return ds
    t1 = time.perf_counter()
    ds = read()
    meta = {"version": INDEX_VERSION, "key": key, "format": fmt, "root": root, "options": options,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files_listed": files}
    try:
        storage.write_bytes(uri, to_parquet(ds, meta))
    except OSError as e:
        log.warning("data index for %s not written to %s (%s); the next start reads the data again",
                    what or root, uri, e)
    else:
        log.info("data index built for %s: %s (%d images; read in %.1f s, %d files listed in %.1f s)",
                 what or root, uri, len(ds), time.perf_counter() - t1, files, listed_s)
    return ds
