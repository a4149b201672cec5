"""Bench: where a single-machine run's CPU goes, per process, over the whole run.

    python bench/cpu_share.py [--every 1.0] [--json out.json] -- python -m pipelines.train --config configs/shapes.yaml

Runs the command and samples `/proc` every `--every` seconds: each process descended from it (a local
Ray's processes are: ray.init starts them), its user + system CPU time and its title (Ray renames its workers `ray::<Actor>.<method>`, so the title says what a worker is).
A process is counted for the most CPU it was seen with; those that live less than one sample
interval are missed, which the last line shows (machine CPU from `/proc/stat` vs the sum over
processes). Processes are grouped into what they do for the run: training workers, data (the
augmentation actors and the split coordinator), the driver, and Ray's own background processes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")

# (group, label, substring of the process title): the first match names the process.
KINDS = [
    ("train", "train worker", "RayTrainWorker"),
    ("data", "augmentation actor", "TrainSampleMaker"),
    ("data", "split coordinator", "SplitCoordinator"),
    ("data", "other Ray Data actor", "MapWorker"),
    ("ray", "Train controller", "TrainController"),
    ("ray", "dashboard agent", "dashboard/agent.py"),
    ("ray", "dashboard", "dashboard/dashboard.py"),
    ("ray", "dashboard", "dashboard/head.py"),
    ("ray", "dashboard", "ray-dashboard-"),  # the dashboard's module subprocesses
    ("ray", "raylet", "raylet"),
    ("ray", "GCS", "gcs_server"),
    ("ray", "log monitor", "log_monitor.py"),
    ("ray", "runtime env agent", "runtime_env/agent"),
    ("ray", "monitor", "autoscaler/_private/monitor.py"),
    ("ray", "other Ray actor", "ray::"),
]  # the command itself is the "driver" (matched by pid in classify)


def _stat(pid: int) -> tuple[float, str, int] | None:
    """(CPU seconds, title, parent pid) of a live process, None when it is gone or not readable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            title = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
        return None
    # Fields after the ")" start at field 3 (state): ppid is field 4, utime and stime 14 and 15.
    return (int(fields[11]) + int(fields[12])) / TICK, title, int(fields[1])


def _machine_cpu_s() -> float:
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    busy = sum(parts) - parts[3] - (parts[4] if len(parts) > 4 else 0)  # all but idle and iowait
    return busy / TICK


def classify(title: str, is_driver: bool) -> tuple[str, str]:
    if is_driver:
        return "driver", "driver"
    for group, label, needle in KINDS:
        if needle in title:
            if label == "other Ray actor":  # name it: ray::Foo.bar -> Foo
                name = title.split("ray::", 1)[1].split()[0].split(".")[0]
                return ("ray", f"Ray actor {name}") if name != "IDLE" else ("ray", "idle Ray worker")
            return group, label
    return "other", title.split()[0][-40:] if title else "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=float, default=1.0, help="seconds between samples")
    ap.add_argument("--json", help="also write the per-process figures here")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command to measure after --")

    me = os.getpid()
    t0, m0 = time.monotonic(), _machine_cpu_s()
    child = subprocess.Popen(command)
    seen: dict[int, dict] = {}
    ours = {child.pid}  # the command and its descendants (a pid's parent is read before the pid is kept)
    while True:
        stats = {pid: s for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if pid != me and (s := _stat(pid))}
        grew = True
        while grew:  # a new process may descend from one first seen in this sample
            grew = False
            for pid, (_, _, ppid) in stats.items():
                if pid not in ours and ppid in ours:
                    ours.add(pid)
                    grew = True
        for pid, (cpu, title, _) in stats.items():
            if pid not in ours:
                continue
            group, label = classify(title, pid == child.pid)
            rec = seen.setdefault(pid, {"cpu_s": 0.0, "group": group, "label": label, "title": title})
            rec["cpu_s"] = max(rec["cpu_s"], cpu)
            if group != "other" and label != "idle Ray worker":  # named by what the process became
                rec.update(group=group, label=label, title=title)
        if child.poll() is not None:
            break
        time.sleep(args.every)
    wall, machine = time.monotonic() - t0, _machine_cpu_s() - m0
    cores = os.cpu_count() or 1

    by_label: dict[tuple[str, str], list] = defaultdict(lambda: [0.0, 0])
    for rec in seen.values():
        if rec["cpu_s"] >= 0.05:
            by_label[(rec["group"], rec["label"])][0] += rec["cpu_s"]
            by_label[(rec["group"], rec["label"])][1] += 1
    rows = sorted(by_label.items(), key=lambda kv: -kv[1][0])
    table = [[g, lab, n, f"{cpu:.1f}", f"{100 * cpu / wall:.1f}"] for (g, lab), (cpu, n) in rows]
    print(format_table(["group", "process", "count", "CPU s", "% of a core"], table))
    groups: dict[str, float] = defaultdict(float)
    for (g, _), (cpu, _) in rows:
        groups[g] += cpu
    counted = sum(groups.values())
    print(f"wall {wall:.1f} s on {cores} cores ({wall * cores:.0f} core-s); machine busy {machine:.1f} core-s, "
          f"counted over processes {counted:.1f}; exit status {child.returncode}")
    print("by group: " + ", ".join(f"{g} {cpu:.1f} s ({100 * cpu / max(machine, 1e-9):.0f} %)"
                                   for g, cpu in sorted(groups.items(), key=lambda kv: -kv[1])))
    print(f"load average after: {[round(x, 2) for x in os.getloadavg()]}")
    if args.json:
        Path(args.json).write_text(json.dumps({"wall_s": wall, "cores": cores, "machine_cpu_s": machine,
                                               "groups": groups, "processes": list(seen.values())}, indent=1))
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
