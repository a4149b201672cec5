"""Does the data read agree with the config? Checked once the readers are done, before any training.

Readers never stop on a bad record: they skip it and count it by reason (`SkipCounter`). Some reasons
are routine (a box clipped to the image, an image listed twice, classes left out on purpose by a
`data.classes` subset); others mean the data and the config disagree: a class name the class list
does not know, an unreadable or malformed annotation or image. When those drop more than
`data.bad_records_limit` of the objects or of the images, a run would train on something else than
the user thinks (one user's run trained to the end on images whose 204 objects had all been dropped),
so it stops here with the counts by reason and examples, unless `data.accept_bad_records` is set.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import yaml

from ..errors import DataError
from .records import DetectionDataset

log = logging.getLogger(__name__)

# Reasons that mean "data and config disagree", by what they drop. Not here: box_clipped (the box is
# kept), size_from_image (the record is kept), duplicate_id (the image is read once), excluded_class
# (a data.classes subset leaving classes out on purpose).
IMAGE_REASONS = ("bad_xml", "missing_annotation", "missing_image", "bad_image", "bad_image_entry",
                 "unknown_image")
OBJECT_REASONS = ("unknown_class", "unknown_category", "bad_box", "bad_annotation", "empty_box")


@dataclass
class DropReport:
    """What a read dropped for disagreement reasons, against what it kept."""

    images_dropped: int
    images_kept: int
    objects_dropped: int
    objects_kept: int
    by_reason: dict[str, int]  # disagreement reasons only
    examples: dict[str, list[str]]

    @property
    def image_share(self) -> float:
        total = self.images_dropped + self.images_kept
        return self.images_dropped / total if total else 0.0

    @property
    def object_share(self) -> float:
        total = self.objects_dropped + self.objects_kept
        return self.objects_dropped / total if total else 0.0

    def lines(self) -> list[str]:
        out = []
        for reason, n in self.by_reason.items():
            what = "image" if reason in IMAGE_REASONS else "object"
            ex = "; ".join(self.examples.get(reason, []))
            out.append(f"  {reason}: {n} {what}{'s' if n != 1 else ''}{f', e.g. {ex}' if ex else ''}")
        return out


def drop_report(ds: DetectionDataset) -> DropReport:
    """Disagreement drops of a freshly read dataset (before training filters such as keep_empty)."""
    sk = ds.skipped
    by_reason = {r: int(sk[r]) for r in IMAGE_REASONS + OBJECT_REASONS if sk.get(r)}
    examples = getattr(sk, "examples", {})
    return DropReport(
        images_dropped=sum(sk.get(r, 0) for r in IMAGE_REASONS), images_kept=len(ds.records),
        objects_dropped=sum(sk.get(r, 0) for r in OBJECT_REASONS),
        objects_kept=sum(len(r.boxes) for r in ds.records),
        by_reason=by_reason, examples={r: list(examples.get(r, [])) for r in by_reason})


def check_drops(ds: DetectionDataset, where: str, limit: float, accept: bool) -> DropReport:
    """Stop (DataError) when more than `limit` of the objects or images of `ds` was dropped for
    disagreement reasons; with `accept`, warn and go on. `where` names the sets for the message."""
    rep = drop_report(ds)
    if rep.image_share <= limit and rep.object_share <= limit:
        if rep.by_reason:
            log.info("%s: dropped %d object(s) and %d image(s) as bad records (within data.bad_records_limit "
                     "%.0f %%): %s", where, rep.objects_dropped, rep.images_dropped, 100 * limit, rep.by_reason)
        return rep
    head = (f"{where}: {rep.objects_dropped} of {rep.objects_dropped + rep.objects_kept} objects "
            f"({100 * rep.object_share:.1f} %) and {rep.images_dropped} of {rep.images_dropped + rep.images_kept} "
            f"images ({100 * rep.image_share:.1f} %) were dropped because the data and the config disagree, "
            f"more than data.bad_records_limit ({100 * limit:g} %):")
    body = "\n".join(rep.lines())
    if accept:
        log.warning("%s\n%s\ngoing on without them (data.accept_bad_records: true)", head, body)
        return rep
    raise DataError(f"{head}\n{body}\nNothing was trained. Fix the annotations or the config (docs/data.md, "
                    f"'Bad records'); to train without these records anyway, set data.accept_bad_records: true "
                    f"(--set data.accept_bad_records=true).")


def names_found(ds: DetectionDataset) -> Counter:
    """Object class names the annotations use: those kept, plus those dropped as unknown or excluded."""
    found: Counter = Counter()
    for r in ds.records:
        for label in r.labels:
            found[ds.class_names[int(label)]] += 1
    keys = getattr(ds.skipped, "keys", {})
    for reason in ("unknown_class", "excluded_class"):
        found.update(keys.get(reason, {}))
    return found


def classes_line(names: Iterable[str]) -> str:
    """The YAML line that sets data.classes to `names` (quoted where YAML needs it)."""
    return "classes: " + yaml.safe_dump(list(names), default_flow_style=True, width=1 << 16).strip()


def _counts(found: Counter) -> str:
    return ", ".join(f"{n} ({c})" for n, c in sorted(found.items(), key=lambda kv: (-kv[1], str(kv[0]))))


def check_default_voc_classes(ds: DetectionDataset, where: str) -> None:
    """Without data.classes a VOC-format dataset is read with the 20 Pascal VOC classes; that is only
    right when its annotations use Pascal names. Otherwise stop, listing the names found and the
    config line that fixes it."""
    unknown = getattr(ds.skipped, "keys", {}).get("unknown_class")
    if not ds.skipped.get("unknown_class"):
        return
    found = names_found(ds)
    suggestion = classes_line(sorted(found))
    raise DataError(
        f"{where}: without data.classes, VOC-format data is read with the 20 Pascal VOC classes, but the "
        f"annotations also name other classes: {_counts(unknown or Counter())}. Their objects would be dropped. "
        f"Names found in the annotations (objects): {_counts(found)}.\n"
        f"Put the classes to train in the config's data section (their order is the model's label order):\n"
        f"    {suggestion}\n"
        f"or pass --set 'data.{suggestion.replace(': ', '=', 1)}'. Nothing was trained.")


def check_classes_present(ds: DetectionDataset, classes: Sequence[str], where: str) -> None:
    """Every class named in data.classes needs objects to learn from: a name no object carries is a
    spelling that does not match the annotations (or a class absent from these sets)."""
    found = names_found(ds)
    kept = Counter(ds.class_names[int(label)] for r in ds.records for label in r.labels)
    absent = [c for c in classes if not kept.get(c)]
    if not absent:
        return
    raise DataError(
        f"{where}: data.classes lists {absent}, but no object of the train sets has "
        f"{'that name' if len(absent) == 1 else 'these names'}, so the model could not learn "
        f"{'it' if len(absent) == 1 else 'them'}. Names found in the annotations (objects): "
        f"{_counts(found) or 'none'}. Correct data.classes (names must match the annotations exactly, "
        f"case included), or set data.accept_bad_records: true to train anyway.")


def check_has_objects(ds: DetectionDataset, where: str) -> None:
    """Training needs at least one object: a run on images without any box learns only background."""
    if not any(len(r.boxes) for r in ds.records):
        raise DataError(f"{where}: no object is left to train on ({len(ds.records)} images, skipped "
                        f"{ds.skipped.summary() or 'nothing'}); check data.classes and the annotations")
