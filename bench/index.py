"""Annotation index of bucket datasets (ssd_ray/data/index.py): build time and reuse time.

For each size, a synthetic VOC-format dataset (N annotation XMLs with 1-5 objects of 20 classes,
N placeholder image files: the XML states the size, so no image is opened) is read three ways through
the same code (`ssd_ray.storage`):
  * read:   `read_voc` straight from the source, as every start would without an index,
  * build:  `load_or_build` with an empty index folder (list, read, write the Parquet index),
  * reuse:  `load_or_build` again (list the source, find the key, load the index).
Stores: the local disk, and a local S3 server (moto in its own process on 127.0.0.1, `--s3-sizes`):
per-object latency there is this server's CPU, not a network's, so the S3 figures are informational.

Run: `python bench/index.py [--sizes 4000,40000] [--s3-sizes 4000]`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table  # noqa: E402

from ssd_ray.data.voc import VOC_CLASSES  # noqa: E402

SETS = [("2007", "trainval")]
OPTIONS = {"class_names": None, "keep_difficult": False, "class_subset": False}


def write_voc(root: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    ann, img, main = (root / "VOC2007" / d for d in ("Annotations", "JPEGImages", "ImageSets/Main"))
    for d in (ann, img, main):
        d.mkdir(parents=True, exist_ok=True)
    ids = [f"{i:06d}" for i in range(n)]
    for i in ids:
        objs = []
        for _ in range(int(rng.integers(1, 6))):
            w, h = int(rng.integers(10, 200)), int(rng.integers(10, 175))
            x0, y0 = int(rng.integers(1, 500 - w)), int(rng.integers(1, 375 - h))  # inside the 500x375 image
            objs.append(f"<object><name>{VOC_CLASSES[int(rng.integers(0, 20))]}</name><pose>Unspecified</pose>"
                        f"<truncated>0</truncated><difficult>{int(rng.random() < 0.1)}</difficult><bndbox>"
                        f"<xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x0 + w}</xmax><ymax>{y0 + h}</ymax>"
                        f"</bndbox></object>")
        (ann / f"{i}.xml").write_text(f"<annotation><folder>VOC2007</folder><filename>{i}.jpg</filename><size>"
                                      f"<width>500</width><height>375</height><depth>3</depth></size>"
                                      f"{''.join(objs)}</annotation>")
        (img / f"{i}.jpg").write_bytes(b"\xff\xd8")
    (main / "trainval.txt").write_text("\n".join(ids) + "\n")


def measure(root: str, index_dir: str) -> dict[str, float]:
    from ssd_ray.data.index import load_or_build
    from ssd_ray.data.voc import read_voc

    def read():
        return read_voc(root, SETS, **OPTIONS)

    t0 = time.perf_counter()
    n = len(read())
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    built = load_or_build(root, "voc", SETS, OPTIONS, read, index_dir)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    reused = load_or_build(root, "voc", SETS, OPTIONS, read, index_dir)
    t_reuse = time.perf_counter() - t0
    assert len(built) == len(reused) == n
    return {"read_s": t_read, "build_s": t_build, "reuse_s": t_reuse, "images": n}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="4000,40000", help="dataset sizes on the local disk")
    ap.add_argument("--s3-sizes", default="4000", help="dataset sizes on the local S3 server ('' for none)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    rows, out = [], {}
    with tempfile.TemporaryDirectory() as d:
        for store, sizes in (("local disk", args.sizes), ("local S3 server", args.s3_sizes)):
            sizes = [int(s) for s in sizes.split(",") if s.strip()]
            if not sizes:
                continue
            server = None
            if store != "local disk":
                from _s3 import LocalS3

                server = LocalS3()
                server.use()
            try:
                for n in sizes:
                    local = Path(d) / f"voc{n}"
                    if not local.exists():
                        write_voc(local, n)
                    if server is None:
                        root, index_dir = str(local), str(Path(d) / f"index-local-{n}")
                    else:
                        t0 = time.perf_counter()
                        server.upload_dir(local, "bench", f"voc{n}")
                        print(f"uploaded {2 * n + 1} objects in {time.perf_counter() - t0:.0f} s", flush=True)
                        root, index_dir = f"s3://bench/voc{n}", f"s3://bench/index-{n}"
                    m = measure(root, index_dir)
                    rows.append([store, str(n), f"{m['read_s']:.2f}", f"{m['build_s']:.2f}", f"{m['reuse_s']:.2f}",
                                 f"{m['read_s'] / m['reuse_s']:.0f}x"])
                    out[f"{'s3' if server else 'local'}_{n}"] = m
                    print(format_table(["store", "images", "read s", "build s", "reuse s", "read / reuse"], rows[-1:]),
                          flush=True)
            finally:
                if server is not None:
                    server.stop()
    print(format_table(["store", "images", "read s", "build s", "reuse s", "read / reuse"], rows))


if __name__ == "__main__":
    main()
