"""Workload suites: scorers on right, wrong and messy answers; datasets; generated prompts; the registry."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from tokenrace.records import RequestRecord
from tokenrace.suites import (
    SUITE_NAMES,
    SUITES,
    Score,
    SuiteError,
    _lazy,
    get_suite,
    mixed_requests,
    parse_suites,
)
from tokenrace.suites.chat import ChatSuite
from tokenrace.suites.math import MathSuite, expected_answer, extract_answer, format_number
from tokenrace.suites.rag import RagSuite, bucket_label, build_document, value_found
from tokenrace.suites.structured import SCHEMAS, StructuredSuite, parse_json_answer, validate
from tokenrace.tokenizer import count_tokens
from tokenrace.workloads import CHAT_PROMPTS, WorkloadRequest


def answer(text: str, finish_reason: str = "stop") -> RequestRecord:
    record = RequestRecord(run_id="r", seq=0, endpoint="e", api="openai-chat", model="m")
    record.output_text, record.finish_reason = text, finish_reason
    return record


def take(suite: Any, n: int, seed: int = 0) -> list[WorkloadRequest]:
    return list(itertools.islice(suite.requests(seed), n))


# --- math -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12 * 4 = 48\n48 - 5 = 43\n#### 43", 43),
        ("#### $1,234", 1234),
        ("Total is 1,319 books.\n#### 1,319.", 1319),
        ("First 3 then 7.\n####\n-2", -2),
        ("She pays $20 and gets $4.75 back. #### $4.75", Fraction(19, 4)),
        ("We need 6 cakes × 3/4 cup. The answer is 4.5 cups.", Fraction(9, 2)),
        ("The final answer is: **$18**, since 9 + 9 = 18 and she had 2 bags.", 18),
        ("Answer: 25%", 25),
        ("so we get $\\boxed{3/4}$ of a cup", Fraction(3, 4)),
        ("so we get $\\boxed{\\frac{3}{4}}$", Fraction(3, 4)),
        ("Step 1: 250 / 10 = 25 g per pancake. Step 2: 25 × 34 = 850 grams", 850),
        ("The temperature ends at -2 degrees.", -2),
        ("It rose from −4 to 7 then fell to −2", -2),
        ("x = 0.75", Fraction(3, 4)),
        ("The trip takes 215 minutes (3 h 35 min), so 215", 215),
    ],
)
def test_extract_answer_messy(text: str, value: Fraction | int) -> None:
    assert extract_answer(text)[0] == value


def test_extract_answer_prefers_hashes_then_answer_is_then_last() -> None:
    assert extract_answer("#### 7\nbut checking again 9 times")[0] == 7
    assert extract_answer("The answer is 12. I double-checked 3 times.")[0] == 12
    assert extract_answer("no numbers here") == (None, "")
    assert extract_answer("1,2345")[0] == 2345  # not a thousands group: two numbers


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("Natalia sold 48/2 = 24 clips.\n#### 72", 72),
        ("#### 1,000", 1000),
        ("42", 42),
        ("$4.75", Fraction(19, 4)),
        (42, 42),
        (4.5, Fraction(9, 2)),
        ("-3", -3),
    ],
)
def test_expected_answer_formats(raw: object, value: Fraction | int) -> None:
    assert expected_answer(raw) == value


@pytest.mark.parametrize("raw", ["forty-two", "about 42 or 43", None, True, [], "#### none"])
def test_expected_answer_rejects(raw: object) -> None:
    assert expected_answer(raw) is None


def test_format_number() -> None:
    assert format_number(Fraction(-3, 80)) == "-0.0375"
    assert format_number(Fraction(1, 2**70)).endswith("15625") and "e" not in format_number(Fraction(1, 2**70))
    assert [format_number(Fraction(x)) for x in ("42", "4.75", "-2", "1/3", "0.5")] == [
        "42",
        "4.75",
        "-2",
        "1/3",
        "0.5",
    ]


def test_math_scores_right_wrong_and_unanswered() -> None:
    suite = MathSuite(nonce="")
    request = next(r for r in take(suite, 42) if r.reference["answer"] == "4.75")
    assert "####" in request.prompt and "Lena" in request.prompt
    assert suite.score(request, answer("3 × 4.50 = 13.50; 20 − 13.50 − 1.75 = 4.75\n#### 4.75")) == Score(1.0, "ok")
    assert suite.score(request, answer("Her change is $4.75.")).value == 1.0
    assert suite.score(request, answer("#### 4.750")).value == 1.0
    assert suite.score(request, answer("#### 19/4")).value == 1.0
    assert suite.score(request, answer("#### 5.75")) == Score(0.0, "expected 4.75, got 5.75")
    assert suite.score(request, answer("I am not sure.")) == Score(0.0, "no number in the answer")
    assert suite.score(request, answer("")) == Score(0.0, "empty answer")
    cut = suite.score(request, answer("First, 3 notebooks cost", finish_reason="length"))
    assert cut == Score(0.0, "no final answer (cut off at max_tokens)")
    cut = suite.score(request, answer("First, the notebooks cost", finish_reason="length"))
    assert cut == Score(0.0, "no number in the answer (cut off at max_tokens)")
    assert suite.score(request, answer("... #### 4.75", finish_reason="length")).value == 1.0


def test_math_sample_ships_and_is_consistent() -> None:
    suite = MathSuite()
    assert len(suite.problems) >= 40 and suite.warnings == []
    for problem in suite.problems:
        assert problem.question.endswith("?")
    # Every shipped worked solution ends "... = N" and "#### N" with the same N.
    import importlib.resources

    text = importlib.resources.files("tokenrace").joinpath("data", "math_sample.jsonl").read_text(encoding="utf-8")
    for line in text.splitlines():
        row = json.loads(line)
        work, final = row["answer"].split("\n#### ")
        assert work.rsplit("= ", 1)[1] == final


def test_math_malformed_lines_are_named_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "gsm.jsonl"
    rows = [
        json.dumps({"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"}),
        "{not json",
        json.dumps({"answer": "#### 3"}),
        "",
        json.dumps({"question": "How many?", "answer": "several"}),
        json.dumps(["a", "list"]),
        json.dumps({"question": "What is 10 / 4?", "answer": 2.5}),
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    suite = MathSuite(path=path, nonce="")
    assert [p.line for p in suite.problems] == [1, 7]
    assert [w.split(": ", 1)[0] for w in suite.warnings] == [f"{path}:2", f"{path}:3", f"{path}:5", f"{path}:6"]
    assert "not valid JSON" in suite.warnings[0] and "question" in suite.warnings[1]
    assert "4 malformed lines skipped" in suite.description
    assert {r.prompt_id for r in take(suite, 4)} == {"math-1", "math-7"}


def test_math_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n[]\n", encoding="utf-8")
    with pytest.raises(SuiteError, match="no valid problems"):
        MathSuite(path=bad)
    with pytest.raises(SuiteError, match="cannot read"):
        MathSuite(path=tmp_path / "missing.jsonl")


def test_math_sample_is_a_seeded_subset() -> None:
    ids = {r.prompt_id for r in take(MathSuite(sample=5, nonce=""), 20, seed=3)}
    assert len(ids) == 5
    assert ids == {r.prompt_id for r in take(MathSuite(sample=5, nonce=""), 5, seed=3)}
    assert ids != {r.prompt_id for r in take(MathSuite(sample=5, nonce=""), 5, seed=4)}


# --- structured -------------------------------------------------------------------------------------------


def perfect(request: WorkloadRequest) -> str:
    return json.dumps(request.reference["expected"])


def test_structured_requests_plant_their_values() -> None:
    requests = take(StructuredSuite(nonce=""), 30)
    assert {r.reference["kind"] for r in requests} == {"order", "person", "event"}
    for request in requests:
        text = request.prompt.rsplit("Text: ", 1)[1]
        expected = request.reference["expected"]
        for field in ("order_id", "customer_name", "full_name", "email", "venue", "title", "delivery_city", "city"):
            if field in expected:
                assert expected[field] in text, (field, text)
        fmt = request.params["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
        assert fmt["json_schema"]["schema"] == SCHEMAS[request.reference["kind"]]
        assert request.params["temperature"] == 0.0
        assert request.input_tokens == count_tokens(request.prompt)
        assert request.prompt_id == f"structured-{request.reference['kind']}-{request.prompt_id.rsplit('-', 1)[1]}"
    assert "response_format" not in take(StructuredSuite(response_format=False), 1)[0].params


def test_structured_perfect_and_messy_answers_score_1() -> None:
    suite = StructuredSuite(nonce="")
    for request in take(suite, 6):
        assert suite.score(request, answer(perfect(request))) == Score(1.0, "ok")
        fenced = f"Sure! Here is the record:\n```json\n{json.dumps(request.reference['expected'], indent=2)}\n```\nAnything else?"
        assert suite.score(request, answer(fenced)).value == 1.0
        prose = f"The extracted object is {perfect(request)} as requested."
        assert suite.score(request, answer(prose)).value == 1.0
        shouty = {
            k: (f"  {v.upper()} " if isinstance(v, str) and k not in ("currency", "category") else v)
            for k, v in request.reference["expected"].items()
        }
        assert suite.score(request, answer(json.dumps(shouty))).value == 1.0
        assert suite.score(request, answer("<think>{maybe}</think>" + perfect(request))).value == 1.0


def test_structured_wrong_fields_get_partial_credit_and_are_named() -> None:
    suite = StructuredSuite(nonce="", kinds=("order",))
    request = take(suite, 1)[0]
    got = dict(request.reference["expected"])
    got["quantity"] += 1
    got["delivery_city"] = "Atlantis"
    score = suite.score(request, answer(json.dumps(got)))
    assert score.value == pytest.approx(7 / 9)
    assert score.reason.startswith("2/9 fields wrong: ")
    assert "quantity (expected" in score.reason and 'got "Atlantis"' in score.reason
    got = dict(request.reference["expected"], unit_price=float(request.reference["expected"]["unit_price"]) + 0.0)
    assert suite.score(request, answer(json.dumps(got))).value == 1.0


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.update(quantity=str(d["quantity"])), "$.quantity: expected integer, got string"),
        (lambda d: d.pop("order_id"), "$: missing 'order_id'"),
        (lambda d: d.update(notes="fragile"), "$: unexpected property 'notes'"),
        (lambda d: d.update(currency="YEN"), "$.currency: 'YEN' is not one of"),
        (lambda d: d.update(gift_wrap="yes"), "$.gift_wrap: expected boolean, got string"),
        (lambda d: d.update(quantity=2.5), "$.quantity: expected integer, got number"),
    ],
)
def test_structured_schema_violations_score_0(change: Any, reason: str) -> None:
    suite = StructuredSuite(nonce="", kinds=("order",))
    request = take(suite, 1)[0]
    got = dict(request.reference["expected"])
    change(got)
    score = suite.score(request, answer(json.dumps(got)))
    assert score.value == 0.0 and score.reason.startswith("schema violation: ") and reason in score.reason


def test_structured_not_json_scores_0() -> None:
    suite = StructuredSuite(nonce="")
    request = take(suite, 1)[0]
    assert suite.score(request, answer("The order is for seven tents.")) == Score(0.0, "not valid JSON")
    assert suite.score(request, answer('{"order_id": "Z1", ', "length")) == Score(
        0.0, "not valid JSON (cut off at max_tokens)"
    )
    assert suite.score(request, answer("[1, 2]")).reason == "schema violation: $: expected object, got array"
    assert suite.score(request, answer("")) == Score(0.0, "empty answer")


def test_validate_subset() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}, "xs": {"type": "array", "items": {"type": "number"}}},
    }
    assert validate({"n": 3.0, "xs": [1, 2.5]}, schema) == []  # JSON Schema: 3.0 is an integer
    assert validate({"n": True}, schema) == ["$.n: expected integer, got boolean"]
    assert validate({"xs": [1, "2"]}, schema) == ["$.xs[1]: expected number, got string"]
    assert validate(None, {"type": ["object", "null"]}) == []
    assert validate(1, {"enum": [True]}) == ["$: 1 is not one of [True]"]  # 1 == True in Python, not in JSON


def test_parse_json_answer_edge_cases() -> None:
    assert parse_json_answer('```\n{"a": 1}\n```') == {"a": 1}
    assert parse_json_answer("null") is None
    assert parse_json_answer('first ```json\n{"a": 1}\n``` then ```json\n{"a": 2}\n```') == {"a": 2}


# --- rag --------------------------------------------------------------------------------------------------


def test_rag_contexts_hit_their_lengths_and_hold_the_facts() -> None:
    suite = RagSuite(contexts=(1000, 2500, 4000, 16000), sample=8, nonce="run1")
    requests = take(suite, 8)
    assert [r.reference["bucket"] for r in requests[:4]] == ["1k", "2.5k", "4k", "16k"]  # lengths in turn
    for request in requests:
        target = request.reference["context"]
        assert request.input_tokens == count_tokens(request.prompt)
        assert abs(request.input_tokens - target) <= 0.05 * target, (request.prompt_id, request.input_tokens)
        assert re.fullmatch(rf"rag-{request.reference['bucket']}-\d+", request.prompt_id)
        body = request.prompt.split("<document>", 1)[1].split("</document>", 1)[0]
        assert len(request.reference["facts"]) == 4 and len(request.reference["asked"]) == 2
        for fact in request.reference["facts"]:
            assert fact["value"] in body and 0 <= fact["depth"] <= 1
        questions = request.prompt.rsplit("</document>", 1)[1]
        for fact in request.reference["asked"]:
            assert fact["question"] in questions
            assert fact in request.reference["facts"]
        assert not re.search(
            r"\d", re.sub("|".join(re.escape(f["value"]) for f in request.reference["facts"]), "", body)
        )
    depths = [f["depth"] for r in requests for f in r.reference["facts"]]
    assert min(depths) < 0.25 and max(depths) > 0.75


@pytest.mark.parametrize("context", [300, 500, 1000, 32000])
def test_rag_lengths_hold_across_seeds(context: int) -> None:
    for seed in range(5):
        text = build_document(seed, context, seed, 4, 2).text
        assert abs(count_tokens(text) - context) <= 0.05 * context


def test_rag_input_tokens_are_exact_for_every_tag() -> None:
    suite = RagSuite(contexts=(1000,), sample=2)  # a random nonce; request numbers grow to 3 digits
    for request in itertools.islice(suite.requests(5), 0, 150, 7):
        assert request.input_tokens == count_tokens(request.prompt)


def test_rag_builds_documents_before_the_first_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a long prompt inside next() would stall the event loop mid-run."""
    import tokenrace.suites.rag as rag

    built: list[int] = []
    real = rag.build_document
    monkeypatch.setattr(rag, "build_document", lambda *a: built.append(a[1]) or real(*a))
    stream = RagSuite(contexts=(1000, 2000), sample=4, nonce="").requests(0)
    assert sorted(built) == [1000, 1000, 2000, 2000]
    next(stream)
    assert len(built) == 4


