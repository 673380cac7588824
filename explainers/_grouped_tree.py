"""Exact interventional TreeSHAP with groups of columns as players, compiled with numba.

A raw feature encoded into several columns (one-hot) is one player: its columns are taken from the
person (x) or from a background row (z) together. For one pair (x, z) and one tree, walk the tree from
the root; at a split on a column of group g:

- if x and z go the same way, follow it (g need not be decided here);
- else if g is not yet assigned on this path, branch twice: g taken from x (follow x's side) and g
  taken from z (follow z's side);
- else follow the side of the assignment already made.

A leaf reached with A = groups assigned to x and B = groups assigned to z is the tree's output for
every coalition S with A ⊆ S and B ∩ S = ∅. Summing the Shapley weights over those coalitions gives each
i in A  ``+v (|A|-1)! |B|! / (|A|+|B|)!`` and each j in B ``-v |A|! (|B|-1)! / (|A|+|B|)!`` (the
values of the pair game v(S) = f(x_S, z_S̄)); averaging over background rows gives the interventional
Shapley values of the raw features. A tree's value is linear in its leaves, so an ensemble that adds
(boosting margin) or averages (forest probability) its trees is explained by adding or averaging.

The walk of a pair depends on z only through the side z takes at each split of the tree. Background rows
that one tree sends the same way at every one of its splits are one class for that tree (`background_classes`,
computed once per background): the tree is walked once per class, with the class's summed weight, instead of
once per background row (the example's 100 depth-3 trees see 22 classes of 100 rows each, on average). The
values are the same sums, grouped: equal up to the rounding of the additions.

Trees are flattened once (`flatten`) into parallel arrays; the weights are a table indexed by
(|A|, |B|). Each split keeps its own rule for missing values so that the walk sends a row where the
model sends it:

- ``MISSING_LEFT_FLAG`` (scikit-learn trees and HistGradientBoosting): NaN goes to `default_left`,
  else ``value <= threshold`` goes left;
- ``MISSING_LGBM_NONE`` / ``_ZERO`` / ``_NAN`` (LightGBM's missing_type None / Zero / NaN).

scikit-learn's DecisionTree-based models compare float32 inputs: their rows are cast to float32 (and
back) before the walk, as `predict` does.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BackgroundClasses", "FlatTrees", "background_classes", "flatten", "grouped_values", "shapley_weights",
           "why_not_flattenable"]

MISSING_LEFT_FLAG = 0
MISSING_LGBM_NONE = 1
MISSING_LGBM_ZERO = 2
MISSING_LGBM_NAN = 3


@dataclass(frozen=True)
class FlatTrees:
    """An ensemble as arrays: node i splits on column `feature[i]` (-1 for a leaf) of the input."""

    roots: np.ndarray  # (n_trees,) int64: index of each tree's root
    feature: np.ndarray  # (n_nodes,) int64
    threshold: np.ndarray  # (n_nodes,) float64
    left: np.ndarray  # (n_nodes,) int64
    right: np.ndarray  # (n_nodes,) int64
    default_left: np.ndarray  # (n_nodes,) bool: where a missing value goes
    missing: np.ndarray  # (n_nodes,) int8: MISSING_* rule of the split
    value: np.ndarray  # (n_nodes,) float64: leaf value (scaled: learning rate, 1/n_trees)
    float32_input: bool  # compare inputs as float32, as scikit-learn's trees do

    def prepare(self, rows: np.ndarray) -> np.ndarray:
        """Return rows as the trees compare them (float32-rounded for scikit-learn trees)."""
        rows = np.ascontiguousarray(rows, dtype=np.float64)
        if self.float32_input:
            return rows.astype(np.float32).astype(np.float64)
        return rows


def _kind_name(estimator: Any) -> str:
    return f"{type(estimator).__module__.split('.')[0]}.{type(estimator).__name__}"


def why_not_flattenable(estimator: Any) -> str | None:
    """Return why `estimator`'s trees cannot be flattened, or None when they can."""
    name = type(estimator).__name__
    module = type(estimator).__module__.split(".")[0]
    if module == "sklearn":
        if name == "HistGradientBoostingClassifier":
            if getattr(estimator, "_preprocessor", None) is not None:
                return "HistGradientBoosting with its own categorical preprocessing"
            if len(getattr(estimator, "classes_", ())) != 2:
                return "only binary HistGradientBoosting is flattened"
            return None
        if name == "GradientBoostingClassifier":
            if len(getattr(estimator, "classes_", ())) != 2:
                return "only binary GradientBoosting is flattened"
            return None
        if name in ("RandomForestClassifier", "ExtraTreesClassifier", "DecisionTreeClassifier"):
            return None
        return f"{name} is not a flattenable scikit-learn tree model"
    if module == "lightgbm" and name in ("LGBMClassifier", "LGBMRegressor"):
        if name == "LGBMClassifier" and getattr(estimator, "n_classes_", 2) != 2:
            return "only binary LightGBM is flattened"
        for tree in estimator.booster_.dump_model()["tree_info"]:
            if _lgbm_has_categorical(tree["tree_structure"]):
                return "LightGBM with categorical splits"
        return None
    return f"{module}.{name} trees are not flattened"


