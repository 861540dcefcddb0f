"""Per-prompt outcomes of several models: what a router is trained and judged on.

An :class:`OutcomeTable` holds, for each prompt, its text, its group (the subject or suite: routers are
judged on groups they never saw, so the group must travel with the prompt) and one score per model in
[0, 1] (1 = correct). Four sources fill it: RouteLLM's MMLU outcomes (``load_routellm_mmlu``), a generic
JSONL file (``from_jsonl``), tokenrace's own benchmark runs of several endpoints on the same scored
prompts (``from_benchmark_runs``) and gateway traffic that received ``POST /v1/feedback`` scores
(``from_gateway_feedback``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tokenrace.gateway.difficulty import prompt_fingerprint

if TYPE_CHECKING:
    from tokenrace.store import Store

__all__ = [
    "OutcomeTable",
    "PromptLog",
    "from_benchmark_runs",
    "from_gateway_feedback",
    "from_jsonl",
    "load_prompt_log",
    "load_routellm_mmlu",
    "prompt_fingerprint",
]

ROUTELLM_WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
ROUTELLM_STRONG = "gpt-4-1106-preview"


@dataclass
class OutcomeTable:
    """Prompts × models scores, with the group of each prompt and an optional cost per call of each model.

    ``scores[i, j]`` is model ``models[j]``'s score on prompt ``i`` (correctness as 0/1, or a suite's
    quality in [0, 1]). ``weak`` and ``strong`` name the pair a two-way router chooses between (by default
    the lower- and higher-scoring model). ``costs[j]`` is a cost per call, when known. ``notes`` says what
    the loader did (e.g. how many contaminated prompts it dropped).
    """

    prompts: list[str]
    groups: np.ndarray
    models: tuple[str, ...]
    scores: np.ndarray
    ids: list[str] = field(default_factory=list)
    costs: np.ndarray | None = None
    weak: str = ""
    strong: str = ""
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.groups = np.asarray(self.groups, dtype=object)
        self.scores = np.asarray(self.scores, dtype=np.float64)
        n = len(self.prompts)
        if self.scores.shape != (n, len(self.models)):
            raise ValueError(f"scores must be {n}×{len(self.models)}, got {self.scores.shape}")
        if self.groups.shape != (n,):
            raise ValueError(f"groups must have {n} entries, got {self.groups.shape}")
        if not self.ids:
            self.ids = [str(i) for i in range(n)]
        if len(self.ids) != n:
            raise ValueError(f"ids must have {n} entries, got {len(self.ids)}")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"model names must be unique: {self.models}")
        if self.costs is not None:
            self.costs = np.asarray(self.costs, dtype=np.float64)
            if self.costs.shape != (len(self.models),):
                raise ValueError(f"costs must have one entry per model, got {self.costs.shape}")
        if len(self.models) >= 2 and (not self.weak or not self.strong):
            order = np.argsort(self.scores.mean(axis=0), kind="stable") if n else np.arange(len(self.models))
            self.weak = self.weak or self.models[int(order[0])]
            self.strong = self.strong or self.models[int(order[-1])]
        for name in (self.weak, self.strong):
            if name and name not in self.models:
                raise ValueError(f"unknown model {name!r}; models: {', '.join(self.models)}")

    def __len__(self) -> int:
        return len(self.prompts)

    def column(self, model: str) -> np.ndarray:
        """One model's scores, by name."""
        return self.scores[:, self.models.index(model)]

    def pair(self, weak: str | None = None, strong: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(weak scores, strong scores) of the pair a router chooses between."""
        return self.column(weak or self.weak), self.column(strong or self.strong)

    @property
    def subjects(self) -> list[str]:
        """The distinct groups, sorted (deterministic order for splits)."""
        return sorted({str(g) for g in self.groups})

    def subset(self, index: Sequence[int] | np.ndarray) -> OutcomeTable:
        """The rows at ``index`` (positions or a boolean mask), same models and pair."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return OutcomeTable(
            prompts=[self.prompts[i] for i in idx],
            groups=self.groups[idx],
            models=self.models,
            scores=self.scores[idx],
            ids=[self.ids[i] for i in idx],
            costs=self.costs,
            weak=self.weak,
            strong=self.strong,
            notes=dict(self.notes),
        )

    def in_groups(self, groups: Iterable[str]) -> OutcomeTable:
        """The rows whose group is one of ``groups``."""
        wanted = set(groups)
        return self.subset(np.array([str(g) in wanted for g in self.groups], dtype=bool))