def test_rag_max_context_skips_long_prompts() -> None:
    suite = RagSuite(max_context=8192, max_tokens=256, nonce="")
    assert suite.contexts == (1000, 4000) and suite.skipped == (16000,)
    assert "16k skipped" in suite.description and "max_context 8192" in suite.description
    assert {r.reference["bucket"] for r in take(suite, 10)} == {"1k", "4k"}
    for request in take(suite, 10):
        assert request.input_tokens + 256 <= 8192
    with pytest.raises(SuiteError, match="no context length fits max_context 900"):
        RagSuite(max_context=900)


def test_rag_options_are_checked() -> None:
    with pytest.raises(SuiteError, match="contexts"):
        RagSuite(contexts=(100,))
    with pytest.raises(SuiteError, match="ask"):
        RagSuite(facts=2, ask=3)
    with pytest.raises(SuiteError, match="need contexts of at least"):
        RagSuite(facts=20, ask=5, contexts=(1000, 4000))
    assert RagSuite(contexts=2000, nonce="").contexts == (2000,)


def test_rag_sample_is_dealt_across_lengths() -> None:
    suite = RagSuite(sample=4, contexts=(1000, 2000), nonce="")
    ids = Counter(r.prompt_id for r in take(suite, 12))
    assert set(ids) == {"rag-1k-0", "rag-1k-1", "rag-2k-0", "rag-2k-1"} and set(ids.values()) == {3}


