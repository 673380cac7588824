"""LightGBM and XGBoost models loaded from their own formats (never pickle), alone or after a preprocessing.

An artifact is either the booster's own file - a LightGBM text model, an XGBoost JSON or UBJSON model -
or a zip bundle that adds what the booster's file cannot say:

    model.txt | model.json | model.ubj   the booster, in its library's own format (required)
    preprocessing.skops                  a fitted scikit-learn preprocessing (Pipeline or ColumnTransformer),
                                         loaded with skops and the deployment's trusted types, as the skops
                                         adapter does; the booster is then its last step
    classes.json                         the class labels in the booster's class order, e.g. ["<=50K", ">50K"]
                                         (default: the integers 0 .. k-1 the booster was trained on)

The booster becomes the final step of a scikit-learn Pipeline (LGBMClassifier / XGBClassifier around the
loaded booster), so scoring, the verified fast path and exact TreeSHAP grouped to raw features work as
for any scikit-learn pipeline. A regression booster (an identity-link objective: its prediction is the sum
of its leaves, in the model's units) becomes an LGBMRegressor / XGBRegressor and serves a regression
policy (loaded with positive_class None), explained exactly in its units; a bundle then has no classes.json.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np
import skops.io as sio
import xgboost as xgb
from sklearn.pipeline import Pipeline

from gateway.adapters.base import AdapterError, UntrustedArtifactError
from gateway.adapters.sklearn_common import SklearnClassifierAdapter

MAX_BUNDLE_BYTES = 512 * 1024 * 1024  # the uncompressed size a bundle may claim (a zip bomb is refused)
PREPROCESSING = "preprocessing.skops"
CLASSES = "classes.json"
#: Regression objectives whose prediction is the raw sum of the trees (no link function), so TreeSHAP in the
#: model's units is exact. Log-link objectives (poisson, gamma, tweedie) are refused.
LGBM_REGRESSION = ("regression", "regression_l1", "huber", "fair", "quantile", "mape")
XGB_REGRESSION = ("reg:squarederror", "reg:absoluteerror", "reg:pseudohubererror", "reg:quantileerror")


def _bundle(data: bytes, model_names: tuple[str, ...]) -> tuple[str, bytes, bytes | None, list[Any] | None] | None:
    """Return (model file name, model bytes, preprocessing bytes, class labels) of a zip bundle, or None."""
    if not data.startswith(b"PK\x03\x04"):
        return None
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = {info.filename: info for info in archive.infolist()}
    except zipfile.BadZipFile as exc:
        raise AdapterError(f"not a readable zip bundle: {exc}") from exc
    if sum(info.file_size for info in infos.values()) > MAX_BUNDLE_BYTES:
        raise AdapterError(f"the bundle unpacks to more than {MAX_BUNDLE_BYTES} bytes")
    unknown = sorted(set(infos) - {*model_names, PREPROCESSING, CLASSES})
    if unknown:
        raise AdapterError(f"the bundle has files this adapter does not read: {unknown}; "
                           f"it takes one of {list(model_names)}, and optionally {PREPROCESSING} and {CLASSES}")
    found = [n for n in model_names if n in infos]
    if len(found) != 1:
        raise AdapterError(f"the bundle must hold exactly one of {list(model_names)}; it holds {sorted(infos)}")
    model = archive.read(found[0])
    preprocessing = archive.read(PREPROCESSING) if PREPROCESSING in infos else None
    classes: list[Any] | None = None
    if CLASSES in infos:
        try:
            classes = json.loads(archive.read(CLASSES))
        except ValueError as exc:
            raise AdapterError(f"{CLASSES} is not JSON: {exc}") from exc
        if (not isinstance(classes, list) or len(classes) < 2 or len(set(map(str, classes))) != len(classes)
                or not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in classes)):
            raise AdapterError(f"{CLASSES} must be a list of at least two distinct strings or integers")
    return found[0], model, preprocessing, classes


def _preprocessing(data: bytes, config: dict[str, Any]) -> Any:
    trusted = list(config["SKOPS_TRUSTED_TYPES"])
    try:
        needed = sio.get_untrusted_types(data=data)
    except Exception as exc:  # skops raises many kinds on a corrupt file
        raise AdapterError(f"{PREPROCESSING} is not a readable skops artifact: {exc}") from exc
    untrusted = sorted(set(needed) - set(trusted))
    if untrusted:
        raise UntrustedArtifactError(
            f"{PREPROCESSING} needs types this deployment does not trust: {untrusted} "
            "(add them to GATEWAY_SKOPS_TRUSTED_TYPES only after reviewing them)"
        )
    try:
        return sio.loads(data, trusted=trusted)
    except Exception as exc:
        raise AdapterError(f"skops could not load {PREPROCESSING}: {exc}") from exc


def _pipeline(preprocessing: Any | None, estimator: Any) -> Pipeline:
    steps = list(preprocessing.steps) if isinstance(preprocessing, Pipeline) else (
        [("preprocess", preprocessing)] if preprocessing is not None else [])
    return Pipeline([*steps, ("model", estimator)])


class _BoosterAdapter(SklearnClassifierAdapter):
    """Shared loading: unpack, build the estimator from the booster, put it after the preprocessing."""

    model_files: ClassVar[tuple[str, ...]]

    @classmethod
    def _estimator(cls, name: str, data: bytes, classes: list[Any] | None) -> Any:
        raise NotImplementedError

    @classmethod
    def _raw_name(cls, data: bytes) -> str:
        raise NotImplementedError

    @classmethod
    def load(cls, data: bytes, *, positive_class: Any, feature_names: list[str], config: dict[str, Any]) -> _BoosterAdapter:
        unpacked = _bundle(data, cls.model_files)
        if unpacked is None:
            name, model, preprocessing, classes = cls._raw_name(data), data, None, None
        else:
            name, model, preprocessing, classes = unpacked
        estimator = cls._estimator(name, model, classes)
        prep = _preprocessing(preprocessing, config) if preprocessing is not None else None
        pipeline = _pipeline(prep, estimator)
        if prep is None:
            # A booster alone takes the raw features in its own order: they must be the manifest's, by name.
            own = [str(n) for n in getattr(estimator, "feature_names_in_", [])]
            if own and own != list(feature_names):
                missing = sorted(set(own) - set(feature_names))
                extra = sorted(set(feature_names) - set(own))
                if missing or extra:
                    raise AdapterError(f"the manifest's features do not match the model's: missing {missing}, "
                                       f"not used by the model {extra}")
        else:
            width = getattr(estimator, "n_features_in_", None)
            try:
                out = len(prep.get_feature_names_out())
            except Exception:  # noqa: BLE001 - a step without names: the first score will tell
                out = None
            if width is not None and out is not None and int(width) != out:
                raise AdapterError(f"the preprocessing gives {out} columns, the booster takes {width}")
        return cls(pipeline, positive_class=positive_class, feature_names=feature_names)

    def _own_columns(self, rows: Any) -> Any:
        # A booster alone: its own column order (checked equal, as a set, to the manifest's at load).
        own = getattr(self._model[-1], "feature_names_in_", None)
        return rows[[str(n) for n in own]] if own is not None else rows[self.feature_names]

    def probabilities(self, rows: Any) -> np.ndarray:
        if len(self._model.steps) > 1:
            return super().probabilities(rows)
        return np.asarray(self._model[-1].predict_proba(self._own_columns(rows)), dtype=float)

    def score(self, rows: Any) -> np.ndarray:
        if self.regression:
            if len(self._model.steps) > 1:
                return super().score(rows)
            return np.asarray(self._model[-1].predict(self._own_columns(rows)), dtype=float).ravel()
        return self.probabilities(rows)[:, self._index]


def _classes(classes: list[Any] | None, n: int) -> np.ndarray:
    if classes is None:
        return np.arange(n)
    if len(classes) != n:
        raise AdapterError(f"{CLASSES} names {len(classes)} classes, the booster has {n}")
    return np.asarray(classes, dtype=object if any(isinstance(c, str) for c in classes) else None)


class LightGBMAdapter(_BoosterAdapter):
    """A LightGBM classifier saved with `Booster.save_model` (its text format)."""

    kind = "lightgbm"
    model_files = ("model.txt",)

    @classmethod
    def _raw_name(cls, data: bytes) -> str:
        if not data.startswith(b"tree\n"):
            raise AdapterError("not a LightGBM text model (it starts with 'tree') nor a zip bundle holding model.txt")
        return "model.txt"

    @classmethod
    def _estimator(cls, name: str, data: bytes, classes: list[Any] | None) -> Any:
        try:
            booster = lgb.Booster(model_str=data.decode("utf-8"))
        except (UnicodeDecodeError, lgb.basic.LightGBMError) as exc:
            raise AdapterError(f"LightGBM could not read the text model: {exc}") from exc
        objective = str(booster.dump_model(num_iteration=1).get("objective", "")).split(" ")[0]
        n = int(booster.num_model_per_iteration())
        if objective in LGBM_REGRESSION:
            return cls._regressor(booster, objective, classes)
        if objective == "binary":
            n_classes = 2
        elif objective in ("multiclass", "multiclassova"):
            n_classes = n
        else:
            raise AdapterError(f"the LightGBM model's objective is {objective!r}; this adapter takes classifiers "
                               f"(binary, multiclass) and identity-link regressors {list(LGBM_REGRESSION)}")
        # One thread: a one-row prediction is microseconds of work, and starting OpenMP threads per call (or
        # competing with the serving workers for cores) costs milliseconds.
        estimator = lgb.LGBMClassifier(objective=objective, n_jobs=1)
        # What LGBMClassifier.fit sets, taken from the booster instead of training.
        estimator._Booster = booster
        estimator.fitted_ = True
        estimator._n_features = estimator._n_features_in = booster.num_feature()
        estimator._classes = _classes(classes, n_classes)
        estimator._n_classes = n_classes
        estimator._objective = objective
        estimator._other_params = {}
        estimator._best_iteration = booster.best_iteration
        estimator._best_score = {}
        estimator._evals_result = {}
        estimator._class_weight = None
        estimator._fitted_with_feature_names = not all(n.startswith("Column_") for n in booster.feature_name())
        return estimator  # feature_names_in_: the booster's names, unless it was trained without (Column_i)

    @classmethod
    def _regressor(cls, booster: lgb.Booster, objective: str, classes: list[Any] | None) -> Any:
        if classes is not None:
            raise AdapterError(f"the LightGBM model is a regressor ({objective}); its bundle has no {CLASSES}")
        estimator = lgb.LGBMRegressor(objective=objective, n_jobs=1)
        # What LGBMRegressor.fit sets, taken from the booster instead of training.
        estimator._Booster = booster
        estimator.fitted_ = True
        estimator._n_features = estimator._n_features_in = booster.num_feature()
        estimator._objective = objective
        estimator._other_params = {}
        estimator._best_iteration = booster.best_iteration
        estimator._best_score = {}
        estimator._evals_result = {}
        estimator._fitted_with_feature_names = not all(n.startswith("Column_") for n in booster.feature_name())
        return estimator


class XGBoostAdapter(_BoosterAdapter):
    """An XGBoost classifier saved with `save_model` as JSON (.json) or UBJSON (.ubj)."""

    kind = "xgboost"
    model_files = ("model.json", "model.ubj")

    @classmethod
    def _raw_name(cls, data: bytes) -> str:
        if data.lstrip().startswith(b'{"'):
            return "model.json"
        if data.startswith(b"{"):
            return "model.ubj"
        raise AdapterError("not an XGBoost JSON or UBJSON model nor a zip bundle holding model.json or model.ubj")

    @classmethod
    def _estimator(cls, name: str, data: bytes, classes: list[Any] | None) -> Any:
        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(data))
        except xgb.core.XGBoostError as exc:
            raise AdapterError(f"XGBoost could not read the {name.rsplit('.', 1)[1].upper()} model: {exc}") from exc
        config = json.loads(booster.save_config())
        objective = config["learner"]["objective"]["name"]
        if objective in XGB_REGRESSION:
            if classes is not None:
                raise AdapterError(f"the XGBoost model is a regressor ({objective}); its bundle has no {CLASSES}")
            regressor = xgb.XGBRegressor(n_jobs=1)  # one thread, as for LightGBM
            regressor.load_model(bytearray(data))
            return regressor
        if objective not in ("binary:logistic", "multi:softprob"):
            raise AdapterError(f"the XGBoost model's objective is {objective!r}; this adapter takes classifiers "
                               f"(binary:logistic, multi:softprob) and identity-link regressors {list(XGB_REGRESSION)}")
        n_classes = 2 if objective == "binary:logistic" else int(config["learner"]["learner_model_param"]["num_class"])
        estimator = LabelledXGBClassifier(n_jobs=1)  # one thread, as for LightGBM
        estimator.load_model(bytearray(data))
        estimator.n_classes_ = n_classes
        estimator.labels_ = _classes(classes, n_classes)
        return estimator


class LabelledXGBClassifier(xgb.XGBClassifier):
    """XGBClassifier whose classes are the bundle's labels (XGBoost itself knows only 0 .. k-1)."""

    labels_: np.ndarray

    @property
    def classes_(self) -> np.ndarray:
        return self.labels_