def load_routellm_mmlu(path: str | Path, *, drop_contaminated: bool = True) -> OutcomeTable:
    """RouteLLM's MMLU outcomes: ``mmlu_<subject>.csv`` files (prompt, then one True/False column per model).

    Prompts listed (as ``eval_prompt``) in ``contaminated_prompts.jsonl`` overlap RouteLLM's router training
    data and are dropped; ``notes["dropped_contaminated"]`` says how many rows went. Ids are
    ``<subject>/<row>`` (row within the file, counted before dropping) so they stay stable.
    """
    root = Path(path)
    files = sorted(root.glob("mmlu_*.csv"))
    if not files:
        raise FileNotFoundError(f"no mmlu_*.csv files in {root}")
    contaminated: set[str] = set()
    contaminated_file = root / "contaminated_prompts.jsonl"
    if drop_contaminated and contaminated_file.exists():
        with contaminated_file.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    contaminated.add(json.loads(line)["eval_prompt"])
    models: tuple[str, ...] | None = None
    prompts: list[str] = []
    groups: list[str] = []
    ids: list[str] = []
    rows: list[list[float]] = []
    dropped = 0
    for file in files:
        subject = file.stem.removeprefix("mmlu_")
        with file.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            if header[0] != "prompt" or len(header) < 3:
                raise ValueError(f"{file}: expected columns prompt, <model>, <model>..., got {header}")
            if models is None:
                models = tuple(header[1:])
            elif tuple(header[1:]) != models:
                raise ValueError(f"{file}: model columns {header[1:]} differ from {list(models)}")
            for number, row in enumerate(reader):
                if row[0] in contaminated:
                    dropped += 1
                    continue
                prompts.append(row[0])
                groups.append(subject)
                ids.append(f"{subject}/{number}")
                rows.append([_truth(v, file, number) for v in row[1:]])
    assert models is not None
    weak = ROUTELLM_WEAK if ROUTELLM_WEAK in models else ""
    strong = ROUTELLM_STRONG if ROUTELLM_STRONG in models else ""
    return OutcomeTable(
        prompts=prompts,
        groups=np.array(groups, dtype=object),
        models=models,
        scores=np.array(rows, dtype=np.float64),
        ids=ids,
        weak=weak,
        strong=strong,
        notes={"source": str(root), "dropped_contaminated": dropped, "contaminated_listed": len(contaminated)},
    )


def _truth(value: str, file: Path, number: int) -> float:
    v = value.strip().lower()
    if v in ("true", "1", "1.0"):
        return 1.0
    if v in ("false", "0", "0.0"):
        return 0.0
    raise ValueError(f"{file} row {number}: expected True/False, got {value!r}")


def _jsonl(file: Path) -> Iterator[tuple[int, Any]]:
    """The JSON value of each non-blank line with its line number; a bad line names the file and line."""
    with file.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{file}:{number}: not JSON ({exc.msg})") from None