def test_rag_scoring() -> None:
    suite = RagSuite(contexts=(1000,), nonce="")
    request = take(suite, 1)[0]
    first, second = (f["value"] for f in request.reference["asked"])
    assert suite.score(request, answer(f"1. {first}\n2. {second}")) == Score(1.0, "ok")
    half = suite.score(request, answer(f"1. {first}\n2. I could not find it."))
    assert half.value == 0.5 and half.reason.startswith("missed 1/2: ") and second in half.reason
    assert suite.score(request, answer("I don't know.")).value == 0.0
    assert suite.score(request, answer("", "length")) == Score(0.0, "empty answer (cut off at max_tokens)")


def test_value_found_normalises() -> None:
    assert value_found("7341", "The code is 7,341.")
    assert not value_found("7341", "The code is 17341.")
    assert value_found("cobalt-thistle", "Password: Cobalt Thistle")
    assert value_found("R18", "bay r18")
    assert value_found("Imogen Brandt", "It is imogen  brandt.")
    assert not value_found("R18", "bay R180")


def test_bucket_label() -> None:
    assert [bucket_label(n) for n in (500, 1000, 1500, 16000, 32768, 128000)] == [
        "500",
        "1k",
        "1.5k",
        "16k",
        "32768",
        "128k",
    ]


