"""Bench: `make demo` as a newcomer runs it, several times in a row, with what decides its speed.

    python bench/demo.py [--runs 3] [--fresh-data] [--limit-s 480] [--map 0.90] [--log-dir bench/results/demo]

Each run is `make demo` in this checkout (the environment already installed), timed from start to
exit; its output goes to `<log-dir>/run-<k>.log`. `--fresh-data` deletes `data/shapes` before the
first run, so that run also generates the data, as a first `make demo` does. Printed per run: wall
time, final mAP@0.5, the training img/s of the run summary, the load average before and after, and
the CPU time the hypervisor took from this VM during the run ("steal", from /proc/stat: on a shared
VM it decides run-to-run speed as much as the code does); then the machine (`nproc`, CPU model) and
whether every run met both lines (`--limit-s`, `--map`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table  # noqa: E402

FINAL_MAP = re.compile(r"mAP@0\.5 = ([0-9.]+)")
IMG_S = re.compile(r"training ([0-9.]+) img/s")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def steal_s() -> float:
    """CPU seconds stolen by the hypervisor from all of this machine's CPUs since boot (0 off Linux)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")  # cpu user nice system idle iowait irq softirq steal
    except (OSError, IndexError, ValueError):
        return 0.0


def one_run(k: int, log_dir: Path) -> dict:
    load_before = os.getloadavg()
    steal0 = steal_s()
    t0 = time.monotonic()
    log = log_dir / f"run-{k}.log"
    with open(log, "w") as f:
        rc = subprocess.call(["make", "demo"], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    wall = time.monotonic() - t0
    text = log.read_text(errors="replace")
    maps, rates = FINAL_MAP.findall(text), IMG_S.findall(text)
    return {"run": k, "rc": rc, "wall_s": wall, "map": float(maps[-1]) if maps else float("nan"),
            "img_s": float(rates[-1]) if rates else float("nan"), "load_before": load_before,
            "load_after": os.getloadavg(), "steal_s": steal_s() - steal0, "log": str(log)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--fresh-data", action="store_true", help="delete data/shapes before the first run")
    ap.add_argument("--limit-s", type=float, default=480.0, help="the wall-time line (default 8 minutes)")
    ap.add_argument("--map", type=float, default=0.90, help="the mAP@0.5 line")
    ap.add_argument("--log-dir", default=str(ROOT / "bench" / "results" / "demo"))
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error(f"--runs must be >= 1, got {args.runs}")
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"machine: nproc {os.cpu_count()}, {cpu_model()}; {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    rows, ok = [], True
    for k in range(1, args.runs + 1):
        if k == 1 and args.fresh_data:
            shutil.rmtree(ROOT / "data" / "shapes", ignore_errors=True)
        r = one_run(k, log_dir)
        met = r["rc"] == 0 and r["wall_s"] <= args.limit_s and r["map"] >= args.map
        ok &= met
        m, s = divmod(round(r["wall_s"]), 60)
        row = [k, f"{m} min {s:02d} s", f"{r['map']:.3f}", f"{r['img_s']:.1f}",
               " ".join(f"{x:.2f}" for x in r["load_before"]), " ".join(f"{x:.2f}" for x in r["load_after"]),
               f"{r['steal_s']:.0f} s ({100 * r['steal_s'] / (r['wall_s'] * (os.cpu_count() or 1)):.0f} %)",
               "yes" if met else "NO", r["rc"]]
        rows.append(row)
        print(f"run {k}: {row[1]}, mAP@0.5 {row[2]}, {row[3]} img/s, exit {r['rc']} ({r['log']})", flush=True)
    print(format_table(["run", "wall", "mAP@0.5", "train img/s", "load before", "load after", "steal", "met", "exit"],
                       rows))
    print(f"every run within {args.limit_s:.0f} s and >= {args.map}: {'yes' if ok else 'no'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
