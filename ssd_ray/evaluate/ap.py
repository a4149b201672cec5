"""Pascal VOC average precision from a precision/recall curve.

Both metrics follow the py-faster-rcnn / ssd.pytorch `voc_ap` operation for operation (same
thresholds, same summation order), so results agree with published numbers to float64 rounding.
"""

from __future__ import annotations

import numpy as np

# The thresholds every widely used Python VOC evaluation applies. They are NOT exact tenths:
# np.arange gives 0.30000000000000004, 0.6000000000000001 and 0.7000000000000001, so a recall of
# exactly 0.3 does not reach the "0.3" point. Keep np.arange; exact k/10 changes published numbers.
VOC07_RECALL_THRESHOLDS = np.arange(0.0, 1.1, 0.1)


def voc_ap(rec, prec, use_07_metric: bool = True) -> float:
    """Average precision of one class.

    rec, prec: [D] float, cumulative recall and precision after each detection in score order
    (empty when there are no detections: AP 0).
    use_07_metric=True: VOC2007 11-point metric, the mean over t in `VOC07_RECALL_THRESHOLDS` of the
    max precision at recall >= t (0 where no recall reaches t).
    use_07_metric=False: VOC2010+ area under the precision envelope: recall gets sentinels 0 and 1,
    precision 0 and 0, precision becomes its running max from the right, and AP is the sum of
    (delta recall) * precision over the points where recall changes.
    """
    rec = np.asarray(rec, dtype=np.float64).reshape(-1)
    prec = np.asarray(prec, dtype=np.float64).reshape(-1)
    if rec.shape != prec.shape:
        raise ValueError(f"voc_ap: rec and prec lengths differ: {rec.size} vs {prec.size}")
    if use_07_metric:
        ap = 0.0
        for t in VOC07_RECALL_THRESHOLDS:
            reached = rec >= t
            p = np.max(prec[reached]) if reached.any() else 0.0
            ap = ap + p / 11.0  # accumulate in this order: the reference sums the same way
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    # Precision envelope: running max from the right (same values as the reference's loop).
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))
