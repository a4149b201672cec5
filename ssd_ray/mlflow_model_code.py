"""The models-from-code file of ssd-ray's MLflow models: MLflow copies it into each logged model and
runs it when the model loads (no pickled Python objects in the model; see ssd_ray/mlflow_model.py)."""

import mlflow.models

from ssd_ray.mlflow_model import SSDPyfunc

mlflow.models.set_model(SSDPyfunc())
