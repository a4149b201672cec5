"""ssd-ray models as MLflow models: the pyfunc flavour around `ssd_ray.Predictor`.

    import mlflow
    model = mlflow.pyfunc.load_model("runs:/<run id>/model")      # or "models:/<name>/<version>"
    df = model.predict(pd.DataFrame({"image": ["a.jpg", base64_png_string]}))
    df = model.predict(frame, params={"score_thresh": 0.3})
    model.unwrap_python_model().predict_images([uint8_hwc_rgb_array])   # decoded arrays

Input: a DataFrame with one string column `image`; each value is an image file path or the
base64-encoded bytes of an image file (JPEG, PNG, ...: whatever `ssd_ray.data.augment.decode_image`
reads). A value that names an existing file or a bucket object (`s3://...`, ssd_ray/storage.py) is
read as a file, anything else must be base64.
Output: one row per detection, highest score first within an image; an image without detections has
no row. Columns: `image_index` (row of the input), `xmin, ymin, xmax, ymax` (pixels of the original
image, clipped to it), `score`, `label` (class name) and `class_id` (0-based index into the class
names). Detections score above `score_thresh`: 0.5 unless a call passes `params={"score_thresh": t}`
(and above the model's `postprocess.conf_thresh`).

The MLflow model holds the ssd-ray model file (`artifacts/model.pt`: weights, config, class names,
normalisation) and `mlflow_model_code.py`, MLflow's "models from code" file that builds an
`SSDPyfunc` (no pickled objects), so loading needs ssd-ray installed (it is the first of the
model's pip requirements) but nothing from the run's folder. Load-time options
(`mlflow.pyfunc.load_model(uri, model_config={...})`): `device` (default: "cuda" when available,
else "cpu") and `batch_size`.
"""

from __future__ import annotations

import base64
import binascii
import importlib.metadata
import logging
import os
from collections import OrderedDict
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

INPUT_COLUMN = "image"
MODEL_FILE_KEY = "model_file"  # the key of the ssd-ray model file in the MLflow model's artifacts
OUTPUT_COLUMNS = ("image_index", "xmin", "ymin", "xmax", "ymax", "score", "label", "class_id")
DEFAULT_SCORE_THRESH = 0.5
MODEL_TYPE = "ssd-ray/object-detection"  # LoggedModel.model_type: find them with search_logged_models
_CACHED_THRESHOLDS = 4  # Predictors kept for per-call thresholds besides the default one


