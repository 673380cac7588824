"""The explainer interface, the explanation value object, and the machinery the exact explainers share.

Every explainer follows the scikit-learn contract: `__init__` stores its parameters unchanged,
`fit(background_raw)` sets trailing-underscore attributes and returns self, randomness comes from an
explicit `random_state`. `explain(rows_raw)` returns one `RawExplanation` per row whose attributions
are in raw-feature units (one entry per raw feature) and whose base value plus attributions equals the
model's output for that row in the stated output space.
"""

from __future__ import annotations

import abc
import inspect
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Union

import numpy as np

from explainers._transform import GiveUp, compile_transform
from explainers._version import __version__
from explainers.exceptions import (
    AdditivityError,
    NotFittedError,
    UnsupportedModelError,
    UnsupportedOutputSpaceError,
    UnsupportedTransformerError,
)
from explainers.grouping import (
    raw_feature_names,
    sources_matrix,
    split_pipeline,
    transformed_sources,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["OUTPUT_SPACES", "BaseExplainer", "ExactExplainer", "RawExplanation", "Rows"]

#: The output spaces an explanation can be stated in ("value": a regression model's own value, in its units).
OUTPUT_SPACES = ("log_odds", "probability", "value")

#: What `explain` accepts: a DataFrame of raw features, one record (feature name -> raw value), or a
#: list of records. Records skip building a DataFrame, which costs more than TreeSHAP for one row.
Rows = Union["pd.DataFrame", Mapping[str, Any], Sequence[Mapping[str, Any]]]


@dataclass(frozen=True)
class RawExplanation:
    """One row's attributions per raw feature, with everything needed to reproduce and audit them."""

    base_value: float
    attributions: dict[str, float]
    output: float
    output_space: str
    additivity_error: float
    method: str
    explainer_version: str
    shap_version: str
    background_size: int
    random_state: int
    positive_class: str | int | float | bool | None = None
    #: Features whose contribution is 0 for everybody with this row's value of them, by the model's
    #: structure and the background alone (a null player): a reader can know it without being told.
    null_features: tuple[str, ...] = ()
    #: Model-agnostic estimates only: per feature, the half-width of a ~95 % interval around its estimated
    #: attribution (Student-t quantile x standard error over samples); None when the values are exact.
    errors: dict[str, float] | None = None


class BaseExplainer(abc.ABC):
    """A SHAP explainer for one fitted model: `fit` on background rows, then `explain` raw rows."""

    #: Name in the registry.
    name: ClassVar[str]
    #: Value of `RawExplanation.method`.
    method: ClassVar[str]
    #: Whether attributions are exact (additivity checked against `tolerance`).
    exact: ClassVar[bool]

    # Parameters (set by subclasses' __init__) and fitted attributes (set by `fit`), declared for type checkers.
    model: Any
    output_space: str
    random_state: int
    positive_class: Any
    feature_names_: list[str]
    shap_version_: str
    background_size_: int
    positive_class_: Any
    class_index_: int | None

    # -- the model probe ---------------------------------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def why_unsupported(cls, model: Any) -> str | None:
        """Return why this explainer cannot explain `model`, or None when it can."""

    @classmethod
    def supports(cls, model: Any) -> bool:
        """Return whether this explainer can explain `model`."""
        return cls.why_unsupported(model) is None

    @classmethod
    @abc.abstractmethod
    def output_spaces_for(cls, model: Any) -> tuple[str, ...]:
        """Return the output spaces this explainer explains `model` in additively."""

    @classmethod
    def check_output_space(cls, model: Any, output_space: str) -> None:
        """Raise UnsupportedOutputSpaceError unless `model` can be explained in `output_space`."""
        supported = cls.output_spaces_for(model)
        if output_space not in supported:
            raise UnsupportedOutputSpaceError(cls.name, output_space, supported, cls._output_space_hint(output_space))

    @classmethod
    def _output_space_hint(cls, output_space: str) -> str:
        if output_space not in OUTPUT_SPACES:
            return f"output spaces are {', '.join(OUTPUT_SPACES)}"
        return ""

    # -- the scikit-learn contract -----------------------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return sorted(
            p.name
            for p in signature.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Return the constructor parameters."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> BaseExplainer:
        """Set constructor parameters; refit before explaining again."""
        valid = self._param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"invalid parameter {key!r} for {type(self).__name__}; valid: {', '.join(valid)}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if k != "model")
        return f"{type(self).__name__}({type(self.model).__name__}, {params})"

    @abc.abstractmethod
    def fit(self, background_raw: pd.DataFrame) -> BaseExplainer:
        """Build the explainer against background rows (raw features, as the model receives them)."""

    @abc.abstractmethod
    def explain(self, rows_raw: Rows) -> list[RawExplanation]:
        """Return one explanation per row of raw features."""

    @property
    def method_name(self) -> str:
        """Return the method recorded in explanations (fit may refine the class's `method`)."""
        return str(getattr(self, "method_", self.method))

    def _check_fitted(self) -> None:
        if not hasattr(self, "feature_names_"):
            raise NotFittedError(self)

    def _check_model(self) -> None:
        reason = self.why_unsupported(self.model)
        if reason is not None:
            raise UnsupportedModelError(self.model, [self.name], {self.name: reason})
        self.check_output_space(self.model, self.output_space)

    def _package(
        self,
        raw: np.ndarray,
        base: float | np.ndarray,
        output: np.ndarray,
        error: np.ndarray,
        nulls: np.ndarray | None = None,
        errors: np.ndarray | None = None,
    ) -> list[RawExplanation]:
        """Turn per-row arrays into explanation objects."""
        names = self.feature_names_
        n = len(output)
        null_names = [tuple(name for name, null in zip(names, row, strict=True) if null) for row in nulls.tolist()] \
            if nulls is not None else [()] * n
        ses = [dict(zip(names, row, strict=True)) for row in errors.tolist()] \
            if errors is not None else [None] * n
        bases = np.broadcast_to(np.asarray(base, dtype=np.float64), output.shape).tolist()
        common = {
            "output_space": self.output_space,
            "method": self.method_name,
            "explainer_version": __version__,
            "shap_version": self.shap_version_,
            "background_size": self.background_size_,
            "random_state": self.random_state,
            "positive_class": self.positive_class_,
        }
        return [
            RawExplanation(base_value=b, attributions=dict(zip(names, row, strict=False)), output=o, additivity_error=e,
                           null_features=nf, errors=se, **common)
            for b, row, o, e, nf, se in zip(bases, raw.tolist(), output.tolist(), error.tolist(), null_names, ses,
                                            strict=False)
        ]


# -- helpers shared by all explainers ------------------------------------------------------------


def import_shap() -> ModuleType:
    """Import shap on first use (it takes about 2 s), silencing only a deprecation raised inside its plots.

    shap 0.51's plotting module calls matplotlib's ``Colormap.set_bad/set_over/set_under`` at import,
    which matplotlib reports as PendingDeprecationWarning; nothing a user of this library can act on, and an error
    wherever warnings are errors (this project's tests).
    """
    module = sys.modules.get("shap")
    if module is not None:
        return module
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"The set_(bad|over|under) function will be deprecated",
            category=PendingDeprecationWarning,
        )
        import shap
    return shap


