"""`EvalResult`: every number one evaluation produces, and its reports (JSON, text table, PR plots)."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np

from ssd_ray.evaluate.voc import ClassAP


def _num(x: float | None) -> float | None:
    """JSON-safe number: None stays None, NaN (should not occur) becomes None rather than invalid JSON."""
    return None if x is None or math.isnan(x) else float(x)


@dataclass
class EvalResult:
    class_names: list[str]
    num_images: int
    per_class: list[ClassAP] = field(default_factory=list)  # class_names order; empty if VOC not computed
    mAP_07: float | None = None  # VOC07 11-point mAP@0.5 over present classes
    mAP_area: float | None = None  # VOC2010+ area mAP@0.5 over present classes: the headline metric
    absent: list[str] = field(default_factory=list)  # classes without (non-difficult) ground truth
    coco: dict[str, float] | None = None  # COCO_STAT_NAMES -> value; None if COCO not computed
    # How the numbers were made (ssd_ray/evaluate/protocol.py): {"name", "postprocess", ground truth used}
    protocol: dict | None = None

    @property
    def protocol_name(self) -> str:
        return (self.protocol or {}).get("name", "ssd_ray")

    @property
    def headline(self) -> float | None:
        """The protocol's main number: VOC07 mAP (voc07), COCO AP (coco), else VOC area mAP@0.5."""
        if self.protocol_name == "voc07":
            return self.mAP_07
        if self.protocol_name == "coco":
            return None if self.coco is None else self.coco.get("AP")
        return self.mAP_area

    @property
    def ap_07(self) -> dict[str, float | None]:
        return {c.name: c.ap_07 for c in self.per_class}

    @property
    def ap_area(self) -> dict[str, float | None]:
        return {c.name: c.ap_area for c in self.per_class}

    def to_json(self) -> dict:
        """Plain dict (JSON types only); absent classes have AP null. PR arrays are not included."""
        return {
            "num_images": int(self.num_images),
            "class_names": list(self.class_names),
            "mAP_07": _num(self.mAP_07),
            "mAP_area": _num(self.mAP_area),
            "absent": list(self.absent),
            "per_class": [
                {"class": c.name, "npos": int(c.npos), "num_detections": int(c.num_detections),
                 "ap_07": _num(c.ap_07), "ap_area": _num(c.ap_area)}
                for c in self.per_class
            ],
            "coco": None if self.coco is None else {k: float(v) for k, v in self.coco.items()},
            "protocol": self.protocol,
        }

    @classmethod
    def from_json(cls, d: dict) -> "EvalResult":
        """Inverse of `to_json` (PR arrays come back empty)."""
        per_class = [ClassAP(name=c["class"], npos=c["npos"], num_detections=c["num_detections"],
                             ap_07=c["ap_07"], ap_area=c["ap_area"], rec=np.zeros(0), prec=np.zeros(0))
                     for c in d["per_class"]]
        return cls(class_names=list(d["class_names"]), num_images=d["num_images"], per_class=per_class,
                   mAP_07=d["mAP_07"], mAP_area=d["mAP_area"], absent=list(d["absent"]), coco=d["coco"],
                   protocol=d.get("protocol"))

    def table(self) -> str:
        """Per-class AP table as text; absent classes are marked "absent"."""
        lines = [f"images: {self.num_images}"]
        if self.protocol_name == "voc07" and self.per_class:
            # As ssd.pytorch's eval.py prints them.
            lines += [f"AP for {c.name} = {'absent' if c.absent else f'{c.ap_07:.4f}'}" for c in self.per_class]
            lines.append("Mean AP = " + ("n/a" if self.mAP_07 is None else f"{self.mAP_07:.4f}"))
            if self.absent:
                lines.append("absent (no ground truth, not in the mean): " + ", ".join(self.absent))
        elif self.per_class:
            width = max(12, *(len(c.name) for c in self.per_class))
            lines.append(f"{'class':<{width}} {'gt':>6} {'dets':>7} {'AP07':>7} {'AP area':>7}")
            for c in self.per_class:
                ap07 = "absent" if c.absent else f"{c.ap_07:.4f}"
                aparea = "absent" if c.absent else f"{c.ap_area:.4f}"
                lines.append(f"{c.name:<{width}} {c.npos:>6d} {c.num_detections:>7d} {ap07:>7} {aparea:>7}")
            present = len(self.per_class) - len(self.absent)
            fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
            lines.append(f"VOC area mAP@0.5: {fmt(self.mAP_area)}  (VOC07 11-point: {fmt(self.mAP_07)}; "
                         f"{present} of {len(self.per_class)} classes present)")
            if self.absent:
                lines.append("absent (no ground truth, not in mAP): " + ", ".join(self.absent))
        else:
            lines.append("VOC metrics not computed")
        if self.coco is not None:
            lines.append("COCO: " + "  ".join(f"{k} {v:.4f}" for k, v in self.coco.items()))
        if self.protocol:
            pp = self.protocol.get("postprocess")
            lines.append(f"protocol: {self.protocol_name}" + (
                "" if not pp else f" (post-processing: conf > {pp['conf_thresh']}, NMS {pp['nms_thresh']}, "
                f"{pp['nms_top_k']} candidates per class, {pp['top_k'] or 'no cap on'} detections per image, "
                f"clip {pp['clip']})"))
            if self.protocol.get("coco_ground_truth"):
                lines.append(f"COCO ground truth: {self.protocol['coco_ground_truth']}")
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str) -> dict[str, str]:
        """Write metrics.json, ap_table.txt and pr_<class>.png (one per class) -> {name: path}."""
        os.makedirs(out_dir, exist_ok=True)
        paths = {"metrics.json": os.path.join(out_dir, "metrics.json"),
                 "ap_table.txt": os.path.join(out_dir, "ap_table.txt")}
        with open(paths["metrics.json"], "w") as f:
            json.dump(self.to_json(), f, indent=2)
        with open(paths["ap_table.txt"], "w") as f:
            f.write(self.table())
        used: set[str] = set()
        for c in self.per_class:
            stem = "pr_" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", c.name) or "class")
            name, k = f"{stem}.png", 1
            while name in used:  # two names that sanitise alike ("a b", "a/b") keep separate files
                name, k = f"{stem}_{k}.png", k + 1
            used.add(name)
            paths[name] = os.path.join(out_dir, name)
            _plot_pr(c, paths[name])
        return paths


def _plot_pr(c: ClassAP, path: str) -> None:
    # The object API with an Agg canvas: no pyplot global state, no GUI backend, safe in Ray workers.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if c.absent:
        ax.set_title(f"{c.name}: absent")
        ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.set_title(f"{c.name}: AP {c.ap_area:.3f} (area), {c.ap_07:.3f} (07)")
        if len(c.rec):
            ax.plot(c.rec, c.prec, drawstyle="steps-post")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