def from_jsonl(path: str | Path) -> OutcomeTable:
    """A generic outcomes file, one JSON object per line::

        {"id": "q1", "prompt": "...", "group": "algebra", "scores": {"small-model": 0, "big-model": 1}}

    ``scores`` maps each model to a score in [0, 1] (booleans are read as 0/1); every line must score the
    same models. ``id`` and ``group`` are optional (defaults: the line number and ``"all"``). An optional
    first line ``{"meta": {"weak": ..., "strong": ..., "costs": {model: cost per call}}}`` names the pair
    and the costs.
    """
    file = Path(path)
    meta: dict[str, Any] = {}
    prompts: list[str] = []
    groups: list[str] = []
    ids: list[str] = []
    rows: list[list[float]] = []
    models: tuple[str, ...] | None = None
    for number, obj in _jsonl(file):
        if "meta" in obj and "prompt" not in obj:
            meta = dict(obj["meta"])
            continue
        if not isinstance(obj.get("prompt"), str) or not isinstance(obj.get("scores"), dict):
            raise ValueError(f"{file}:{number}: needs a 'prompt' string and a 'scores' object")
        names = tuple(obj["scores"])
        if models is None:
            models = names
        elif set(names) != set(models):
            raise ValueError(f"{file}:{number}: scores models {sorted(names)}, expected {sorted(models)}")
        prompts.append(obj["prompt"])
        groups.append(str(obj.get("group", "all")))
        ids.append(str(obj.get("id", number)))
        rows.append([float(obj["scores"][m]) for m in models])
    if models is None:
        raise ValueError(f"{file}: no outcome lines")
    costs_map = meta.get("costs")
    costs = np.array([float(costs_map[m]) for m in models]) if costs_map else None
    return OutcomeTable(
        prompts=prompts,
        groups=np.array(groups, dtype=object),
        models=models,
        scores=np.array(rows, dtype=np.float64),
        ids=ids,
        costs=costs,
        weak=str(meta.get("weak", "")),
        strong=str(meta.get("strong", "")),
        notes={"source": str(file)},
    )


def from_benchmark_runs(
    store: Store,
    run_ids: Sequence[str],
    *,
    texts: Mapping[str, str] | None = None,
    failed_as_zero: bool = True,
) -> OutcomeTable:
    """Pair the scored records of the same prompts across runs of different endpoints (one model per run).

    A prompt is keyed by ``(record.suite, record.extra["prompt_id"])``, with a monitor probe's
    ``#fingerprint`` suffix removed so repeated probes of one prompt pair up; its group is the suite. A run's
    score for a prompt is the mean ``quality`` of its measured records of that key; a record that failed
    (no answer) counts as 0 when ``failed_as_zero`` (a router that picks a failing endpoint gets nothing),
    else it is skipped, as are unscored and incomplete records. Only prompts scored in every run are kept
    (``notes["unpaired"]`` counts the rest). Records do not store the prompt's text: pass ``texts``
    (prompt_id → text) to train text routers; otherwise the prompt id stands in for the text.
    Model names are the runs' endpoints (the run id where two runs share an endpoint).
    """
    from tokenrace.records import FAILED, OK, PHASE_MEASURE

    if len(run_ids) < 2:
        raise ValueError("pairing needs at least two runs")
    infos = [store.get_run(run_id) for run_id in run_ids]
    endpoints = [info.endpoint for info in infos]
    names = tuple(info.endpoint if endpoints.count(info.endpoint) == 1 else info.run_id for info in infos)
    if len(set(names)) != len(names):
        raise ValueError("the same run was given twice")
    per_run: list[dict[tuple[str, str], float]] = []
    for info in infos:
        sums: dict[tuple[str, str], list[float]] = {}
        for record in store.records(info.run_id, phase=PHASE_MEASURE):
            prompt_id = record.extra.get("prompt_id")
            if prompt_id is None:
                continue
            if record.status == OK and record.quality is not None:
                value = float(record.quality)
            elif record.status == FAILED and failed_as_zero:
                value = 0.0
            else:
                continue
            key = (record.suite or record.workload or "", str(prompt_id).split("#", 1)[0])
            acc = sums.setdefault(key, [0.0, 0.0])
            acc[0] += value
            acc[1] += 1.0
        per_run.append({key: total / count for key, (total, count) in sums.items()})
    common = set(per_run[0]).intersection(*per_run[1:])
    every = set().union(*per_run)
    keys = sorted(common)
    if not keys:
        raise ValueError(f"runs {', '.join(run_ids)} share no scored prompt (by suite and prompt_id)")
    texts = texts or {}
    return OutcomeTable(
        prompts=[texts.get(pid, pid) for _, pid in keys],
        groups=np.array([suite for suite, _ in keys], dtype=object),
        models=names,
        scores=np.array([[run[key] for run in per_run] for key in keys], dtype=np.float64),
        ids=[f"{suite}/{pid}" for suite, pid in keys],
        notes={
            "source": "runs " + ", ".join(info.run_id for info in infos),
            "unpaired": len(every) - len(common),
            "text": "given" if texts else "prompt_id",
        },
    )


