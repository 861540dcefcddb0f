"""How good is a router: the quality-vs-strong-share curve, PGR, APGR, CPT, baselines and subject splits.

A router gives each prompt a score; a threshold sends the prompts scoring above it to the strong model and
the rest to the weak one. Exact definitions (n prompts, weak scores ``w``, strong scores ``s``, gain
``g = s − w``):

* Rank the prompts by router score, highest first. Sending the top ``k`` to strong gives the strong-call
  share ``x_k = k / n`` and the quality ``q(x_k) = (Σ w + G_k) / n`` where ``G_k`` is the gain of the top
  ``k``. Prompts with EQUAL scores are in no particular order, so ``G_k`` is its expectation over a random
  order of each tie block: every prompt in a block counts with the block's mean gain. (A router that gives
  every prompt the same score is thus exactly the random router.)
* ``PGR(x_k) = (q(x_k) − q_weak) / (q_strong − q_weak) = G_k / Σ g`` (performance gap recovered; it can
  exceed 1 where sending only the right prompts beats always-strong, and needs ``q_strong > q_weak``).
* ``APGR`` = the trapezoid rule over the n + 1 points ``(x_k, PGR(x_k))``, k = 0…n, on x ∈ [0, 1].
* ``CPT(p)`` = the smallest ``x_k`` with ``PGR(x_k) ≥ p`` (the strong-call share needed to recover ``p`` of
  the gap); 1.0 at worst, since ``PGR(1) = 1``.
* Baselines: ``random`` is the expectation over uniform random orders, ``PGR(x) = x``, APGR exactly 0.5;
  ``oracle`` sends first the prompts only strong gets right, then the ties, then those only weak gets right;
  ``subject-oracle`` knows each held-out subject's mean gain and nothing about single prompts (subjects in
  order of their mean gain, random order within one): what telling subjects apart alone can reach.

Splits hold out whole SUBJECTS (groups): a router is used on prompts unlike its training data, and a
random-row split would let it memorise which subjects are hard. One split's figures depend heavily on
WHICH subjects it holds out (on MMLU, 20% splits give the same router APGRs from 0.53 to 0.93), so
``repeated_splits`` draws many and ``spread`` summarises a figure over them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from tokenrace.routing.outcomes import OutcomeTable

__all__ = [
    "PriceChoice",
    "RoutingCurve",
    "always_strong",
    "always_weak",
    "choose_share",
    "cpt",
    "evaluate",
    "has_gap",
    "kfold_by_subject",
    "mean_curve",
    "oracle",
    "random_router",
    "repeated_splits",
    "routing_curve",
    "split_by_subject",
    "spread",
    "subject_oracle",
    "within_group_apgr",
]

_EPS = 1e-9


@dataclass(frozen=True)
class RoutingCurve:
    """A router's quality at every strong-call share k/n, and the summary figures."""

    share: np.ndarray  # x_k = k / n, k = 0..n
    quality: np.ndarray  # q(x_k)
    pgr: np.ndarray  # PGR(x_k)
    q_weak: float
    q_strong: float

    @property
    def apgr(self) -> float:
        """Area under PGR over the strong share, trapezoid rule on the n + 1 points."""
        return float(np.sum(np.diff(self.share) * (self.pgr[1:] + self.pgr[:-1])) / 2.0)

    def cpt(self, fraction: float) -> float:
        """Smallest strong share at which PGR reaches ``fraction`` (0.5 for CPT(50%))."""
        return cpt(self, fraction)

    def summary(self) -> dict[str, float]:
        return {"apgr": self.apgr, "cpt50": self.cpt(0.5), "cpt80": self.cpt(0.8)}


@dataclass(frozen=True)
class PriceChoice:
    """The strong-call share worth paying for, and what it buys (per call)."""

    share: float  # the x_k chosen
    quality: float  # q(x_k)
    cost: float  # cost per call at that share
    net: float  # pay · quality − cost, the maximum
    break_even_gain: float  # (c_strong − c_weak) / pay: a strong call is worth it when it adds more quality