# --- chat -------------------------------------------------------------------------------------------------


def test_chat_is_unscored_and_uses_the_builtin_prompts() -> None:
    suite = ChatSuite(nonce="n")
    requests = take(suite, len(CHAT_PROMPTS))
    assert sorted(r.prompt_id for r in requests) == sorted(f"chat-{i}" for i in range(len(CHAT_PROMPTS)))
    for request in requests:
        assert request.prompt.split(") ", 1)[1] == CHAT_PROMPTS[int(request.prompt_id.split("-")[1])]
        assert request.suite == "chat" and request.max_tokens == 256
    assert suite.score(requests[0], answer("Sure!")) is None
    assert SUITES["chat"].scored is False
    assert all(SUITES[name].scored for name in SUITE_NAMES if name != "chat")


# --- every suite --------------------------------------------------------------------------------------------

OWN = ("chat", "math", "structured", "rag")
SMALL: dict[str, dict[str, Any]] = {"rag": {"contexts": (1000, 2000)}}


@pytest.mark.parametrize("name", OWN)
def test_seeded_reproducibility(name: str) -> None:
    def build() -> Any:
        return get_suite(name, sample=6, nonce="fixed", **SMALL.get(name, {}))

    first, again, other = take(build(), 12, seed=7), take(build(), 12, seed=7), take(build(), 12, seed=8)
    assert [(r.prompt_id, r.messages, r.reference, r.params) for r in first] == [
        (r.prompt_id, r.messages, r.reference, r.params) for r in again
    ]
    assert [(r.prompt_id, r.messages) for r in first] != [(r.prompt_id, r.messages) for r in other]


