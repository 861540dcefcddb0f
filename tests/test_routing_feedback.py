"""Outcome tables from gateway feedback: records and scores written through the real Store API (SQLite), the
CLI's ``--from-feedback`` source, and one path through a running gateway's ``/v1/feedback``.

The gateway's records do not keep the prompt, so the prompt comes from the client's log (request id → text),
or from ``extra["prompt"]`` / ``extra["prompt_sha256"]`` where a gateway stored them.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from test_gateway import _ep, gateway  # noqa: F401  (the fixture and harness)
from tokenrace.cli import app
from tokenrace.records import GATEWAY_WORKLOAD, OK, RequestRecord, RunInfo
from tokenrace.routing.outcomes import PromptLog, from_gateway_feedback, prompt_fingerprint
from tokenrace.store import Store

runner = CliRunner()


def _gateway_run(store: Store, run_id: str, started_at: float) -> None:
    store.create_run(
        RunInfo(
            run_id=run_id, started_at=started_at, endpoint="gateway", workload=GATEWAY_WORKLOAD,
            profile={"kind": "gateway"}, config={}, versions={}, host={},
        )
    )  # fmt: skip


def _call(run_id: str, seq: int, endpoint: str, **extra: object) -> RequestRecord:
    """A gateway record as telemetry writes it: the upstream that answered, the request id in ``extra``."""
    return RequestRecord(
        run_id=run_id, seq=seq, endpoint=endpoint, api="openai-chat", model=f"{endpoint}-model",
        workload=GATEWAY_WORKLOAD, status=OK, scheduled_s=seq * 0.1, sent_s=seq * 0.1, done_s=seq * 0.1 + 0.05,
        output_text="answer", extra={"route": "auto", "request_id": f"{run_id}-{seq}", **extra},
    )  # fmt: skip


def test_pairs_prompts_across_endpoints_latest_score_wins_and_notes_say_why_rows_were_left_out(store: Store) -> None:
    now = time.time()
    _gateway_run(store, "gw1", now - 100)
    # (seq, endpoint, prompt): p1 on both endpoints, twice on cheap; p2 on cheap only; seq 6 has no logged prompt
    calls = [(1, "cheap", "p1"), (2, "premium", "p1"), (3, "cheap", "p1"), (4, "cheap", "p2"), (5, "premium", "p3")]
    calls += [(6, "premium", None), (7, "cheap", "p3")]
    store.add_records([_call("gw1", seq, endpoint) for seq, endpoint, _ in calls])
    log = PromptLog(texts={f"gw1-{seq}": text for seq, _, text in calls if text})
    scores = {1: 0.0, 2: 1.0, 3: 1.0, 4: 1.0, 5: 0.5, 6: 1.0, 7: 0.25}
    for seq, score in scores.items():
        store.add_feedback(f"gw1-{seq}", score, None, now - 50 + seq, run_id="gw1")
    store.add_feedback("gw1-2", 0.0, None, now - 60, run_id="gw1")  # older than the 1.0 above: superseded
    store.add_feedback("gw1-99", 1.0, None, now - 40, run_id="gw1")  # a call whose record is not in the store

    table = from_gateway_feedback(store, prompts=log)
    assert table.models == ("cheap", "premium")
    assert (table.weak, table.strong) == ("cheap", "premium")
    assert table.prompts == sorted(["p1", "p3"], key=prompt_fingerprint)
    rows = {text: list(scores) for text, scores in zip(table.prompts, table.scores.tolist(), strict=True)}
    assert rows == {"p1": [0.5, 1.0], "p3": [0.25, 0.5]}  # cheap's two answers to p1 averaged
    assert table.ids == [prompt_fingerprint(text) for text in table.prompts]
    assert set(table.groups) == {"gateway"}
    notes = table.notes
    assert notes["feedback_rows"] == 9 and notes["used"] == 5
    assert notes["unusable"] == {"superseded": 1, "no_record": 1, "no_prompt": 1, "single_endpoint": 1}
    assert sum(notes["unusable"].values()) + notes["used"] == notes["feedback_rows"]
    assert notes["text"] == "prompt" and "gw1" in notes["source"]


def test_prompt_fields_a_gateway_stores_pair_across_runs_and_endpoints_can_be_chosen(store: Store) -> None:
    """``extra["prompt"]`` (text) or ``extra["prompt_sha256"]`` (key only) pair calls of different gateway runs."""
    now = time.time()
    _gateway_run(store, "gwA", now - 200)
    _gateway_run(store, "gwB", now - 100)
    key = prompt_fingerprint("What is 2+2?")
    unknown = prompt_fingerprint("a prompt whose text no record keeps")
    store.add_records(
        [
            _call("gwA", 1, "cheap", prompt="What is 2+2?"),
            _call("gwA", 2, "mid", prompt_sha256=key),
            _call("gwA", 3, "cheap", prompt_sha256=prompt_fingerprint("Prove it.")),
            _call("gwA", 4, "mid", prompt_sha256=unknown),
        ]
    )
    store.add_records(
        [
            _call("gwB", 1, "premium", prompt_sha256=key),
            _call("gwB", 2, "premium", prompt="Prove it."),
            _call("gwB", 3, "premium", prompt_sha256=unknown),
        ]
    )
    scored = (("gwA", 1, 0.0), ("gwA", 2, 0.5), ("gwA", 3, 0.0), ("gwA", 4, 0.0), ("gwB", 1, 1.0), ("gwB", 2, 1.0))
    for run_id, seq, score in (*scored, ("gwB", 3, 1.0)):
        store.add_feedback(f"{run_id}-{seq}", score, None, now, run_id=run_id)

    every = from_gateway_feedback(store)
    assert every.models == ("cheap", "mid", "premium")
    assert every.prompts == ["What is 2+2?"] and every.scores.tolist() == [[0.0, 0.5, 1.0]]
    assert every.notes["unusable"] == {"missing_endpoint": 4}  # no mid answer to "Prove it.", no cheap one to unknown

    pair = from_gateway_feedback(store, ["gwA", "gwB"], endpoints=["cheap", "premium"])
    assert pair.models == ("cheap", "premium") and len(pair) == 2
    assert pair.notes["unusable"] == {"endpoint_not_chosen": 2, "missing_endpoint": 1} and pair.notes["used"] == 4

    mid = from_gateway_feedback(store, endpoints=["mid", "premium"])
    # the text of 2+2 is known from cheap's record (same key); the other prompt is known by its key only
    assert sorted(mid.prompts) == sorted(["What is 2+2?", unknown])
    assert mid.notes["text"] == "prompt for 1 of 2, else fingerprint"


def test_no_usable_pairs_is_an_error_that_says_why(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no gateway runs"):
        from_gateway_feedback(store)
    _gateway_run(store, "gw", time.time())
    store.add_records([_call("gw", 1, "cheap"), _call("gw", 2, "premium")])
    store.add_feedback("gw-1", 1.0, None, time.time(), run_id="gw")
    store.add_feedback("gw-2", 1.0, None, time.time(), run_id="gw")
    with pytest.raises(ValueError, match=r"2 feedback rows read \(not usable: no prompt 2\)"):
        from_gateway_feedback(store)
    db = store.url.split("///", 1)[1]
    result = runner.invoke(app, ["router", "eval", "--from-feedback", "--store", db])
    assert result.exit_code == 2 and "no prompt 2" in result.output


def _log_line(request_id: str, prompt: str, group: str) -> str:
    return json.dumps({"request_id": request_id, "prompt": prompt, "group": group})


def test_cli_eval_and_train_from_feedback(store: Store, tmp_path: Path) -> None:
    """Four groups of prompts, each sent to both endpoints: the premium one is right on the long questions."""
    now = time.time()
    _gateway_run(store, "gw", now)
    records, lines, seq = [], [], 0
    for g in range(4):
        for i in range(12):
            hard = i % 3 == 0
            prompt = f"group {g} question {i}: " + ("explain in detail why " * 12 if hard else "name one")
            for endpoint, score in (("cheap", 0.0 if hard else 1.0), ("premium", 1.0)):
                seq += 1
                records.append(_call("gw", seq, endpoint))
                store.add_feedback(f"gw-{seq}", score, "team", now + seq, run_id="gw")
                lines.append(_log_line(f"gw-{seq}", prompt, f"topic{g}"))
    store.add_records(records)
    log = tmp_path / "prompts.jsonl"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = store.url.split("///", 1)[1]
    source = ["--from-feedback", "--store", db, "--prompts", str(log)]

    result = runner.invoke(app, ["router", "eval", *source, "--router", "length", "--format", "json"])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.output)
    assert report["notes"]["feedback_rows"] == 96 and report["notes"]["used"] == 96
    assert "48 prompts, 4 subjects" in report["data"] and "96 feedback rows, 96 used" in report["data"]
    rows = {row["router"]: row for row in report["held_out"]["rows"]}
    assert rows["length"]["apgr"] > 0.8  # long prompts are the hard ones

    out = tmp_path / "router.npz"
    trained = runner.invoke(app, ["router", "train", *source, "--router", "length", "-o", str(out)])
    assert trained.exit_code == 0, trained.output
    assert out.is_file() and "trained length on 48 prompts / 4 subjects" in trained.output

    one_group = tmp_path / "one-group.jsonl"
    one_group.write_text("\n".join(re.sub(r'"topic\d"', '"all"', line) for line in lines), encoding="utf-8")
    flat = runner.invoke(app, ["router", "eval", "--from-feedback", "--store", db, "--prompts", str(one_group)])
    assert flat.exit_code == 2 and "one group" in flat.output.replace("\n", " ")
    both = runner.invoke(app, ["router", "eval", "--from-feedback", "--data", str(log), "--store", db])
    assert both.exit_code == 2 and "not both" in both.output


def test_feedback_through_a_running_gateway(emulator, gateway) -> None:  # noqa: F811
    """The client logs each call's x-tokenrace-request-id with its prompt, asks both endpoints (the model
    names an endpoint), scores the answers through /v1/feedback; the table pairs them."""
    emu = emulator(api="openai", ttft_ms=1, itl_ms=1, tokens=4)
    gw = gateway({"endpoints": [_ep("small", emu), _ep("large", emu)]})
    client = gw.openai()
    log = PromptLog()
    questions = {"What is 2+2?": (1.0, 1.0), "Prove Fermat's last theorem.": (0.0, 0.5)}
    for prompt, scores in questions.items():
        for endpoint, score in zip(("small", "large"), scores, strict=True):
            raw = client.chat.completions.with_raw_response.create(
                model=endpoint, messages=[{"role": "user", "content": prompt}], max_tokens=8
            )
            assert raw.headers["x-tokenrace-endpoint"] == endpoint
            request_id = raw.headers["x-tokenrace-request-id"]
            log.texts[request_id] = prompt
            status, _, _ = gw.request("POST", "/v1/feedback", orjson.dumps({"request_id": request_id, "score": score}))
            assert status == 200
    unlogged = client.chat.completions.with_raw_response.create(
        model="small", messages=[{"role": "user", "content": "hi"}], max_tokens=8
    )
    body = orjson.dumps({"request_id": unlogged.headers["x-tokenrace-request-id"], "score": 1})
    assert gw.request("POST", "/v1/feedback", body)[0] == 200
    assert len(gw.wait_records(5)) == 5

    table = from_gateway_feedback(gw.store, [gw.run_id], prompts=log)
    assert (table.weak, table.strong) == ("small", "large")
    small, large = table.pair()
    got = {p: (w, s) for p, w, s in zip(table.prompts, small.tolist(), large.tolist(), strict=True)}
    assert got == questions
    assert table.notes["used"] == 4 and table.notes["unusable"] == {"single_endpoint": 1}

    # Without the client's log the gateway's own fingerprint pairs the calls (no text: ids in its place).
    records = gw.records()
    assert [r.extra["prompt_sha256"] for r in records] == [
        prompt_fingerprint(p) for p in [*[q for q in questions for _ in range(2)], "hi"]
    ]
    assert all("prompt" not in r.extra for r in records)  # the text only with gateway.record_prompts
    blind = from_gateway_feedback(gw.store, [gw.run_id])
    assert sorted(blind.prompts) == sorted(prompt_fingerprint(q) for q in questions)


def test_a_gateway_that_records_prompts_needs_no_client_log(emulator, gateway) -> None:  # noqa: F811
    emu = emulator(api="openai", ttft_ms=1, itl_ms=1, tokens=4)
    gw = gateway({"endpoints": [_ep("small", emu), _ep("large", emu)], "gateway": {"record_prompts": True}})
    anthropic_client = gw.anthropic()
    for prompt, scores in {"Name a prime.": (1.0, 1.0), "Integrate x^x.": (0.0, 1.0)}.items():
        for endpoint, score in zip(("small", "large"), scores, strict=True):
            raw = anthropic_client.messages.with_raw_response.create(
                model=endpoint, max_tokens=8, system="be brief", messages=[{"role": "user", "content": prompt}]
            )
            body = orjson.dumps({"request_id": raw.headers["x-tokenrace-request-id"], "score": score})
            assert gw.request("POST", "/v1/feedback", body)[0] == 200
    assert len(gw.wait_records(4)) == 4
    table = from_gateway_feedback(gw.store, [gw.run_id])
    assert dict(zip(table.prompts, table.pair()[1].tolist(), strict=True)) == {
        "Integrate x^x.": 1.0,
        "Name a prime.": 1.0,
    }
    assert dict(zip(table.prompts, table.pair()[0].tolist(), strict=True)) == {
        "Integrate x^x.": 0.0,
        "Name a prime.": 1.0,
    }
