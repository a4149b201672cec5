"""Training curves (loss, lr, val mAP) as one PNG, drawn from the MLflow run's metric history."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = (("loss", ("loss", "loss_l", "loss_c", "val_loss")), ("learning rate", ("lr",)),
          ("val mAP@0.5", ("val_mAP", "val_mAP_07")))


def plot_curves(tracker, path) -> None:
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 3.6))
    for ax, (title, keys) in zip(axes, PANELS):
        for key in keys:
            points = sorted(tracker.history(key))
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if "val" in key else None,
                        label=key)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