def flatten(estimator: Any, class_index: int) -> tuple[FlatTrees, str]:
    """Return the estimator's trees as arrays and "margin" (values add to the raw margin of classes_[1])
    or "probability" (values add to the probability of classes_[class_index])."""
    name = type(estimator).__name__
    builder = _Builder()
    if name == "GradientBoostingClassifier":
        scale = float(estimator.learning_rate)
        for tree in estimator.estimators_[:, 0]:
            builder.add_sklearn(tree.tree_, tree.tree_.value[:, 0, 0] * scale)
        return builder.build(float32_input=True), "margin"
    if name in ("RandomForestClassifier", "ExtraTreesClassifier", "DecisionTreeClassifier"):
        trees = [estimator] if name == "DecisionTreeClassifier" else list(estimator.estimators_)
        for tree in trees:
            values = tree.tree_.value[:, 0, :]
            totals = values.sum(axis=1)
            totals[totals == 0] = 1.0
            builder.add_sklearn(tree.tree_, values[:, class_index] / totals / len(trees))
        return builder.build(float32_input=True), "probability"
    if name == "HistGradientBoostingClassifier":
        for predictors in estimator._predictors:
            builder.add_hist(predictors[0].nodes)
        return builder.build(float32_input=False), "margin"
    if name in ("LGBMClassifier", "LGBMRegressor"):  # a regressor's margin is its value (identity link)
        for tree in estimator.booster_.dump_model()["tree_info"]:
            builder.add_lgbm(tree["tree_structure"])
        return builder.build(float32_input=False), "margin"
    raise TypeError(f"{_kind_name(estimator)} cannot be flattened")


class _Builder:
    def __init__(self) -> None:
        self.roots: list[int] = []
        self.feature: list[int] = []
        self.threshold: list[float] = []
        self.left: list[int] = []
        self.right: list[int] = []
        self.default_left: list[bool] = []
        self.missing: list[int] = []
        self.value: list[float] = []

    def _extend(self, feature: Any, threshold: Any, left: Any, right: Any, default_left: Any, missing: Any,
                value: Any) -> None:
        offset = len(self.feature)
        self.roots.append(offset)
        feature = np.asarray(feature, dtype=np.int64)
        leaf = feature < 0
        self.feature.extend(feature.tolist())
        self.threshold.extend(np.asarray(threshold, dtype=np.float64).tolist())
        self.left.extend(np.where(leaf, -1, np.asarray(left, dtype=np.int64) + offset).tolist())
        self.right.extend(np.where(leaf, -1, np.asarray(right, dtype=np.int64) + offset).tolist())
        self.default_left.extend(np.asarray(default_left, dtype=bool).tolist())
        self.missing.extend(np.asarray(missing, dtype=np.int8).tolist())
        self.value.extend(np.where(leaf, np.asarray(value, dtype=np.float64), 0.0).tolist())

    def add_sklearn(self, tree: Any, leaf_values: np.ndarray) -> None:
        leaf = tree.children_left < 0
        feature = np.where(leaf, -1, tree.feature)
        # NaN goes where the fitted tree sends it (scikit-learn >= 1.3 records it per split); without the
        # record, `nan <= threshold` is false: right.
        default_left = getattr(tree, "missing_go_to_left", np.zeros(tree.node_count, dtype=np.uint8)).astype(bool)
        n = tree.node_count
        self._extend(feature, tree.threshold, tree.children_left, tree.children_right, default_left,
                     np.full(n, MISSING_LEFT_FLAG), leaf_values)

    def add_hist(self, nodes: np.ndarray) -> None:
        leaf = nodes["is_leaf"].astype(bool)
        feature = np.where(leaf, -1, nodes["feature_idx"])
        self._extend(feature, nodes["num_threshold"], nodes["left"], nodes["right"],
                     nodes["missing_go_to_left"].astype(bool), np.full(len(nodes), MISSING_LEFT_FLAG), nodes["value"])

    def add_lgbm(self, root: dict[str, Any]) -> None:
        feature: list[int] = []
        threshold: list[float] = []
        left: list[int] = []
        right: list[int] = []
        default_left: list[bool] = []
        missing: list[int] = []
        value: list[float] = []
        rules = {"None": MISSING_LGBM_NONE, "Zero": MISSING_LGBM_ZERO, "NaN": MISSING_LGBM_NAN}

        def visit(node: dict[str, Any]) -> int:
            index = len(feature)
            feature.append(-1)
            threshold.append(0.0)
            left.append(-1)
            right.append(-1)
            default_left.append(False)
            missing.append(MISSING_LGBM_NONE)
            value.append(0.0)
            if "leaf_value" in node or "split_feature" not in node:
                value[index] = float(node.get("leaf_value", 0.0))
                return index
            feature[index] = int(node["split_feature"])
            threshold[index] = float(node["threshold"])
            default_left[index] = bool(node["default_left"])
            missing[index] = rules[str(node["missing_type"])]
            left[index] = visit(node["left_child"])
            right[index] = visit(node["right_child"])
            return index

        visit(root)
        self._extend(feature, threshold, left, right, default_left, missing, value)

    def build(self, *, float32_input: bool) -> FlatTrees:
        return FlatTrees(
            roots=np.asarray(self.roots, dtype=np.int64),
            feature=np.asarray(self.feature, dtype=np.int64),
            threshold=np.asarray(self.threshold, dtype=np.float64),
            left=np.asarray(self.left, dtype=np.int64),
            right=np.asarray(self.right, dtype=np.int64),
            default_left=np.asarray(self.default_left, dtype=np.bool_),
            missing=np.asarray(self.missing, dtype=np.int8),
            value=np.asarray(self.value, dtype=np.float64),
            float32_input=float32_input,
        )