@dataclass
class PromptLog:
    """Prompt texts (and optionally groups) a client kept beside the calls it made, by request id.

    The gateway's records do not keep the prompt, so the client that sends ``/v1/feedback`` (it has the
    ``x-tokenrace-request-id`` of each call and knows what it asked) is where the text comes from. Benchmark
    prompts are keyed by their ``prompt_id`` instead.
    """

    texts: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)


def load_prompt_log(path: str | Path) -> PromptLog:
    """A JSONL prompt log: ``{"request_id" | "prompt_id": ..., "prompt": "...", "group": "..."}`` per line.

    ``request_id`` is a gateway call's ``x-tokenrace-request-id``; ``prompt_id`` a benchmark record's
    ``extra["prompt_id"]``. ``group`` (the subject the prompt belongs to) is optional.
    """
    file = Path(path)
    log = PromptLog()
    for number, obj in _jsonl(file):
        key = obj.get("request_id", obj.get("prompt_id")) if isinstance(obj, dict) else None
        if not isinstance(key, str) or not key or not isinstance(obj.get("prompt"), str):
            raise ValueError(f"{file}:{number}: needs a 'request_id' (or 'prompt_id') and a 'prompt' string")
        log.texts[key] = obj["prompt"]
        if obj.get("group") is not None:
            log.groups[key] = str(obj["group"])
    if not log.texts:
        raise ValueError(f"{file}: no prompt lines")
    return log


# Why a feedback score did not make it into the table (the keys of notes["unusable"]).
_SUPERSEDED = "superseded"  # an older score of a request that was scored again (the latest wins)
_NO_RECORD = "no_record"  # the request's record is not in the store (never written, or another store)
_NO_PROMPT = "no_prompt"  # neither the record nor the prompt log says what the prompt was
_ONE_ENDPOINT = "single_endpoint"  # every scored answer to that prompt came from one endpoint
_NOT_CHOSEN = "endpoint_not_chosen"  # answered by an endpoint outside ``endpoints``
_INCOMPLETE_ROW = "missing_endpoint"  # the prompt lacks a scored answer from one of the chosen endpoints