def signature(score_thresh: float = DEFAULT_SCORE_THRESH):
    """Input, output and params schema of the pyfunc model (see the module docstring)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    outputs = Schema([ColSpec("long", "image_index")] + [ColSpec("double", c) for c in
                                                         ("xmin", "ymin", "xmax", "ymax", "score")]
                     + [ColSpec("string", "label"), ColSpec("long", "class_id")])
    return ModelSignature(inputs=Schema([ColSpec("string", INPUT_COLUMN)]), outputs=outputs,
                          params=ParamSchema([ParamSpec("score_thresh", "double", float(score_thresh))]))


def pip_requirements() -> list[str]:
    """Exact versions of what the pyfunc model imports, from this environment (MLflow adds itself)."""
    out = []
    for dist in ("ssd-ray", "torch", "torchvision", "numpy", "pandas", "opencv-python-headless"):
        try:
            out.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            if dist == "ssd-ray":  # a checkout used without `pip install -e .`
                from . import __version__

                out.append(f"ssd-ray=={__version__}")
    return out


def encode_image_file(path: str | os.PathLike, max_side: int | None = None) -> str:
    """An image file as the base64 string the model takes; `max_side` shrinks it first (re-encoded
    as PNG) to keep input examples small. `path` may be a bucket URI (ssd_ray/storage.py)."""
    from . import storage

    data = storage.read_bytes(path)
    if max_side:
        import cv2

        from .data.augment import decode_image

        img = decode_image(data)
        h, w = img.shape[:2]
        if max(h, w) > max_side:
            s = max_side / max(h, w)
            img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError(f"cannot re-encode {path}")
        data = buf.tobytes()
    return base64.b64encode(data).decode("ascii")


def _decode_value(value, row: int) -> np.ndarray:
    from .data.augment import decode_image

    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8 or value.ndim != 3 or value.shape[2] != 3:
            raise ValueError(f"image row {row}: expected a uint8 [H,W,3] RGB array, got {value.dtype} "
                             f"{list(value.shape)}")
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return decode_image(bytes(value))
    if isinstance(value, os.PathLike):
        return decode_image(value)
    if not isinstance(value, str):
        raise ValueError(f"image row {row}: expected a file path or base64 string, got {type(value).__name__}")
    if len(value) < 4096 and os.path.isfile(value):
        return decode_image(value)
    from . import storage

    if storage.is_uri(value):
        try:
            return decode_image(storage.read_bytes(value))
        except (OSError, ValueError) as e:
            raise ValueError(f"image row {row}: {e}") from None
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        data = b""
    if not data:
        raise ValueError(f"image row {row}: {value[:80]!r} is neither an existing image file nor "
                         f"base64-encoded image bytes")
    try:
        return decode_image(data)
    except ValueError as e:
        raise ValueError(f"image row {row}: {e}") from None


def images_from_input(model_input) -> list[np.ndarray]:
    """The decoded images of a model input: a DataFrame with column `image` (or a single column), a
    list/Series of paths, base64 strings, bytes or uint8 arrays, or one uint8 `[H,W,3]` array."""

    if isinstance(model_input, pd.DataFrame):
        if INPUT_COLUMN in model_input.columns:
            values = model_input[INPUT_COLUMN].tolist()
        elif len(model_input.columns) == 1:
            values = model_input.iloc[:, 0].tolist()
        else:
            raise ValueError(f"expected a DataFrame with an {INPUT_COLUMN!r} column, got columns "
                             f"{list(model_input.columns)}")
    elif isinstance(model_input, np.ndarray) and model_input.ndim == 3:
        values = [model_input]
    elif isinstance(model_input, (str, bytes, os.PathLike)):
        values = [model_input]
    else:
        values = list(model_input)
    return [_decode_value(v, i) for i, v in enumerate(values)]


def detections_frame(detections: list[dict]):
    """Predictor detection dicts (one per image: boxes, scores, labels, names) -> the
    one-row-per-detection DataFrame."""
    rows = {c: [] for c in OUTPUT_COLUMNS}
    for i, det in enumerate(detections):
        k = len(det["scores"])
        boxes = np.asarray(det["boxes"], dtype=np.float64).reshape(-1, 4)
        rows["image_index"].extend([i] * k)
        for j, c in enumerate(("xmin", "ymin", "xmax", "ymax")):
            rows[c].extend(boxes[:, j].tolist())
        rows["score"].extend(np.asarray(det["scores"], dtype=np.float64).tolist())
        class_ids = (np.asarray(det["labels"], dtype=np.int64) - 1).tolist()  # model space -> 0-based
        rows["label"].extend(det["names"])
        rows["class_id"].extend(class_ids)
    return pd.DataFrame({
        "image_index": pd.Series(rows["image_index"], dtype="int64"),
        **{c: pd.Series(rows[c], dtype="float64") for c in ("xmin", "ymin", "xmax", "ymax", "score")},
        "label": pd.Series(rows["label"], dtype="object"),
        "class_id": pd.Series(rows["class_id"], dtype="int64"),
    })


class SSDPyfunc(mlflow.pyfunc.PythonModel):
    """The pyfunc model: `ssd_ray.Predictor` loaded from the model file in the MLflow model."""

    def __init__(self, score_thresh: float = DEFAULT_SCORE_THRESH, batch_size: int = 16):
        if not 0.0 <= score_thresh < 1.0:
            raise ValueError(f"score_thresh must be in [0, 1), got {score_thresh}")
        self.score_thresh = float(score_thresh)
        self.batch_size = int(batch_size)

    def load_context(self, context) -> None:
        import torch

        opts = dict(context.model_config or {})
        self._device = opts.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        self._batch_size = int(opts.get("batch_size") or self.batch_size)
        self._model_file = context.artifacts[MODEL_FILE_KEY]
        self._predictors: OrderedDict = OrderedDict()
        self._default = self._predictor(self.score_thresh)

    def _predictor(self, score_thresh: float):
        """A Predictor per threshold (the model file is reloaded for a new one, a few kept)."""
        from .predict import Predictor

        if score_thresh == self.score_thresh and getattr(self, "_default", None) is not None:
            return self._default
        if score_thresh not in self._predictors:
            self._predictors[score_thresh] = Predictor.from_checkpoint(
                self._model_file, device=self._device, score_thresh=score_thresh, batch_size=self._batch_size)
            if len(self._predictors) > _CACHED_THRESHOLDS + 1:
                self._predictors.popitem(last=False)
        self._predictors.move_to_end(score_thresh)
        return self._predictors[score_thresh]

    def predict_images(self, images, score_thresh: float | None = None):
        """Images (anything `images_from_input` takes, uint8 arrays included) -> detections DataFrame."""
        t = self.score_thresh if score_thresh is None else float(score_thresh)
        if not 0.0 <= t < 1.0:
            raise ValueError(f"score_thresh must be in [0, 1), got {t}")
        predictor = self._predictor(t)
        arrays = images_from_input(images)
        return detections_frame(predictor.predict_arrays(arrays) if arrays else [])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        # The DataFrame hint is MLflow's "no schema inference" marker: the logged signature applies.
        return self.predict_images(model_input, (params or {}).get("score_thresh"))


def log_pyfunc_model(model_file: str | os.PathLike, *, run_id: str, tracking_uri: str, name: str,
                     example_image: str | os.PathLike | None = None,
                     registered_model_name: str | None = None, step: int = 0, metadata: dict | None = None):
    """Log an ssd-ray model file into run `run_id` as the MLflow model `name` (pyfunc flavour):
    signature, explicit pip requirements, the model file as an artifact and, with `example_image`, a
    one-image input example (shrunk to 64 px; MLflow checks the model predicts on it). With
    `registered_model_name`, also register it (a new version). Returns MLflow's `ModelInfo`."""
    import mlflow
    from mlflow.models import Model
    from mlflow.tracking import MlflowClient

    example = None
    if example_image is not None:
        try:
            example = pd.DataFrame({INPUT_COLUMN: [encode_image_file(example_image, max_side=64)]})
        except (OSError, ValueError) as e:  # the example is documentation: log the model without it
            log.warning("no input example for MLflow model %s: %s", name, e)
    # The LoggedModel is created here, in the run's experiment: Model.log would put it in the
    # process's current experiment (the default one in a driver that never called set_experiment),
    # where `runs:/<run id>/<name>` does not find it. It copies the run's params, as log_model does.
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    logged = client.create_logged_model(experiment_id=run.info.experiment_id, name=name, source_run_id=run_id,
                                        params=dict(run.data.params), model_type=MODEL_TYPE)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)  # Model.log resolves the store from the global URI
    try:
        # Model.log rather than mlflow.pyfunc.log_model (which forwards to it): it takes the run id, so
        # the driver logs into the run without making it the process's active run.
        return Model.log(
            artifact_path=None, name=name, flavor=mlflow.pyfunc, flavor_name="pyfunc.ModelFromCode",
            run_id=run_id, model_id=logged.model_id, step=step,
            python_model=str(Path(__file__).with_name("mlflow_model_code.py")),
            artifacts={MODEL_FILE_KEY: str(model_file)},
            signature=signature(), input_example=example, pip_requirements=pip_requirements(),
            registered_model_name=registered_model_name, metadata=metadata,
        )
    finally:
        mlflow.set_tracking_uri(previous)
