"""`Predictor`: a trained checkpoint applied to images, with boxes in the images' own pixels.

    predictor = Predictor.from_checkpoint("runs/shapes-.../outputs/model.pt", device="cpu", score_thresh=0.5)
    [det] = predictor("photo.jpg")            # or a uint8 HxWx3 RGB array, or a list of either
    det["boxes"]   # float32 [K,4] xyxy in ORIGINAL pixels, clipped to [0,W] x [0,H]
    det["scores"]  # float32 [K], highest first, all > score_thresh
    det["labels"]  # int64 [K], model space 1..C-1 (0 is background; class id = label - 1)
    det["names"]   # K class names

Everything the model needs (class names, input size, normalisation, post-processing settings) comes
from the checkpoint. Images are resized to `min_dim x min_dim` exactly as evaluation does (cv2
INTER_LINEAR), normalised on the device (`ssd_ray.model.normalize`) and decoded by
`ssd_ray.postprocess.detect`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ssd_ray.data.augment import EvalTransform, decode_image
from ssd_ray.postprocess import DetectArgs

@dataclass
class PathResult:
    """One file of `Predictor.predict_paths`: its detections, or why it could not be read."""

    path: str
    image: np.ndarray | None  # uint8 [H,W,3] RGB, None when unreadable
    detections: dict | None
    error: str | None = None


class Predictor:
    """Callable: images -> one detection dict per image (see the module docstring for the format)."""

    def __init__(self, model: torch.nn.Module, priors: torch.Tensor, class_names: Sequence[str], image_size: int,
                 detect_args: DetectArgs | None = None, device: str | torch.device = "cpu",
                 score_thresh: float = 0.5, batch_size: int = 16, normalization=None):
        """model: SSD in eval mode on `device`; priors: `[P,4]` cxcywh; detect_args: the model's
        post-processing (`LoadedModel.detect_args`; default `DetectArgs()`); normalization: the model's
        input normalisation (`LoadedModel.input_normalization`, a dict or a name; None: ssd-ray's own)."""
        from ssd_ray.model.normalize import Normalization

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= score_thresh < 1.0:
            raise ValueError(f"score_thresh must be in [0, 1), got {score_thresh}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.priors = torch.as_tensor(priors, dtype=torch.float32, device=self.device)
        self.class_names = list(class_names)
        self.image_size = int(image_size)
        self.detect_args = detect_args or DetectArgs()
        self.score_thresh = float(score_thresh)
        self.batch_size = int(batch_size)
        self.normalization = Normalization.from_spec(normalization)
        self._resize = EvalTransform(self.image_size)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu", score_thresh: float = 0.5,
                        batch_size: int = 16) -> "Predictor":
        """A model file (`outputs/model.pt`) or a training checkpoint (file or `checkpoint_*` folder)."""
        from ssd_ray.checkpoint import load_model

        m = load_model(path, device)
        return cls(m.model, m.priors, m.class_names, m.image_size, m.detect_args, device, score_thresh, batch_size,
                   normalization=m.input_normalization)

    # ------------------------------------------------------------------------------------ inference
    def _as_image(self, item, index: int) -> np.ndarray:
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] != 3 or 0 in item.shape[:2]:
                raise ValueError(f"image {index}: expected uint8 [H,W,3] RGB, got {item.dtype} {list(item.shape)}")
            return item
        if isinstance(item, (str, os.PathLike)):
            return decode_image(item)  # ValueError naming the file when unreadable
        raise TypeError(f"image {index}: expected a uint8 HxWx3 array or a file path, got {type(item).__name__}")

    @torch.inference_mode()
    def predict_arrays(self, images: Sequence[np.ndarray]) -> list[dict]:
        """Decoded uint8 `[H,W,3]` RGB images -> detection dicts, `batch_size` images per forward."""
        from ssd_ray.model import normalize
        from ssd_ray.postprocess import detect

        # Detections score > score_thresh (and > the checkpoint's conf_thresh). Thresholding before NMS
        # keeps exactly what thresholding after it would: a box below the threshold can only suppress
        # boxes that score lower still.
        args = self.detect_args.replace(conf_thresh=max(self.detect_args.conf_thresh, self.score_thresh)).kwargs()
        out: list[dict] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            x = np.stack([self._resize(img) for img in chunk])
            loc, conf = self.model(normalize(torch.from_numpy(x).to(self.device), spec=self.normalization))
            dets = detect(loc, conf, self.priors, **args)
            for img, det in zip(chunk, dets):
                h, w = img.shape[:2]
                scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=det["boxes"].device)
                boxes = det["boxes"].float().clamp(0.0, 1.0) * scale  # relative -> original pixels, clipped
                labels = det["labels"].long().cpu().numpy().reshape(-1)
                out.append({
                    "boxes": boxes.cpu().numpy().reshape(-1, 4).astype(np.float32),
                    "scores": det["scores"].float().cpu().numpy().reshape(-1),
                    "labels": labels,
                    "names": [self.class_names[int(lb) - 1] for lb in labels],
                })
        return out

    def __call__(self, images) -> list[dict]:
        """images: one image or a list of them; each a uint8 `[H,W,3]` RGB array or a file path.

        Always returns a list (one dict per image, in order). An unreadable file raises ValueError
        naming it; use `predict_paths` to skip such files instead.
        """
        if isinstance(images, (np.ndarray, str, os.PathLike)):
            images = [images]
        arrays = [self._as_image(item, i) for i, item in enumerate(images)]
        return self.predict_arrays(arrays)

    def predict_paths(self, paths: Iterable[str | os.PathLike]) -> Iterator[PathResult]:
        """Files -> `PathResult`s in input order, `batch_size` readable images per forward; unreadable
        files come back with `image`/`detections` None and `error` naming the file."""
        pending: list[PathResult] = []
        readable = 0

        def flush() -> Iterator[PathResult]:
            ok = [r for r in pending if r.error is None]
            for r, det in zip(ok, self.predict_arrays([r.image for r in ok])):
                r.detections = det
            yield from pending
            pending.clear()

        for path in paths:
            path = os.fspath(path)
            try:
                pending.append(PathResult(path, decode_image(path), None))
                readable += 1
            except ValueError as e:
                pending.append(PathResult(path, None, None, str(e)))
            if readable == self.batch_size:
                yield from flush()
                readable = 0
        yield from flush()

    def meta(self) -> dict:
        """Class names, input size and post-processing settings this predictor applies."""
        return {"class_names": self.class_names, "image_size": self.image_size, "score_thresh": self.score_thresh,
                "normalization": self.normalization.to_dict(), **self.detect_args.kwargs()}
