"""Save a fitted scikit-learn pipeline (joblib file) as an MLflow model that answers probabilities.

Run with the MLflow peer's Python: save_mlflow_model.py MODEL.joblib EXAMPLE.csv OUT_DIR [METHOD]
(METHOD: what the pyfunc answers, predict_proba by default; predict for a regressor's values).
The signature is inferred from the example rows, so the scoring server checks every request against it.
"""

from __future__ import annotations

import sys

import joblib
import mlflow.sklearn
import pandas as pd
import skops.io as sio
from mlflow.models import infer_signature

model = joblib.load(sys.argv[1])
example = pd.read_csv(sys.argv[2])
numeric = example.select_dtypes("number").columns
example[numeric] = example[numeric].astype("float64")  # the gateway sends numbers as doubles
method = sys.argv[4] if len(sys.argv) > 4 else "predict_proba"
signature = infer_signature(example, getattr(model, method)(example))
mlflow.sklearn.save_model(model, sys.argv[3], serialization_format="skops", pyfunc_predict_fn=method,
                          signature=signature,
                          # our own model: trust the types it was saved with
                          skops_trusted_types=sorted(sio.get_untrusted_types(data=sio.dumps(model))))
