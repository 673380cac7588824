"""SHAP attributions for scoring models, summed back to raw features and turned into main factors.

A library of its own: it imports neither flask nor the gateway, and `import explainers` stays cheap
(shap, scikit-learn and pandas are imported when an explainer is fitted or used).

    explainer = make_explainer(pipeline, output_space="log_odds", positive_class="good").fit(background)
    [explanation] = explainer.explain(record)        # a DataFrame, a record {feature: value} or a list
    selection = FactorSelector(policies).fit(background).select(explanation, record)
"""

from __future__ import annotations

from explainers._transform import GiveUp, NotCompilable, compile_transform, compile_variants
from explainers._version import __version__
from explainers.base import (
    OUTPUT_SPACES,
    BaseExplainer,
    ExactExplainer,
    RawExplanation,
    Rows,
)
from explainers.exceptions import (
    AdditivityError,
    ExplainerError,
    NotFittedError,
    UnknownExplainerError,
    UnsupportedModelError,
    UnsupportedOutputSpaceError,
    UnsupportedTransformerError,
)
from explainers.factors import (
    DISCLOSURES,
    ConfidentialBucket,
    Factor,
    FactorSelection,
    FactorSelector,
    band_edges,
    band_of,
    rank_features,
    rank_numbers,
    select_factors,
)
from explainers.grouping import (
    column_groups,
    group_matrix,
    split_pipeline,
    transformed_sources,
)
from explainers.linear import LinearExplainer
from explainers.permutation import MIN_PAIRS, PermutationExplainer
from explainers.recourse import MutableFeature, RecourseOption, RecourseSearch, Variants
from explainers.registry import (
    EXPLAINERS,
    FALLBACK,
    choose_explainer,
    get_explainer,
    make_explainer,
)
from explainers.tree import TreeExplainer

__all__ = [
    "DISCLOSURES",
    "EXPLAINERS",
    "FALLBACK",
    "OUTPUT_SPACES",
    "AdditivityError",
    "BaseExplainer",
    "ConfidentialBucket",
    "ExactExplainer",
    "ExplainerError",
    "Factor",
    "FactorSelection",
    "FactorSelector",
    "GiveUp",
    "LinearExplainer",
    "MIN_PAIRS",
    "NotCompilable",
    "NotFittedError",
    "PermutationExplainer",
    "MutableFeature",
    "RawExplanation",
    "RecourseOption",
    "RecourseSearch",
    "Rows",
    "TreeExplainer",
    "UnknownExplainerError",
    "UnsupportedModelError",
    "UnsupportedOutputSpaceError",
    "UnsupportedTransformerError",
    "Variants",
    "__version__",
    "band_edges",
    "band_of",
    "choose_explainer",
    "column_groups",
    "compile_transform",
    "compile_variants",
    "get_explainer",
    "group_matrix",
    "make_explainer",
    "rank_features",
    "rank_numbers",
    "select_factors",
    "split_pipeline",
    "transformed_sources",
]
