"""Bench: the data fingerprint (`ssd_ray.data.fingerprint`) on a COCO-sized record set.

120k records shaped like COCO train2017 (118k images, 860k boxes: Poisson(7.3) objects per image,
string ids, 640x480-ish sizes). Baseline in the same process: `json.loads` of the equivalent COCO
annotation JSON (`images` + `annotations`), the part of reading the annotation file that no reader
can skip; the fingerprint's cost is reported against it and in seconds. Rounds alternate
(fingerprint, parse, ...) and medians are printed. Also: the fingerprint of the same records in
shuffled order (must be equal), and the optional image-bytes mode's throughput on files in the page
cache (an upper bound; a cold disk reads slower).

    python bench/fingerprint.py [--images 120000] [--rounds 5] [--image-files 500]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/fingerprint.py`

from bench._common import alternating_rounds, format_table, median  # noqa: E402
from ssd_ray.data.fingerprint import fingerprint  # noqa: E402
from ssd_ray.data.records import DetectionDataset, ImageRecord  # noqa: E402


def coco_like(n: int, seed: int = 0) -> tuple[DetectionDataset, str]:
    """`n` records with COCO's object statistics, and the COCO annotation JSON they would come from."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(7.3, n)
    total = int(counts.sum())
    xy = rng.uniform(0, 0.8, (total, 2))
    boxes = np.concatenate([xy, np.minimum(xy + rng.uniform(0.02, 0.2, (total, 2)), 1.0)], axis=1).astype(np.float32)
    labels = rng.integers(0, 80, total)
    widths, heights = rng.integers(480, 641, n), rng.integers(360, 481, n)
    ids = rng.permutation(n) * 1000 + rng.integers(0, 1000, n)  # unique, not in listing order
    starts = np.concatenate([[0], np.cumsum(counts)])
    records, images, anns = [], [], []
    for i in range(n):
        a, b = starts[i], starts[i + 1]
        image_id, w, h = int(ids[i]), int(widths[i]), int(heights[i])
        records.append(ImageRecord(str(image_id), f"/data/coco/train2017/{image_id:012d}.jpg", w, h, boxes[a:b],
                                   labels[a:b], np.zeros(b - a, bool)))
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": w, "height": h})
        px = boxes[a:b] * np.array([w, h, w, h], np.float32)
        anns.extend({"id": int(j) + 1, "image_id": image_id, "category_id": int(labels[j]) + 1, "iscrowd": 0,
                     "bbox": [round(float(x1), 2), round(float(y1), 2), round(float(x2 - x1), 2),
                              round(float(y2 - y1), 2)], "area": 1.0}
                    for j, (x1, y1, x2, y2) in zip(range(a, b), px.tolist()))
    names = [f"class{c}" for c in range(80)]
    return DetectionDataset(names, records), json.dumps({"images": images, "annotations": anns})


def image_bytes_rate(n_files: int, size: int = 160_000) -> float:
    """MB/s of the image-bytes mode over `n_files` files of `size` bytes (page cache warm)."""
    with tempfile.TemporaryDirectory() as d:
        rng = np.random.default_rng(1)
        recs = []
        for i in range(n_files):
            p = Path(d) / f"{i}.jpg"
            p.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
            recs.append(ImageRecord(str(i), str(p), 640, 480, np.zeros((0, 4)), [], []))
        ds = DetectionDataset(["a"], recs)
        fingerprint(ds, image_bytes=True)  # warm the cache
        t0 = time.perf_counter()
        fingerprint(ds, image_bytes=True)
        return n_files * size / 1e6 / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=120_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--image-files", type=int, default=500)
    args = ap.parse_args()

    t0 = time.perf_counter()
    ds, text = coco_like(args.images)
    objects = sum(len(r.labels) for r in ds.records)
    print(f"{len(ds)} records, {objects} objects, annotation JSON {len(text) / 1e6:.0f} MB "
          f"(built in {time.perf_counter() - t0:.0f} s)")
    shuffled = DetectionDataset(ds.class_names, random.Random(0).sample(ds.records, len(ds.records)))
    fp = fingerprint(ds)
    assert fingerprint(shuffled) == fp, "listing order changed the fingerprint"
    print(f"fingerprint {fp.digest} (same for the shuffled listing)")

    rates = alternating_rounds({
        "fingerprint (records)": lambda r: (fingerprint(shuffled if r % 2 else ds), len(ds))[1],
        "json.loads of the COCO annotations": lambda r: (json.loads(text), len(ds))[1],
    }, rounds=args.rounds)
    rows = [[name, 1e3 * len(ds) / median(v), min(len(ds) / x for x in v), max(len(ds) / x for x in v)]
            for name, v in rates.items()]
    print(format_table(["variant", "median ms", "min s", "max s"], rows))
    fp_s = len(ds) / median(rates["fingerprint (records)"])
    parse_s = len(ds) / median(rates["json.loads of the COCO annotations"])
    print(f"fingerprint / annotation parse: {fp_s / parse_s:.2f}")
    # CPU seconds of this process: on a busy shared machine closer to what an idle one takes than wall time.
    cpu = {}
    for name, fn in (("fingerprint", lambda: fingerprint(ds)), ("json.loads", lambda: json.loads(text))):
        t0 = time.process_time()
        fn()
        cpu[name] = time.process_time() - t0
    print(f"CPU seconds: fingerprint {cpu['fingerprint']:.2f}, json.loads {cpu['json.loads']:.2f} "
          f"(ratio {cpu['fingerprint'] / cpu['json.loads']:.2f})")
    if args.image_files:
        rate = image_bytes_rate(args.image_files)
        print(f"image-bytes mode: {rate:.0f} MB/s on cached files -> COCO train2017 (18 GB) in "
              f">= {18e3 / rate:.0f} s")


if __name__ == "__main__":
    main()