def choose_share(
    share: Sequence[float] | np.ndarray,
    quality: Sequence[float] | np.ndarray,
    cost_weak: float,
    cost_strong: float,
    pay: float,
) -> PriceChoice:
    """Calibrate a router to a willingness to pay: the point of its curve that maximises
    ``pay · q(x) − cost(x)``, with ``cost(x) = c_weak + x · (c_strong − c_weak)`` per call and ``pay`` what one
    unit of quality (one more correct answer) is worth, in the costs' currency. Of equal maxima the smallest
    share wins. Why a curve and not the router's own scores: the curve measured on held-out subjects says
    what a strong call really adds there; the gateway then sends that share (``premium_share``)."""
    x = np.asarray(share, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if len(x) == 0 or x.shape != q.shape:
        raise ValueError("share and quality need the same non-zero length")
    if not pay > 0:
        raise ValueError(f"the price of one unit of quality must be positive, got {pay}")
    if cost_weak < 0 or cost_strong < 0:
        raise ValueError("costs per call cannot be negative")
    cost = cost_weak + x * (cost_strong - cost_weak)
    net = pay * q - cost
    k = int(np.argmax(net))
    return PriceChoice(
        share=float(x[k]),
        quality=float(q[k]),
        cost=float(cost[k]),
        net=float(net[k]),
        break_even_gain=(cost_strong - cost_weak) / pay,
    )


def has_gap(weak: np.ndarray, strong: np.ndarray) -> bool:
    """Whether the strong model beats the weak one on these prompts: PGR is defined only then."""
    return float(np.sum(strong) - np.sum(weak)) > _EPS


def routing_curve(weak: np.ndarray, strong: np.ndarray, scores: np.ndarray) -> RoutingCurve:
    """The curve of a router whose scores are ``scores`` (higher = send to strong); ties averaged."""
    w = np.asarray(weak, dtype=np.float64)
    s = np.asarray(strong, dtype=np.float64)
    r = np.asarray(scores, dtype=np.float64)
    n = len(w)
    if not (len(s) == len(r) == n) or n == 0:
        raise ValueError(f"weak, strong and scores need the same non-zero length ({len(w)}, {len(s)}, {len(r)})")
    if np.isnan(r).any():
        raise ValueError("router scores contain NaN")
    gap = float(s.sum() - w.sum())
    if not has_gap(w, s):
        raise ValueError(f"PGR needs the strong model to beat the weak one here (strong − weak = {gap / n:.4f})")
    order = np.argsort(-r, kind="stable")
    gain = (s - w)[order]
    ranked = r[order]
    # Tie blocks: every prompt counts with its block's mean gain (the expectation over orders within ties).
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    sizes = np.diff(np.r_[starts, n])
    block_mean = np.add.reduceat(gain, starts) / sizes
    expected = np.repeat(block_mean, sizes)
    cumulative = np.r_[0.0, np.cumsum(expected)]
    share = np.arange(n + 1) / n
    quality = (w.sum() + cumulative) / n
    return RoutingCurve(
        share=share, quality=quality, pgr=cumulative / gap, q_weak=float(w.mean()), q_strong=float(s.mean())
    )


def evaluate(
    table: OutcomeTable, scores: np.ndarray, weak: str | None = None, strong: str | None = None
) -> RoutingCurve:
    """The curve of router ``scores`` on ``table``'s weak/strong pair."""
    w, s = table.pair(weak, strong)
    return routing_curve(w, s, scores)


def within_group_apgr(
    table: OutcomeTable, scores: np.ndarray, weak: str | None = None, strong: str | None = None
) -> float:
    """Mean over groups of the APGR inside each group (groups where strong does not beat weak are left out).

    The pooled APGR rewards ranking whole subjects (knowing that one subject gains more from the strong
    model than another) as much as ranking questions; this one isolates the second.
    """
    w, s = table.pair(weak, strong)
    r = np.asarray(scores, dtype=np.float64)
    groups = np.asarray([str(g) for g in table.groups])
    values = []
    for group in np.unique(groups):
        m = groups == group
        if has_gap(w[m], s[m]):
            values.append(routing_curve(w[m], s[m], r[m]).apgr)
    return float(np.mean(values)) if values else float("nan")


def cpt(curve: RoutingCurve, fraction: float) -> float:
    """Smallest x_k with PGR(x_k) ≥ fraction (within 1e-9, so exact hand values are not lost to rounding)."""
    hits = np.flatnonzero(curve.pgr >= fraction - _EPS)
    return float(curve.share[hits[0]]) if len(hits) else 1.0


def random_router(table: OutcomeTable) -> np.ndarray:
    """Scores of the random router: all equal, so the curve is the expectation over random orders."""
    return np.zeros(len(table))


def oracle(table: OutcomeTable, weak: str | None = None, strong: str | None = None) -> np.ndarray:
    """Scores of the oracle: the gain itself (strong-only-right first, weak-only-right last)."""
    w, s = table.pair(weak, strong)
    return s - w


def subject_oracle(table: OutcomeTable, weak: str | None = None, strong: str | None = None) -> np.ndarray:
    """Scores of the subject oracle: every prompt gets its group's mean gain (equal within a group, so the
    order inside a group is random). How far knowing which subjects gain most goes without ranking a
    single question: on a split where even this stays low, no router of subjects can score high."""
    w, s = table.pair(weak, strong)
    gain = s - w
    groups = np.asarray([str(g) for g in table.groups])
    names, index = np.unique(groups, return_inverse=True)
    means = np.bincount(index, weights=gain, minlength=len(names)) / np.bincount(index, minlength=len(names))
    return means[index]


def always_weak(table: OutcomeTable, weak: str | None = None) -> float:
    """Quality of sending everything to the weak model (strong share 0)."""
    return float(table.column(weak or table.weak).mean())


def always_strong(table: OutcomeTable, strong: str | None = None) -> float:
    """Quality of sending everything to the strong model (strong share 1)."""
    return float(table.column(strong or table.strong).mean())


def _shuffled_subjects(table: OutcomeTable, seed: int) -> list[str]:
    subjects = table.subjects
    rng = np.random.default_rng(seed)
    return [subjects[i] for i in rng.permutation(len(subjects))]


def split_by_subject(
    table: OutcomeTable, test_fraction: float = 0.2, seed: int = 0
) -> tuple[OutcomeTable, OutcomeTable]:
    """(train, test) with disjoint subjects: subjects in a seeded random order go to test until it holds
    at least ``test_fraction`` of the prompts (at least one subject on each side)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    subjects = _shuffled_subjects(table, seed)
    if len(subjects) < 2:
        raise ValueError("a split by subject needs at least two subjects")
    counts = _counts(table)
    target = test_fraction * len(table)
    test: list[str] = []
    total = 0
    for subject in subjects[:-1]:
        if total >= target:
            break
        test.append(subject)
        total += counts[subject]
    train = [s for s in subjects if s not in set(test)]
    return table.in_groups(train), table.in_groups(test)


def repeated_splits(
    table: OutcomeTable, count: int, test_fraction: float = 0.2, seed: int = 0
) -> Iterator[tuple[int, OutcomeTable, OutcomeTable]]:
    """(seed, train, test) for ``count`` DISTINCT by-subject splits, seeds ``seed``, ``seed + 1``, ... (a
    seed whose test subjects repeat an earlier split's is skipped; with few subjects there may be fewer
    distinct splits than asked for, and the iteration stops after ``50 * count`` seeds)."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    seen: set[tuple[str, ...]] = set()
    for candidate in range(seed, seed + 50 * count):
        train, test = split_by_subject(table, test_fraction, candidate)
        key = tuple(sorted(test.subjects))
        if key in seen:
            continue
        seen.add(key)
        yield candidate, train, test
        if len(seen) == count:
            return


def mean_curve(curves: Sequence[RoutingCurve], points: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """(share grid, mean PGR): each curve's PGR read at ``points`` evenly spaced shares (linear between its
    own points), averaged. The curve of a router over many splits, smoother than any one of them."""
    if not curves:
        raise ValueError("mean of no curves")
    grid = np.linspace(0.0, 1.0, points)
    return grid, np.mean([np.interp(grid, c.share, c.pgr) for c in curves], axis=0)


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation, median, minimum and maximum of a figure over splits."""
    arr = np.asarray(values, dtype=np.float64)
    if len(arr) == 0:
        raise ValueError("spread of no values")
    mean, std = mean_std(arr)
    return {"mean": mean, "std": std, "median": float(np.median(arr)), "min": float(arr.min()), "max": float(arr.max())}


def subject_folds(table: OutcomeTable, k: int = 5, seed: int = 0) -> list[list[str]]:
    """``k`` disjoint sets of subjects of about equal prompt counts: subjects in a seeded random order,
    each to the fold with the fewest prompts so far."""
    subjects = _shuffled_subjects(table, seed)
    if not 2 <= k <= len(subjects):
        raise ValueError(f"k must be between 2 and the number of subjects ({len(subjects)}), got {k}")
    counts = _counts(table)
    folds: list[list[str]] = [[] for _ in range(k)]
    sizes = [0] * k
    for subject in subjects:
        i = int(np.argmin(sizes))
        folds[i].append(subject)
        sizes[i] += counts[subject]
    return folds


def kfold_by_subject(table: OutcomeTable, k: int = 5, seed: int = 0) -> Iterator[tuple[OutcomeTable, OutcomeTable]]:
    """(train, test) for each of the ``k`` subject folds in turn."""
    folds = subject_folds(table, k, seed)
    for i, held_out in enumerate(folds):
        rest = [s for j, fold in enumerate(folds) if j != i for s in fold]
        yield table.in_groups(rest), table.in_groups(held_out)


def _counts(table: OutcomeTable) -> dict[str, int]:
    names, counts = np.unique(np.asarray([str(g) for g in table.groups]), return_counts=True)
    return dict(zip(names.tolist(), counts.tolist(), strict=True))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