@pytest.mark.parametrize("name", OWN)
def test_requests_are_well_formed_and_unique_per_run(name: str) -> None:
    suite = get_suite(name, sample=3, max_tokens=77, **SMALL.get(name, {}))
    requests = take(suite, 9)
    for request in requests:
        assert request.suite == name
        assert request.max_tokens == 77
        assert request.params["temperature"] == 0.0
        assert request.input_tokens == count_tokens(request.prompt)
        assert request.messages[0]["role"] == "user"
        assert request.prompt_id.startswith(f"{name}-")
        assert name == "chat" or request.reference
    assert len({r.prompt for r in requests}) == 9  # a repeat of an item still gets a fresh prompt
    nonces = {take(get_suite(name, **SMALL.get(name, {})), 1)[0].prompt.split("-", 1)[0] for _ in range(3)}
    assert len(nonces) == 3  # a fresh nonce per run: no prompt cache carries over


@pytest.mark.parametrize("name", OWN)
@pytest.mark.parametrize("options", [{"sample": 0}, {"sample": -1}, {"max_tokens": 0}, {"sample": "3"}])
def test_common_options_are_checked(name: str, options: dict[str, Any]) -> None:
    with pytest.raises(SuiteError):
        get_suite(name, **options)


# --- registry and mixing ------------------------------------------------------------------------------------