def from_gateway_feedback(
    store: Store,
    run_ids: Sequence[str] | None = None,
    *,
    prompts: PromptLog | None = None,
    endpoints: Sequence[str] | None = None,
) -> OutcomeTable:
    """Gateway calls that received feedback, paired by prompt across the endpoints that answered them.

    Reads the gateway runs ``run_ids`` (default: every gateway run in the store). A feedback score belongs to
    the request's record: its ``endpoint`` (the upstream that answered) is the model, the latest score per
    request wins, and several scored answers of one endpoint to one prompt are averaged. A prompt is
    identified by, in order: the client's ``prompts`` log (request id → text), else the text a gateway kept
    (``extra["prompt"]``, with ``gateway.record_prompts``), else the fingerprint every gateway call carries
    (``extra["prompt_sha256"]``, see :func:`~tokenrace.gateway.difficulty.prompt_fingerprint`; the row then
    has no text, and a router cannot be trained on it). Its group is the log's ``group``, else ``"gateway"``.

    A row needs a scored answer from each of ``endpoints`` (default: every endpoint with a usable score);
    ``notes`` counts the feedback rows read, those used, and why the others were not (``notes["unusable"]``:
    superseded, no_record, no_prompt, single_endpoint, endpoint_not_chosen, missing_endpoint).
    """
    from tokenrace.records import GATEWAY_WORKLOAD

    if run_ids:
        runs = [store.get_run(run_id) for run_id in run_ids]
    else:
        runs = [r for r in store.list_runs(limit=None) if r.workload == GATEWAY_WORKLOAD]
        if not runs:
            raise ValueError(f"{store.location} has no gateway runs (`tokenrace serve` records one per process)")
    log = prompts or PromptLog()
    unusable = dict.fromkeys((_SUPERSEDED, _NO_RECORD, _NO_PROMPT, _ONE_ENDPOINT, _NOT_CHOSEN, _INCOMPLETE_ROW), 0)
    read = 0
    # prompt key -> endpoint -> scores of its answers; and what each key looks like
    scored: dict[str, dict[str, list[float]]] = {}
    text_of: dict[str, str] = {}
    group_of: dict[str, str] = {}
    for run in sorted(runs, key=lambda r: (r.started_at, r.run_id)):
        rows = store.feedback(run.run_id)
        read += len(rows)
        latest = {f.request_id: f.score for f in rows}  # oldest first: the latest score per request wins
        unusable[_SUPERSEDED] += len(rows) - len(latest)
        if not latest:
            continue
        by_request = {str(r.extra.get("request_id")): r for r in store.records(run.run_id)}
        for request_id, score in latest.items():
            record = by_request.get(request_id)
            if record is None:
                unusable[_NO_RECORD] += 1
                continue
            text = log.texts.get(request_id)
            if text is None:
                stored = record.extra.get("prompt")
                text = stored if isinstance(stored, str) else None
            if text is not None:
                key = prompt_fingerprint(text)
            elif isinstance(record.extra.get("prompt_sha256"), str):
                key = record.extra["prompt_sha256"]
            else:
                unusable[_NO_PROMPT] += 1
                continue
            if text is not None:
                text_of[key] = text
            if request_id in log.groups:
                group_of[key] = log.groups[request_id]
            scored.setdefault(key, {}).setdefault(record.endpoint, []).append(float(score))
    shared = {key: answers for key, answers in scored.items() if len(answers) >= 2}
    for answers in scored.values():
        if len(answers) < 2:
            unusable[_ONE_ENDPOINT] += sum(len(v) for v in answers.values())
    available = sorted({endpoint for answers in shared.values() for endpoint in answers})
    chosen = tuple(endpoints) if endpoints else tuple(available)
    if len(chosen) < 2 or len(set(chosen)) != len(chosen):
        found = ", ".join(available) or "none"
        raise ValueError(
            f"gateway feedback pairs need two distinct endpoints (chosen: {', '.join(chosen) or 'none'}; "
            f"endpoints with a prompt also scored on another: {found}); {_explain(read, unusable)}"
        )
    keys: list[str] = []
    for key in sorted(shared):
        answers = shared[key]
        outside = sum(len(v) for endpoint, v in answers.items() if endpoint not in chosen)
        unusable[_NOT_CHOSEN] += outside
        if all(endpoint in answers for endpoint in chosen):
            keys.append(key)
        else:
            unusable[_INCOMPLETE_ROW] += sum(len(v) for endpoint, v in answers.items() if endpoint in chosen)
    if not keys:
        raise ValueError(
            f"no prompt has feedback on answers from each of {', '.join(chosen)}; {_explain(read, unusable)}"
        )
    used = sum(len(shared[key][endpoint]) for key in keys for endpoint in chosen)
    with_text = sum(1 for key in keys if key in text_of)
    return OutcomeTable(
        prompts=[text_of.get(key, key) for key in keys],
        groups=np.array([group_of.get(key, "gateway") for key in keys], dtype=object),
        models=chosen,
        scores=np.array([[float(np.mean(shared[key][m])) for m in chosen] for key in keys], dtype=np.float64),
        ids=keys,
        notes={
            "source": "gateway feedback in runs " + ", ".join(run.run_id for run in runs),
            "feedback_rows": read,
            "used": used,
            "unusable": {reason: n for reason, n in unusable.items() if n},
            # a prompt known only by its fingerprint stands in for its text (fine for pairing, not for training)
            "text": "prompt" if with_text == len(keys) else f"prompt for {with_text} of {len(keys)}, else fingerprint",
        },
    )


def _explain(read: int, unusable: Mapping[str, int]) -> str:
    reasons = ", ".join(f"{reason.replace('_', ' ')} {n}" for reason, n in unusable.items() if n)
    return f"{read} feedback rows read" + (f" (not usable: {reasons})" if reasons else "")
