"""What a dataset reader produces: one `ImageRecord` per image, plus the class list and skip counts.

Records are plain, picklable values (paths and small numpy arrays) so they travel to Ray Data tasks
unchanged. Boxes are `[n,4]` float32 xyxy relative to the image (0..1); labels are 0-based ids into
`DetectionDataset.class_names` (background is not a class here).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class ImageRecord:
    image_id: str
    path: str  # absolute path of the image file
    width: int  # original size in pixels, as the annotation states it
    height: int
    boxes: np.ndarray  # [n,4] float32 xyxy, relative 0..1
    labels: np.ndarray  # [n] int64, 0-based class ids
    difficult: np.ndarray  # [n] bool; training drops these by default, evaluation ignores them

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.difficult = np.asarray(self.difficult, dtype=bool).reshape(-1)
        if not (len(self.boxes) == len(self.labels) == len(self.difficult)):
            raise ValueError(
                f"{self.image_id}: boxes/labels/difficult lengths differ: "
                f"{len(self.boxes)}/{len(self.labels)}/{len(self.difficult)}"
            )

    def without_difficult(self) -> "ImageRecord":
        keep = ~self.difficult
        return ImageRecord(self.image_id, self.path, self.width, self.height,
                           self.boxes[keep], self.labels[keep], self.difficult[keep])


class SkipCounter(Counter):
    """Counts skipped samples and boxes by reason, keeps a few examples of each, and logs them.

    The first `LOG_FIRST` skips of a reason are logged one by one with the file they came from (the
    reader's summary line gives the totals), so a dataset with thousands of bad entries does not
    bury the console. `key` (a class name, a category id) is counted per reason in `keys`: it is how
    a run reports which class names the annotations use. `log=False` counts without logging (objects
    left out on purpose, e.g. classes outside a `data.classes` subset).
    """

    LOG_FIRST = 5
    MAX_EXAMPLES = 3

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.examples: dict[str, list[str]] = {}  # reason -> up to MAX_EXAMPLES "where: detail"
        self.keys: dict[str, Counter] = {}  # reason -> Counter of keys

    def skip(self, reason: str, where: str, detail: str = "", key=None, log_it: bool = True) -> None:
        self[reason] += 1
        text = f"{where}{f': {detail}' if detail else ''}"
        ex = self.examples.setdefault(reason, [])
        if len(ex) < self.MAX_EXAMPLES:
            ex.append(text)
        if key is not None:
            self.keys.setdefault(reason, Counter())[key] += 1
        if log_it and self[reason] <= self.LOG_FIRST:
            log.warning("skipped (%s): %s%s", reason, text,
                        " (further skips of this kind are counted, not logged)" if self[reason] == self.LOG_FIRST else "")

    def merge(self, other: "SkipCounter") -> None:
        """Add another counter's counts, examples and keys (datasets read in parts)."""
        self.update(other)
        for reason, ex in getattr(other, "examples", {}).items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(ex[:max(0, self.MAX_EXAMPLES - len(mine))])
        for reason, keys in getattr(other, "keys", {}).items():
            self.keys.setdefault(reason, Counter()).update(keys)

    def summary(self) -> dict[str, int]:
        return dict(sorted(self.items()))

    def __reduce__(self):
        # Counter pickles only its counts; keep the examples and keys when datasets travel to Ray workers.
        return self.__class__, (dict(self),), dict(self.__dict__)


@dataclass
class DetectionDataset:
    class_names: list[str]  # without background; model num_classes = len(class_names) + 1
    records: list[ImageRecord]
    skipped: SkipCounter = field(default_factory=SkipCounter)
    # Maps contiguous 0-based class id -> the original category id (COCO results files need it).
    category_ids: list[int] | None = None
    # COCO-format data: the (root, split) of each annotation file the records came from. Official COCO
    # evaluation scores against these files (crowd regions, given areas, original ids), not the records.
    coco_sources: list[tuple[str, str]] | None = None

    @property
    def num_classes(self) -> int:
        """Classes the model predicts, background included."""
        return len(self.class_names) + 1

    def __len__(self) -> int:
        return len(self.records)
