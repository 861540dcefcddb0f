"""Routing between a weak and a strong model: outcome tables, evaluation (APGR, CPT), routers.

``outcomes`` builds the per-prompt table a router learns from, ``evaluate`` judges a router on subjects it
never saw, ``routers`` holds the routers (length rule, question-form features, ``form``, k-NN and ridge on MiniLM,
hybrid).
"""

from tokenrace.routing.evaluate import (
    RoutingCurve,
    evaluate,
    kfold_by_subject,
    oracle,
    random_router,
    repeated_splits,
    routing_curve,
    split_by_subject,
    spread,
    subject_oracle,
    within_group_apgr,
)
from tokenrace.routing.outcomes import (
    OutcomeTable,
    from_benchmark_runs,
    from_gateway_feedback,
    from_jsonl,
    load_routellm_mmlu,
)
from tokenrace.routing.routers import (
    EmbeddingRouter,
    FeatureRouter,
    FormRouter,
    HybridRouter,
    KNNRouter,
    LengthRouter,
    load_router,
)

__all__ = [
    "EmbeddingRouter",
    "FeatureRouter",
    "FormRouter",
    "HybridRouter",
    "KNNRouter",
    "LengthRouter",
    "OutcomeTable",
    "RoutingCurve",
    "evaluate",
    "from_benchmark_runs",
    "from_gateway_feedback",
    "from_jsonl",
    "kfold_by_subject",
    "load_routellm_mmlu",
    "load_router",
    "oracle",
    "random_router",
    "repeated_splits",
    "routing_curve",
    "split_by_subject",
    "spread",
    "subject_oracle",
    "within_group_apgr",
]