def _lgbm_has_categorical(node: dict[str, Any]) -> bool:
    if "split_feature" not in node:
        return False
    if node.get("decision_type", "<=") != "<=":
        return True
    return _lgbm_has_categorical(node["left_child"]) or _lgbm_has_categorical(node["right_child"])


@functools.lru_cache(maxsize=32)
def shapley_weights(n_players: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (gain, loss) tables: gain[a, b] = (a-1)! b! / (a+b)!, loss[a, b] = a! (b-1)! / (a+b)!."""
    size = n_players + 1
    gain = np.zeros((size, size), dtype=np.float64)
    loss = np.zeros((size, size), dtype=np.float64)
    for a in range(size):
        for b in range(size):
            if a >= 1:
                gain[a, b] = 1.0 / (a * math.comb(a + b, a))
            if b >= 1:
                loss[a, b] = 1.0 / (b * math.comb(a + b, b))
    return gain, loss


# -- the compiled walk -------------------------------------------------------------------------------

_KERNEL: Any = None


def _kernel() -> Any:
    """Compile the walk on first use (numba is imported here, not when the library is imported)."""
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _compile()
    return _KERNEL


def _compile() -> Any:
    import numba

    @numba.njit(cache=False, inline="always")
    def goes_left(value: float, threshold: float, default_left: bool, missing: int) -> bool:
        if missing == MISSING_LEFT_FLAG:
            if np.isnan(value):
                return default_left
            return value <= threshold
        if np.isnan(value) and missing != MISSING_LGBM_NAN:
            value = 0.0
        if (missing == MISSING_LGBM_ZERO and -1e-35 <= value <= 1e-35) or (
            missing == MISSING_LGBM_NAN and np.isnan(value)
        ):
            return default_left
        return value <= threshold

    @numba.njit(cache=False, inline="always")  # called once per tree and class: no call overhead
    def walk_tree(  # type: ignore[no-untyped-def]
        root, x, z, weight, feature, threshold, left, right, default_left, missing, value, group_of, gain, loss,
        out, side, path, stack_node, stack_depth, stack_group, stack_side,
    ):
        # Adds `weight` times the pair (x, z)'s values in the tree at `root` to out.
        # side[g]: 0 unassigned, 1 taken from x, 2 taken from z; path[:depth] lists assigned groups.
        top = 0
        stack_node[0] = root
        stack_depth[0] = 0
        stack_group[0] = -1
        stack_side[0] = 0
        depth = 0
        while top >= 0:
            node = stack_node[top]
            d = stack_depth[top]
            g_new = stack_group[top]
            s_new = stack_side[top]
            top -= 1
            while depth > d:  # undo the assignments of the subtree just finished
                depth -= 1
                side[path[depth]] = 0
            if g_new >= 0:
                side[g_new] = s_new
                path[depth] = g_new
                depth += 1
            while True:
                f = feature[node]
                if f < 0:
                    v = value[node]
                    if depth > 0 and v != 0.0:
                        na = 0
                        for k in range(depth):
                            if side[path[k]] == 1:
                                na += 1
                        nb = depth - na
                        wa = weight * v * gain[na, nb]
                        wb = weight * v * loss[na, nb]
                        for k in range(depth):
                            g = path[k]
                            if side[g] == 1:
                                out[g] += wa
                            else:
                                out[g] -= wb
                    break
                x_left = goes_left(x[f], threshold[node], default_left[node], missing[node])
                z_left = goes_left(z[f], threshold[node], default_left[node], missing[node])
                x_next = left[node] if x_left else right[node]
                if x_left == z_left:
                    node = x_next
                    continue
                z_next = left[node] if z_left else right[node]
                g = group_of[f]
                if side[g] == 1:
                    node = x_next
                elif side[g] == 2:
                    node = z_next
                else:
                    # branch: g from z later (pushed), g from x now
                    top += 1
                    stack_node[top] = z_next
                    stack_depth[top] = depth
                    stack_group[top] = g
                    stack_side[top] = 2
                    side[g] = 1
                    path[depth] = g
                    depth += 1
                    node = x_next
        while depth > 0:
            depth -= 1
            side[path[depth]] = 0

    @numba.njit(cache=False, nogil=True)  # releases the GIL: parts of one matrix run on several cores at once
    def grouped(  # type: ignore[no-untyped-def]
        X, Z, roots, feature, threshold, left, right, default_left, missing, value, group_of, n_groups, gain, loss,
        scale, class_start, class_row, class_of,
    ):
        n = X.shape[0]
        m = Z.shape[0]
        n_trees = roots.shape[0]
        result = np.zeros((n, n_groups), dtype=np.float64)
        weight = np.zeros(class_row.shape[0], dtype=np.float64)
        side = np.zeros(n_groups, dtype=np.int8)
        cap = n_groups + 2
        path = np.zeros(cap, dtype=np.int64)
        stack_node = np.zeros(cap + 1, dtype=np.int64)
        stack_depth = np.zeros(cap + 1, dtype=np.int64)
        stack_group = np.zeros(cap + 1, dtype=np.int64)
        stack_side = np.zeros(cap + 1, dtype=np.int8)
        for i in range(n):
            # A class's weight: the sum of its rows' factors (1 each, or the per-pair rescaling of row i).
            weight[:] = 0.0
            for t in range(n_trees):
                for j in range(m):
                    weight[class_of[t, j]] += scale[i, j]
            out = result[i]
            for t in range(n_trees):
                for c in range(class_start[t], class_start[t + 1]):
                    w = weight[c]
                    if w != 0.0:
                        walk_tree(roots[t], X[i], Z[class_row[c]], w, feature, threshold, left, right,
                                  default_left, missing, value, group_of, gain, loss, out, side, path, stack_node,
                                  stack_depth, stack_group, stack_side)
            for g in range(n_groups):
                out[g] /= m
        return result

    @numba.njit(cache=False)
    def sides(Z, feature, threshold, default_left, missing):  # type: ignore[no-untyped-def]
        # sides[j, node]: background row j goes left at the split (False at leaves).
        result = np.zeros((Z.shape[0], feature.shape[0]), dtype=np.bool_)
        for j in range(Z.shape[0]):
            for node in range(feature.shape[0]):
                f = feature[node]
                if f >= 0:
                    result[j, node] = goes_left(Z[j, f], threshold[node], default_left[node], missing[node])
        return result

    @numba.njit(cache=False)
    def null_groups(X, Z, feature, threshold, default_left, missing, group_of, n_groups):  # type: ignore[no-untyped-def]
        # A group is a null player for row x when at every split on its columns x and every background
        # row go the same way: then swapping it never changes any tree's output.
        n = X.shape[0]
        result = np.ones((n, n_groups), dtype=np.bool_)
        for i in range(n):
            for node in range(feature.shape[0]):
                f = feature[node]
                if f < 0:
                    continue
                g = group_of[f]
                if not result[i, g]:
                    continue
                x_left = goes_left(X[i, f], threshold[node], default_left[node], missing[node])
                for j in range(Z.shape[0]):
                    if goes_left(Z[j, f], threshold[node], default_left[node], missing[node]) != x_left:
                        result[i, g] = False
                        break
        return result

    return grouped, null_groups, sides


@dataclass(frozen=True)
class BackgroundClasses:
    """For each tree, the background rows it cannot tell apart: the same side at every one of its splits."""

    start: np.ndarray  # (n_trees + 1,) int64: tree t's classes are start[t]:start[t + 1]
    row: np.ndarray  # (n_classes,) int64: a background row of each class (any: they walk alike)
    of: np.ndarray  # (n_trees, n_background) int64: the class of background row j in tree t

    @property
    def mean_per_tree(self) -> float:
        """How many walks a tree costs per explained row, on average (the background's size at most)."""
        return float(self.row.shape[0] / max(1, self.of.shape[0]))


def background_classes(trees: FlatTrees, background: np.ndarray) -> BackgroundClasses:
    """Group the background rows, tree by tree, by the side they take at each of the tree's splits.

    Computed once per explainer (the background is fixed): a tree's nodes are contiguous from its root."""
    _, _, sides = _kernel()
    Z = trees.prepare(background)
    went = np.asarray(sides(Z, trees.feature, trees.threshold, trees.default_left, trees.missing))
    ends = np.append(trees.roots[1:], trees.feature.shape[0])
    start = [0]
    rows: list[np.ndarray] = []
    of = np.empty((trees.roots.shape[0], Z.shape[0]), dtype=np.int64)
    for t, (a, b) in enumerate(zip(trees.roots.tolist(), ends.tolist(), strict=True)):
        _, first, inverse = np.unique(went[:, a:b], axis=0, return_index=True, return_inverse=True)
        of[t] = start[-1] + inverse.reshape(-1)
        rows.append(first.astype(np.int64))
        start.append(start[-1] + len(first))
    return BackgroundClasses(np.asarray(start, dtype=np.int64), np.concatenate(rows), of)


def grouped_values(trees: FlatTrees, rows: np.ndarray, background: np.ndarray, group_of: np.ndarray,
                   n_groups: int, scale: np.ndarray | None = None,
                   classes: BackgroundClasses | None = None) -> np.ndarray:
    """Return (n_rows, n_groups) interventional Shapley values of the groups, averaged over background.

    `scale[i, j]`, when given, multiplies row i's values against background row j before averaging
    (the per-pair rescaling of a margin into probability). `classes`: `background_classes(trees, background)`,
    kept by the caller that explains many times against one background (computed here when not given).
    """
    grouped, _, _ = _kernel()
    X = trees.prepare(rows)
    Z = trees.prepare(background)
    if classes is None:
        classes = background_classes(trees, background)
    if scale is None:
        scale = np.ones((X.shape[0], Z.shape[0]), dtype=np.float64)
    scale = np.ascontiguousarray(scale, dtype=np.float64)
    gain, loss = shapley_weights(n_groups)
    groups = np.ascontiguousarray(group_of, np.int64)

    def walk(part: slice) -> np.ndarray:
        return np.asarray(grouped(X[part], Z, trees.roots, trees.feature, trees.threshold, trees.left, trees.right,
                                  trees.default_left, trees.missing, trees.value, groups, n_groups, gain, loss,
                                  scale[part], classes.start, classes.row, classes.of))

    parts = _parts(X.shape[0])
    if len(parts) == 1:
        return walk(parts[0])
    # Rows are independent: a matrix (a batch's chunk) is walked in parts on the process's cores at once.
    return np.concatenate(list(_pool().map(walk, parts)))


PARALLEL_MIN_ROWS = 64  # below this a matrix is walked on one core: threads would cost more than they give


def _threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _parts(n: int) -> list[slice]:
    """Row ranges of a matrix of `n` rows, one per core when the matrix is large enough to be worth it."""
    k = min(_threads(), n // (PARALLEL_MIN_ROWS // 2)) if n >= PARALLEL_MIN_ROWS else 1
    if k <= 1:
        return [slice(0, n)]
    bounds = np.linspace(0, n, k + 1).astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_threads(), thread_name_prefix="treeshap")
        return _POOL


def _forget_pool() -> None:  # a forked child has none of its parent's threads: it starts its own pool
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def null_players(trees: FlatTrees, rows: np.ndarray, background: np.ndarray, group_of: np.ndarray,
                 n_groups: int) -> np.ndarray:
    """Return (n_rows, n_groups) booleans: the group cannot change any tree's output for that row."""
    _, nulls, _ = _kernel()
    return np.asarray(nulls(trees.prepare(rows), trees.prepare(background), trees.feature, trees.threshold,
                            trees.default_left, trees.missing, np.ascontiguousarray(group_of, np.int64), n_groups))
