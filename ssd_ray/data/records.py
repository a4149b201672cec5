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
    """Counts skipped samples and boxes by reason; every skip is also logged with the file it came from."""

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        self[reason] += 1
        log.warning("skipped (%s): %s%s", reason, where, f": {detail}" if detail else "")

    def summary(self) -> dict[str, int]:
        return dict(sorted(self.items()))


@dataclass
class DetectionDataset:
    class_names: list[str]  # without background; model num_classes = len(class_names) + 1
    records: list[ImageRecord]
    skipped: SkipCounter = field(default_factory=SkipCounter)
    # Maps contiguous 0-based class id -> the original category id (COCO results files need it).
    category_ids: list[int] | None = None

    @property
    def num_classes(self) -> int:
        """Classes the model predicts, background included."""
        return len(self.class_names) + 1

    def __len__(self) -> int:
        return len(self.records)