def python_scalar(value: Any) -> Any:
    """Return a numpy scalar as the equivalent Python value."""
    return value.item() if isinstance(value, np.generic) else value


def resolve_positive_class(estimator: Any, positive_class: Any) -> tuple[Any, int]:
    """Return (label, column index in classes_) of the class the attributions point toward."""
    classes = getattr(estimator, "classes_", None)
    if classes is None:
        raise ValueError(f"{type(estimator).__name__} has no classes_: is it a fitted classifier?")
    labels = [python_scalar(c) for c in np.asarray(classes).tolist()]
    if positive_class is None:
        if len(labels) != 2:
            raise ValueError(f"positive_class is required for a model with classes {labels}")
        return labels[1], 1
    for i, label in enumerate(labels):
        if label == positive_class:
            return label, i
    for i, label in enumerate(labels):  # "1" in a manifest for the integer class 1
        if str(label) == str(positive_class):
            return label, i
    raise ValueError(f"positive_class {positive_class!r} is not one of the model's classes {labels}")


def sample_rows(frame: pd.DataFrame, size: int | None, random_state: int) -> pd.DataFrame:
    """Return at most `size` rows of `frame`, chosen reproducibly, in their original order."""
    n = len(frame)
    if size is None or n <= size:
        return frame
    rng = np.random.default_rng(random_state)
    return frame.iloc[np.sort(rng.choice(n, size=size, replace=False))]