def test_registry_names_and_errors() -> None:
    assert set(SUITE_NAMES) == {"agent", "chat", "coding", "custom", "math", "structured", "rag", "tools"}
    for name, info in SUITES.items():
        assert info.name == name and info.description
    with pytest.raises(SuiteError) as caught:
        get_suite("poetry")
    assert "unknown suite 'poetry'" in str(caught.value)
    assert all(name in str(caught.value) for name in SUITE_NAMES)
    with pytest.raises(SuiteError) as caught:
        parse_suites("chat, poetry,rag,prose")
    assert "'poetry', 'prose'" in str(caught.value) and all(name in str(caught.value) for name in SUITE_NAMES)
    with pytest.raises(SuiteError, match="listed twice: math"):
        parse_suites("math,chat,math")
    with pytest.raises(SuiteError, match="no suites"):
        parse_suites(" , ")
    with pytest.raises(SuiteError, match=r"unknown option\(s\) window; valid options: .*max_context"):
        get_suite("rag", window=4096)


def test_parse_suites_builds_in_order_with_options() -> None:
    suites = parse_suites("rag, math,chat", {"rag": {"contexts": (1000,)}, "math": {"sample": 2}})
    assert [s.name for s in suites] == ["rag", "math", "chat"]
    assert suites[0].contexts == (1000,) and suites[1].sample == 2
    with pytest.raises(SuiteError, match="not in"):
        parse_suites("chat", {"math": {"sample": 2}})


def test_missing_suite_module_is_a_suite_error() -> None:
    with pytest.raises(SuiteError, match="suite 'ghost' is unavailable: No module named"):
        _lazy("ghost", "tokenrace.suites.no_such_module", "GhostSuite")()
    with pytest.raises(SuiteError, match="has no GhostSuite"):
        _lazy("ghost", "tokenrace.suites.chat", "GhostSuite")()


class Finite:
    """A stand-in suite with a fixed number of requests."""

    def __init__(self, name: str, count: int) -> None:
        self.name, self.description, self.count = name, name, count

    def requests(self, seed: int = 0) -> Iterator[WorkloadRequest]:
        for i in range(self.count):
            yield WorkloadRequest(prompt_id=f"{self.name}-{i}", messages=[], suite=self.name)

    def score(self, request: WorkloadRequest, record: RequestRecord) -> Score:
        return Score(1.0, "ok")


def test_mixed_requests_round_robin() -> None:
    suites = [Finite("a", 100), Finite("b", 100), Finite("c", 100)]
    assert [r.suite for r in itertools.islice(mixed_requests(suites, 0), 7)] == list("abcabca")
    real = [get_suite("chat"), get_suite("math"), get_suite("structured")]
    assert [r.suite for r in itertools.islice(mixed_requests(real, 1), 6)] == ["chat", "math", "structured"] * 2


def test_mixed_requests_weights_and_exhaustion() -> None:
    suites = [Finite("a", 100), Finite("b", 100)]
    picks = [r.suite for r in itertools.islice(mixed_requests(suites, 0, weights={"b": 3}), 40)]
    assert Counter(picks) == {"a": 10, "b": 30} and picks[:4].count("b") == 3
    assert Counter(r.suite for r in itertools.islice(mixed_requests(suites, 0, [1, 0]), 5)) == {"a": 5}
    drained = [r.prompt_id for r in mixed_requests([Finite("a", 1), Finite("b", 3)], 0)]
    assert drained == ["a-0", "b-0", "b-1", "b-2"]
    for bad in ([1.0], [0, 0], [-1, 1], {"z": 1}, [float("nan"), 1]):
        with pytest.raises(SuiteError):
            mixed_requests(suites, 0, bad)
    with pytest.raises(SuiteError):
        mixed_requests([], 0)


def test_a_suite_keeps_its_own_sequence_when_mixed() -> None:
    math_alone = [r.prompt_id for r in take(MathSuite(nonce=""), 5, seed=2)]
    mixed = mixed_requests([ChatSuite(nonce=""), MathSuite(nonce="")], 2)
    math_mixed = [r.prompt_id for r in itertools.islice(mixed, 10) if r.suite == "math"]
    assert math_mixed == math_alone