def select_columns(frame: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Return `frame` restricted to `names` in that order, or raise naming the missing columns."""
    labels = frame.columns.tolist()
    if labels == list(names):
        return frame
    lookup = {str(label): label for label in labels}  # "0" finds the integer column label 0
    missing = [n for n in names if n not in lookup]
    if missing:
        raise ValueError(f"rows lack the raw feature columns {missing}")
    return frame.loc[:, [lookup[n] for n in names]]


def _records(rows: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [rows] if isinstance(rows, Mapping) else list(rows)


def record_values(rows: Mapping[str, Any] | Sequence[Mapping[str, Any]], names: Sequence[str]) -> np.ndarray:
    """Return records (feature name -> raw value) as a 2-D object array in `names` order."""
    records = _records(rows)
    missing = sorted({n for record in records for n in names if n not in record})
    if missing:
        raise ValueError(f"rows lack the raw feature columns {missing}")
    values = np.empty((len(records), len(names)), dtype=object)
    for i, record in enumerate(records):
        values[i] = [record[n] for n in names]
    return values


def as_frame(rows: Rows, names: Sequence[str]) -> pd.DataFrame:
    """Return rows (a DataFrame, one record or a list of records) as a DataFrame with columns `names`."""
    if hasattr(rows, "iloc"):
        return select_columns(rows, names)  # type: ignore[arg-type]
    import pandas as pd

    record_values(rows, names)  # the same check for missing features
    return pd.DataFrame.from_records(_records(rows), columns=list(names))  # type: ignore[arg-type]


def row_values(frame: pd.DataFrame) -> np.ndarray:
    """Return the raw values as a 2-D array cheaply (one row through a Series avoids pandas' slow path)."""
    if len(frame) == 1:
        return frame.iloc[0].to_numpy()[None, :]
    return frame.to_numpy(dtype=object)


def dense(matrix: Any) -> np.ndarray:
    """Return a transformed matrix (sparse, DataFrame or array) as a float64 array."""
    if hasattr(matrix, "toarray"):
        matrix = matrix.toarray()
    return np.asarray(matrix, dtype=np.float64)


class ExactExplainer(BaseExplainer):
    """Shared fit/explain for exact SHAP on the final estimator of a (possibly) preprocessed model.

    Subclasses build the shap explainer (`_build`), compute the transformed-column attributions in the
    explained space (`_shap_values`) and call the model for its output (`_model_output`).
    """

    exact = True

    def __init__(
        self,
        model: Any,
        *,
        output_space: str = "probability",
        positive_class: Any = None,
        background_size: int | None = None,
        random_state: int = 0,
        tolerance: float = 1e-6,
    ) -> None:
        self.model = model
        self.output_space = output_space
        self.positive_class = positive_class
        self.background_size = background_size
        self.random_state = random_state
        self.tolerance = tolerance

    @abc.abstractmethod
    def _build(self, estimator: Any, background: np.ndarray) -> tuple[Any, float]:
        """Return (shap explainer, base value in the explained space toward the positive class)."""

    @abc.abstractmethod
    def _shap_values(self, transformed: np.ndarray) -> np.ndarray:
        """Return (n_rows, n_transformed) attributions in the explained space toward the positive class."""

    @abc.abstractmethod
    def _model_output(self, transformed: np.ndarray) -> np.ndarray:
        """Return the final estimator's output for transformed rows in the explained space."""

    @classmethod
    def _why_preprocessing_unsupported(cls, preprocessor: Any) -> str | None:
        if preprocessor is None:
            return None
        try:
            transformed_sources(preprocessor)
        except UnsupportedTransformerError as exc:
            return str(exc)
        return None

    def fit(self, background_raw: pd.DataFrame) -> ExactExplainer:
        """Build the shap explainer, the column-group matrix and the compiled transform once."""
        self._check_model()
        shap = import_shap()
        preprocessor, estimator = split_pipeline(self.model)
        names = _model_feature_names(preprocessor if preprocessor is not None else estimator, background_raw)
        background = sample_rows(select_columns(background_raw, names), self.background_size, self.random_state)
        if len(background) == 0:
            raise ValueError("the background data has no rows")
        # A regressor's value has no class to point toward.
        label, index = (None, None) if self.output_space == "value" else resolve_positive_class(estimator,
                                                                                               self.positive_class)
        self.positive_class_ = label
        self.class_index_ = index
        values = row_values(background)
        self._preprocessor = preprocessor
        self._input_has_names = preprocessor is not None and hasattr(preprocessor, "feature_names_in_")
        self._estimator = estimator
        self._estimator_names = getattr(estimator, "feature_names_in_", None)
        if preprocessor is None:
            transformed = dense(background.to_numpy(dtype=np.float64))
            sources = np.arange(len(names), dtype=np.intp)
            self._fast_transform: Any = _to_float
            self.transformed_feature_names_ = list(names)
        else:
            transformed = dense(preprocessor.transform(self._preprocessor_input(background)))
            sources = transformed_sources(preprocessor, names)
            self._fast_transform = _verified_fast_transform(preprocessor, values, transformed)
            self.transformed_feature_names_ = _names_out(preprocessor, transformed.shape[1])
        if len(sources) != transformed.shape[1]:
            raise UnsupportedTransformerError(
                "<preprocessing>",
                preprocessor,
                f"traced {len(sources)} columns, transform gives {transformed.shape[1]}",
            )
        self.feature_names_ = list(names)
        self.sources_ = sources
        self.group_matrix_ = sources_matrix(sources, len(names))
        self.background_transformed_ = transformed
        self.fast_transform_ = self._fast_transform is not None
        self.background_size_ = len(background)
        self.shap_version_ = str(shap.__version__)
        self.shap_explainer_, base = self._build(estimator, transformed)
        self.base_value_ = float(base)
        # The base value must be the mean model output over the background: this is the baseline
        # the person is told about, so check shap's parse of the model against the model itself.
        mean_output = float(np.mean(self._model_output(transformed)))
        if abs(mean_output - self.base_value_) > self.tolerance:
            raise AdditivityError(
                self.method_name,
                self.output_space,
                abs(mean_output - self.base_value_),
                self.tolerance,
                "base value differs from the mean model output over the background",
            )
        return self

    def transform(self, rows_raw: Rows) -> np.ndarray:
        """Return the rows as the final estimator sees them (dense float64)."""
        self._check_fitted()
        names = self.feature_names_
        frame: pd.DataFrame | None = None
        if hasattr(rows_raw, "iloc"):
            frame = select_columns(rows_raw, names)  # type: ignore[arg-type]
            values = row_values(frame) if self._fast_transform is not None else None
        else:
            values = record_values(rows_raw, names)  # type: ignore[arg-type]
        if self._fast_transform is not None:
            try:
                return self._fast_transform(values)
            except GiveUp:
                pass
        if frame is None:
            frame = as_frame(rows_raw, names)
        if self._preprocessor is None:
            return frame.to_numpy(dtype=np.float64)
        return dense(self._preprocessor.transform(self._preprocessor_input(frame)))

    def explain(self, rows_raw: Rows, outputs: Sequence[float] | np.ndarray | None = None,
                margins: Sequence[float] | np.ndarray | None = None) -> list[RawExplanation]:
        """Explain many rows with one shap call; check additivity against the model's own output.

        `outputs`, when the caller already has the model's outputs for these rows in probability space (a
        score it just computed with the same model), are used instead of predicting again: additivity is
        then checked against them, which also checks that the explainer explains the model that scored.
        `margins`, with `outputs`: the same model's raw margins of classes_[1] for these rows (binary boosting
        scores by its margin), used where the explainer would compute them; the sums of its own tree values
        are then checked against them (through the outputs).
        """
        transformed = self.transform(rows_raw)
        if transformed.shape[0] == 0:
            return []
        given = None
        if margins is not None and outputs is not None and self.output_space == "probability":
            given = np.asarray(margins, dtype=np.float64).reshape(-1)
            if given.shape[0] != transformed.shape[0]:
                raise ValueError(f"{given.shape[0]} margins given for {transformed.shape[0]} rows")
        raw = self._raw_values(transformed, given)
        if outputs is not None and self.output_space == "probability":
            output = np.asarray(outputs, dtype=np.float64).reshape(-1)
            if output.shape[0] != transformed.shape[0]:
                raise ValueError(f"{output.shape[0]} outputs given for {transformed.shape[0]} rows")
        else:
            output = self._model_output(transformed)
        error = np.abs(self.base_value_ + raw.sum(axis=1) - output)
        limit = self.tolerance + self._output_rounding(output)
        if error.size and bool(np.any(error > limit)):
            worst = int((error - limit).argmax())
            raise AdditivityError(
                self.method_name, self.output_space, float(error[worst]), float(limit[worst]), f"row {worst}"
            )
        return self._package(raw, self.base_value_, output, error, self._null_players(transformed))

    def _output_rounding(self, output: np.ndarray) -> np.ndarray:
        """Return how far the model's own output may be from the exact sum by its arithmetic alone (default 0:
        float64 models); a model that predicts in float32 adds a few units in the last place of its output."""
        return np.zeros_like(output, dtype=np.float64)

    def _raw_values(self, transformed: np.ndarray, margins: np.ndarray | None = None) -> np.ndarray:
        """Return (n_rows, n_raw) attributions per raw feature (default: column attributions summed).

        `margins`: the model's raw margins of these rows when the caller has them (explainers that need them)."""
        return self._shap_values(transformed) @ self.group_matrix_

    def _null_players(self, transformed: np.ndarray) -> np.ndarray:
        """Return (n_rows, n_raw) booleans: the raw feature cannot change the model's output for that row.

        The default is what the background alone shows, whatever the model: a feature whose encoded
        columns every background row shares with the row is never swapped, so it is a null player.
        """
        background = self.background_transformed_
        nulls = np.empty((transformed.shape[0], len(self.feature_names_)), dtype=bool)
        for g in range(len(self.feature_names_)):
            columns = self.sources_ == g
            same = (background[None, :, columns] == transformed[:, None, columns]) | (
                np.isnan(background[None, :, columns]) & np.isnan(transformed[:, None, columns])
            )
            nulls[:, g] = same.all(axis=(1, 2))
        return nulls

    def _preprocessor_input(self, rows: pd.DataFrame) -> Any:
        return rows if self._input_has_names else rows.to_numpy()

    def _estimator_input(self, transformed: np.ndarray) -> Any:
        if self._estimator_names is None:
            return transformed
        import pandas as pd

        return pd.DataFrame(transformed, columns=self._estimator_names)


def _verified_fast_transform(preprocessor: Any, values: np.ndarray, expected: np.ndarray) -> Any:
    """Return the compiled transform if it reproduces scikit-learn's output on the background exactly."""
    try:
        fast = compile_transform(preprocessor)
        same = np.array_equal(fast(values), expected, equal_nan=True)
    except Exception:  # noqa: BLE001 - NotCompilable, GiveUp, or a user function that wants a DataFrame
        return None
    return fast if same else None


def _to_float(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def _model_feature_names(first_step: Any, background: pd.DataFrame) -> list[str]:
    """Return the raw feature names: the model's fitted input names, else the background's columns."""
    if hasattr(first_step, "feature_names_in_"):
        return raw_feature_names(first_step)
    n = getattr(first_step, "n_features_in_", None)
    columns = [str(c) for c in background.columns]
    if n is not None and int(n) != len(columns):
        raise ValueError(f"the model takes {n} features, the background has {len(columns)} columns")
    return columns


def _names_out(preprocessor: Any, width: int) -> list[str]:
    try:
        names = [str(n) for n in preprocessor.get_feature_names_out()]
    except (AttributeError, ValueError, TypeError):
        names = []
    return names if len(names) == width else [f"t{i}" for i in range(width)]
