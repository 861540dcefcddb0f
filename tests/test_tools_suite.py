"""The tools suite: BFCL data loading (installed, cached, downloaded), tool schemas, and the call checker.

The data comes from the pinned bfcl-eval wheel in /tmp/bfcl (or $TOKENRACE_TEST_BFCL_WHEELS); without it
one real `pip download` is tried, and the data tests are skipped if that fails too. The checker's own rules
are also tested on hand-made references that need no data at all.
"""

from __future__ import annotations

import collections
import importlib.metadata
import itertools
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from tokenrace.records import RequestRecord
from tokenrace.suites import tools
from tokenrace.suites.base import Score, Suite, SuiteError
from tokenrace.suites.tools import (
    PACKAGE,
    PIP_INSTALL,
    VERSION,
    ToolsSuite,
    accepted_calls,
    api_name,
    load_bfcl,
    score_tool_calls,
    to_json_schema,
    to_tools,
)
from tokenrace.workloads import WorkloadRequest

EXPECTED_COUNTS = {"simple": 400, "multiple": 200, "parallel": 200, "parallel_multiple": 200}
DATA_DIR = f"{PACKAGE}-{VERSION}"


# --- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def bfcl_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pinned wheel: a local copy if there is one, else one real download, else the test is skipped."""
    folder = Path(os.environ.get("TOKENRACE_TEST_BFCL_WHEELS", "/tmp/bfcl"))
    for wheel in sorted(folder.glob(f"bfcl_eval-{VERSION}-*.whl")):
        return wheel
    try:
        return tools._download_wheel(tmp_path_factory.mktemp("bfcl-wheel"))
    except SuiteError as exc:
        pytest.skip(f"no {PACKAGE} wheel here and none could be downloaded: {exc}")


@pytest.fixture(autouse=True)
def _not_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests choose their data source: an installed bfcl-eval is ignored and the user's cache is never used."""
    monkeypatch.setattr(tools, "_installed_files", lambda: None)
    monkeypatch.setenv("TOKENRACE_CACHE_DIR", str(tmp_path / "user-cache"))


@pytest.fixture(scope="module")
def seeded_cache(bfcl_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache pre-seeded from the wheel, so no test needs the network."""
    cache = tmp_path_factory.mktemp("cache")
    tools._extract(bfcl_wheel, cache / "datasets" / DATA_DIR)
    return cache


@pytest.fixture(scope="module")
def every_category(seeded_cache: Path) -> ToolsSuite:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tools, "_installed_files", lambda: None)
        return ToolsSuite(categories=tuple(EXPECTED_COUNTS), nonce="", cache=seeded_cache)


@pytest.fixture(scope="module")
def all_requests(every_category: ToolsSuite) -> list[WorkloadRequest]:
    """One request per question of every category (one full pass of the cycle)."""
    total = sum(len(questions) for questions in every_category.questions.values())
    return list(itertools.islice(every_category.requests(seed=0), total))


@pytest.fixture(scope="module")
def by_id(all_requests: list[WorkloadRequest]) -> dict[str, WorkloadRequest]:
    return {request.prompt_id: request for request in all_requests}


def record_with(calls: list[dict[str, Any]], text: str = "", finish_reason: str = "tool_calls") -> RequestRecord:
    record = RequestRecord(run_id="r", seq=0, endpoint="e", api="openai-chat", model="m")
    record.tool_calls = calls
    record.output_text = text
    record.finish_reason = finish_reason
    return record


def call(name: str, args: dict[str, Any] | str) -> dict[str, Any]:
    arguments = args if isinstance(args, str) else orjson.dumps(args).decode()
    return {"id": "call_x", "name": name, "arguments": arguments}


# --- data ------------------------------------------------------------------------------------------------


def test_downloads_extracts_and_then_uses_the_cache(
    bfcl_wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched: list[Path] = []

    def fake_download(dest: Path) -> Path:
        fetched.append(dest)
        return Path(shutil.copy(bfcl_wheel, dest))

    monkeypatch.setattr(tools, "_download_wheel", fake_download)
    data = load_bfcl(cache=tmp_path)
    assert {category: len(questions) for category, questions in data.items()} == {
        "simple": 400,
        "multiple": 200,
        "parallel": 200,
    }
    assert len(fetched) == 1
    target = tmp_path / "datasets" / DATA_DIR
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*.json")) == sorted(tools._MEMBERS)
    assert not list((tmp_path / "datasets").glob("download-*")), "the downloaded wheel is not kept"
    assert not list(target.rglob("*.tmp"))

    def no_network(dest: Path) -> Path:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(tools, "_download_wheel", no_network)
    again = load_bfcl(["parallel"], cache=tmp_path)
    assert again["parallel"] == data["parallel"]


def test_real_pip_download_path(bfcl_wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real `pip download --no-deps` subprocess, pointed at a local folder instead of an index."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(bfcl_wheel.parent))
    data = load_bfcl(["simple"], cache=tmp_path)
    assert len(data["simple"]) == 400
    first = data["simple"][0]
    assert first.id == "simple_python_0"
    assert first.messages[0]["role"] == "user"
    assert first.answers == [{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}]


def test_fetch_failure_names_the_pip_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    with pytest.raises(SuiteError, match=re.escape(PIP_INSTALL)):
        ToolsSuite(cache=tmp_path / "cache")
    assert not list((tmp_path / "cache" / "datasets").glob("download-*"))


def test_a_wheel_with_another_hash_is_refused(
    bfcl_wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(bfcl_wheel.parent))
    monkeypatch.setattr(tools, "WHEEL_SHA256", "0" * 64)
    with pytest.raises(SuiteError, match="sha256"):
        load_bfcl(cache=tmp_path)
    assert not (tmp_path / "datasets" / DATA_DIR / "BFCL_v4_simple_python.json").exists()


def test_installed_package_is_used_without_touching_the_cache(
    bfcl_wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site-packages"
    tools._extract(bfcl_wheel, site / "bfcl_eval" / "data")

    class FakeDist:
        version = VERSION

        def locate_file(self, path: str) -> Path:
            return site / path

    monkeypatch.undo()  # the real _installed_files, with a fake distribution
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: FakeDist())
    data = load_bfcl(["multiple"], cache=tmp_path / "cache")
    assert len(data["multiple"]) == 200
    assert not (tmp_path / "cache").exists()

    FakeDist.version = "2024.1.1"  # another version holds other data: the pinned one is fetched instead
    monkeypatch.setattr(tools, "_download_wheel", lambda dest: Path(shutil.copy(bfcl_wheel, dest)))
    assert len(load_bfcl(["multiple"], cache=tmp_path / "cache")["multiple"]) == 200
    assert (tmp_path / "cache" / "datasets" / DATA_DIR).is_dir()


def test_reads_a_json_array_too(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text('[{"id": "a"}, {"id": "b"}]')
    assert tools._read_rows(path) == [{"id": "a"}, {"id": "b"}]
    path.write_text('{"id": "a"}\n\n{"id": "b"}\n')
    assert tools._read_rows(path) == [{"id": "a"}, {"id": "b"}]
    path.write_text('{"id": "a"}\n{"id": \n')
    with pytest.raises(SuiteError, match="not valid JSON"):
        tools._read_rows(path)


def test_counts_per_category(every_category: ToolsSuite) -> None:
    assert {c: len(q) for c, q in every_category.questions.items()} == EXPECTED_COUNTS


# --- requests and tool schemas ---------------------------------------------------------------------------

SCHEMA_KEYWORDS = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "default",
    "format",
    "title",
    "examples",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minLength",
    "maxLength",
    "pattern",
    "minProperties",
    "maxProperties",
}
JSON_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}


def is_instance(value: Any, json_type: str | None) -> bool:
    checks: dict[str | None, Callable[[Any], bool]] = {
        None: lambda v: True,
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "integer": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer(),
    }
    return bool(checks[json_type](value))


def check_schema(node: Any, where: str) -> None:
    """A structural check of JSON Schema (draft 2020-12 keywords, the subset tools use)."""
    assert isinstance(node, dict), where
    assert set(node) <= SCHEMA_KEYWORDS, f"{where}: not JSON Schema keywords: {set(node) - SCHEMA_KEYWORDS}"
    json_type = node.get("type")
    assert json_type is None or json_type in JSON_TYPES, f"{where}: type {json_type!r}"
    if "description" in node:
        assert isinstance(node["description"], str), where
    if "properties" in node:
        assert json_type == "object" and isinstance(node["properties"], dict), where
        for name, sub in node["properties"].items():
            check_schema(sub, f"{where}.{name}")
    if "required" in node:
        required = node["required"]
        assert json_type == "object", where
        assert isinstance(required, list) and all(isinstance(r, str) for r in required), where
        assert len(set(required)) == len(required), where
    if "items" in node:
        assert json_type == "array", where
        check_schema(node["items"], f"{where}[]")
    if "additionalProperties" in node and not isinstance(node["additionalProperties"], bool):
        check_schema(node["additionalProperties"], f"{where}{{}}")
    if "enum" in node:
        assert isinstance(node["enum"], list) and node["enum"], where
        assert all(is_instance(v, json_type) for v in node["enum"]), f"{where}: enum {node['enum']}"
    if "default" in node:
        assert is_instance(node["default"], json_type), f"{where}: default {node['default']!r} is not {json_type}"


def test_every_function_converts_to_valid_json_schema(all_requests: list[WorkloadRequest]) -> None:
    functions = 0
    for request in all_requests:
        tool_list = request.params["tools"]
        names = request.reference["names"]
        assert [t["function"]["name"] for t in tool_list] == list(names), request.prompt_id
        for tool in tool_list:
            assert set(tool) == {"type", "function"} and tool["type"] == "function"
            function = tool["function"]
            assert set(function) == {"name", "description", "parameters"}
            assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", function["name"]), function["name"]
            assert isinstance(function["description"], str) and function["description"]
            parameters = function["parameters"]
            where = f"{request.prompt_id}:{function['name']}"
            assert parameters["type"] == "object", where
            assert set(parameters["required"]) <= set(parameters["properties"]), where
            check_schema(parameters, where)
            functions += 1
    assert functions > 1000


def test_bfcl_types_and_names_are_converted(by_id: dict[str, WorkloadRequest]) -> None:
    def params(prompt_id: str, index: int = 0) -> dict[str, Any]:
        return cast(dict[str, Any], by_id[prompt_id].params["tools"][index]["function"]["parameters"]["properties"])

    assert by_id["simple_python_1"].params["tools"][0]["function"]["name"] == "math_factorial"
    assert by_id["simple_python_1"].reference["names"] == {"math_factorial": "math.factorial"}
    assert params("simple_python_83")["coord1"]["type"] == "array"  # tuple
    assert params("simple_python_83")["coord1"]["items"] == {"type": "number"}  # float
    assert "type" not in params("simple_python_109")["data"]  # any
    assert params("simple_python_55")["detailed"]["default"] is False  # BFCL writes "false"
    museum = params("simple_python_277")["information"]
    assert "default" not in museum and museum["type"] == "array"  # BFCL's default "all" is not an array
    nested = params("simple_python_96")["conditions"]
    assert nested["items"]["type"] == "object" and nested["items"]["required"] == ["field", "operation", "value"]


def test_to_json_schema_and_api_name_directly() -> None:
    bfcl = {
        "type": "dict",
        "properties": {
            "x": {"type": "float", "description": "a", "optional": True},
            "when": {"type": "tuple", "items": {"type": "integer"}},
            "blob": {"type": "any", "default": None},
            "opts": {"type": "dict", "properties": {"deep": {"type": "boolean", "default": "True"}}},
        },
        "required": ["x", "x"],
        "optional": ["blob"],
    }
    assert to_json_schema(bfcl) == {
        "type": "object",
        "properties": {
            "x": {"type": "number", "description": "a"},
            "when": {"type": "array", "items": {"type": "integer"}},
            "blob": {"default": None},
            "opts": {"type": "object", "properties": {"deep": {"type": "boolean", "default": True}}},
        },
        "required": ["x"],
    }
    assert api_name("math.factorial") == "math_factorial"
    assert api_name("a.b", taken=["a_b"]) == "a_b_2"
    assert len(api_name("x" * 80)) == 64
    tool_list, names = to_tools([{"name": "a.b", "description": "d", "parameters": {}}, {"name": "a_b"}])
    assert [t["function"]["name"] for t in tool_list] == ["a_b", "a_b_2"]
    assert names == {"a_b": "a.b", "a_b_2": "a_b"}
    assert tool_list[1]["function"]["parameters"] == {"type": "object", "properties": {}, "required": []}


def test_request_shape(every_category: ToolsSuite, by_id: dict[str, WorkloadRequest]) -> None:
    suite: Suite = every_category
    assert suite.name == "tools" and suite.description
    request = by_id["parallel_0"]
    assert request.suite == "tools"
    assert request.max_tokens == 256
    assert request.messages == every_category.questions["parallel"][0].messages
    assert request.params["tool_choice"] == "auto"
    assert request.params["temperature"] == 0
    assert request.input_tokens and request.input_tokens > 30
    reference = request.reference
    assert reference["category"] == "parallel" and reference["id"] == "parallel_0"
    assert reference["names"] == {"spotify_play": "spotify.play"}
    assert reference["answers"] == every_category.questions["parallel"][0].answers
    assert reference["signatures"] == {
        "spotify.play": {"params": ["artist", "duration"], "required": ["artist", "duration"]}
    }


def test_each_request_is_unique_but_the_question_is_bfcls(seeded_cache: Path) -> None:
    suite = ToolsSuite(categories=["parallel"], sample=2, nonce="abc", cache=seeded_cache)
    first, second, third = itertools.islice(suite.requests(), 3)
    question = {q.id: q for q in suite.questions["parallel"]}[first.prompt_id]
    assert first.messages == [{"role": "user", "content": "(abc-0) " + question.messages[0]["content"]}]
    assert second.messages[0]["content"].startswith("(abc-1) ")
    assert third.messages[0]["content"].startswith("(abc-2) ") and third.prompt_id in {
        first.prompt_id,
        second.prompt_id,
    }
    assert question.messages[0]["content"][:1] != "("  # the data itself is untouched
    assert first.input_tokens and first.input_tokens > 30
    assert "parallel 200" in suite.description and "2 of" in suite.description
    fresh = [next(iter(ToolsSuite(categories=["simple"], sample=1, cache=seeded_cache).requests())) for _ in range(2)]
    assert fresh[0].messages[0]["content"] != fresh[1].messages[0]["content"]  # a new nonce per run


def test_seeded_order_cycles_through_everything(seeded_cache: Path) -> None:
    suite = ToolsSuite(cache=seeded_cache)
    total = 800
    first = [r.prompt_id for r in itertools.islice(suite.requests(seed=3), 2 * total)]
    assert len(set(first[:total])) == total
    assert set(first[total:]) == set(first[:total])  # the second pass asks the same questions, reshuffled
    assert first[total:] != first[:total]
    assert [r.prompt_id for r in itertools.islice(suite.requests(seed=3), 50)] == first[:50]
    assert [r.prompt_id for r in itertools.islice(suite.requests(seed=4), 50)] != first[:50]


def test_sample_is_spread_over_categories(seeded_cache: Path) -> None:
    suite = ToolsSuite(categories="simple,parallel", sample=5, max_tokens=64, cache=seeded_cache)
    assert suite.categories == ("simple", "parallel")
    requests = list(itertools.islice(suite.requests(seed=1), 15))
    ids = [r.prompt_id for r in requests]
    assert len(set(ids[:5])) == 5 and set(ids) == set(ids[:5])
    counts = collections.Counter(r.reference["category"] for r in requests[:5])
    assert counts == {"simple": 3, "parallel": 2}
    assert all(r.max_tokens == 64 for r in requests)
    again = list(
        itertools.islice(ToolsSuite(sample=5, categories=("simple", "parallel"), cache=seeded_cache).requests(1), 5)
    )
    assert [r.prompt_id for r in again] == ids[:5]
    big = ToolsSuite(categories=["multiple"], sample=10_000, cache=seeded_cache)
    assert len({r.prompt_id for r in itertools.islice(big.requests(), 400)}) == 200


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"categories": ("simple", "bogus")}, "unknown tools category bogus; valid: simple, multiple, parallel"),
        ({"categories": ()}, "no tools category given"),
        ({"sample": 0}, "sample"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_bad_options(options: dict[str, Any], message: str, seeded_cache: Path) -> None:
    with pytest.raises(SuiteError, match=re.escape(message)):
        ToolsSuite(cache=seeded_cache, **options)


# --- the checker on the real data ------------------------------------------------------------------------


def test_every_accepted_answer_scores_one(every_category: ToolsSuite, all_requests: list[WorkloadRequest]) -> None:
    """The strongest test of the checker: BFCL's own answer, sent as tool calls, passes for every question."""
    failures = []
    for request in all_requests:
        score = every_category.score(request, record_with(accepted_calls(request.reference)))
        if score.value != 1.0:
            failures.append(f"{request.prompt_id}: {score.reason}")
    assert not failures, failures[:20]
    assert len(all_requests) == sum(EXPECTED_COUNTS.values())


def spoil(value: Any) -> Any:
    """A value no BFCL alternative accepts."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1000.5
    if isinstance(value, str):
        return value + " zzz"
    if isinstance(value, list):
        return [*value, "zzz"]
    if isinstance(value, dict):
        return {**value, "zzz": 1}
    return "zzz"


def test_every_spoiled_answer_scores_zero(every_category: ToolsSuite, all_requests: list[WorkloadRequest]) -> None:
    """The other side: one wrong value, or a required parameter dropped, fails every question."""
    spoiled = dropped = 0
    for request in all_requests:
        calls = accepted_calls(request.reference)
        args = orjson.loads(calls[0]["arguments"])
        if args:
            param = next(iter(args))
            bad = [{**calls[0], "arguments": orjson.dumps({**args, param: spoil(args[param])}).decode()}, *calls[1:]]
            score = every_category.score(request, record_with(bad))
            assert score.value == 0.0 and param in score.reason, (request.prompt_id, score.reason)
            spoiled += 1
        signature = request.reference["signatures"][request.reference["names"][calls[0]["name"]]]
        if signature["required"]:
            param = signature["required"][0]
            less = {k: v for k, v in args.items() if k != param}
            bad = [{**calls[0], "arguments": orjson.dumps(less).decode()}, *calls[1:]]
            score = every_category.score(request, record_with(bad))
            assert score.value == 0.0, request.prompt_id
            dropped += 1
    assert spoiled > 900 and dropped > 900


def test_parallel_calls_in_any_order_score_one(every_category: ToolsSuite, all_requests: list[WorkloadRequest]) -> None:
    parallel = [r for r in all_requests if r.reference["category"].startswith("parallel")]
    assert len(parallel) == 400
    for request in parallel:
        calls = accepted_calls(request.reference)
        assert len(calls) >= 2
        for shuffled in (calls[::-1], calls[1:] + calls[:1]):
            score = every_category.score(request, record_with(shuffled))
            assert score.value == 1.0, (request.prompt_id, score.reason)


def test_wrong_function_among_several(every_category: ToolsSuite, by_id: dict[str, WorkloadRequest]) -> None:
    request = by_id["multiple_0"]
    (right,) = accepted_calls(request.reference)
    wrong = next(name for name in request.reference["names"] if name != right["name"])
    score = every_category.score(request, record_with([{**right, "name": wrong}]))
    assert score.value == 0.0
    assert score.reason == f"called {wrong}, expected {right['name']}"


def test_wrong_value_missing_required_and_extra_param(
    every_category: ToolsSuite, by_id: dict[str, WorkloadRequest]
) -> None:
    request = by_id["simple_python_0"]  # calculate_triangle_area(base=10, height=5, unit="units" or left out)

    def score(args: dict[str, Any]) -> tuple[float, str]:
        result = every_category.score(request, record_with([call("calculate_triangle_area", args)]))
        return result.value, result.reason

    assert score({"base": 10, "height": 5}) == (1.0, "ok")
    assert score({"base": 10, "height": 5, "unit": " UNITS"}) == (1.0, "ok")
    assert score({"base": 10.0, "height": 5}) == (1.0, "ok")  # an integral number is an integer in JSON Schema
    assert score({"base": 10, "height": 5, "unit": "F"}) == (0.0, "param unit: got 'F', accepted ['units', '']")
    assert score({"base": 11, "height": 5}) == (0.0, "param base: got 11, accepted [10]")
    assert score({"base": "10", "height": 5}) == (0.0, "param base: got '10', accepted [10]")
    assert score({"height": 5}) == (0.0, "missing required param base")
    assert score({"base": 10, "height": 5, "color": "red"}) == (0.0, "unknown param color")


def test_parallel_faults(every_category: ToolsSuite, by_id: dict[str, WorkloadRequest]) -> None:
    request = by_id["parallel_0"]  # spotify.play Taylor Swift 20 min, Maroon 5 15 min
    taylor = call("spotify_play", {"artist": "Taylor Swift", "duration": 20})
    maroon = call("spotify_play", {"artist": "Maroon 5", "duration": 15})
    assert every_category.score(request, record_with([maroon, taylor])).value == 1.0
    short = every_category.score(request, record_with([taylor]))
    assert (short.value, short.reason) == (0.0, "1 tool call, expected 2")
    twice = every_category.score(request, record_with([taylor, taylor]))
    assert twice.value == 0.0
    assert twice.reason == "expected call 2 (spotify_play): param artist: got 'Taylor Swift', accepted ['Maroon 5']"
    dotted = every_category.score(
        request, record_with([call("spotify.play", {"artist": "maroon 5", "duration": 15}), taylor])
    )
    assert dotted.value == 1.0  # the BFCL name itself is understood too


def test_no_tool_call_and_unreadable_arguments(every_category: ToolsSuite, by_id: dict[str, WorkloadRequest]) -> None:
    request = by_id["simple_python_1"]
    text = '{"name": "math_factorial", "arguments": {"number": 5}}'
    assert every_category.score(request, record_with([], text=text, finish_reason="stop")) == Score(
        0.0, "no tool call (answered in text)"
    )
    assert every_category.score(request, record_with([], finish_reason="stop")).reason == "no tool call"
    broken = every_category.score(
        request, record_with([call("math_factorial", '{"number": 5')], finish_reason="length")
    )
    assert broken.value == 0.0
    assert broken.reason.startswith("tool call 1 (math_factorial): arguments are not valid JSON")
    assert broken.reason.endswith("(cut off at max_tokens)")
    listed = every_category.score(request, record_with([call("math_factorial", "[5]")]))
    assert listed.reason == "tool call 1 (math_factorial): arguments are not a JSON object: '[5]'"
    empty = every_category.score(request, record_with([call("math_factorial", "")]))
    assert empty.reason == "missing required param number"


def test_calls_written_in_the_text_count_only_when_asked(seeded_cache: Path, by_id: dict[str, WorkloadRequest]) -> None:
    request = by_id["simple_python_1"]  # math.factorial(number=5)
    text = 'Sure.\n```json\n{\n  "name": "math_factorial",\n  "arguments": {"number": 5}\n}\n```'
    strict = ToolsSuite(categories=["simple"], cache=seeded_cache)
    lenient = ToolsSuite(categories=["simple"], text_calls=True, cache=seeded_cache)
    assert strict.score(request, record_with([], text=text)) == Score(0.0, "no tool call (answered in text)")
    assert lenient.score(request, record_with([], text=text)) == Score(1.0, "ok (calls written in the text)")
    wrong = lenient.score(request, record_with([], text=text.replace("5", "6")))
    assert wrong == Score(0.0, "param number: got 6, accepted [5] (calls written in the text)")
    assert lenient.score(request, record_with([], text="120")) == Score(0.0, "no tool call (answered in text)")
    structured = [call("math_factorial", {"number": 4})]  # a structured call wins over the text
    assert lenient.score(request, record_with(structured, text=text)).value == 0.0


def test_calls_in_text_shapes() -> None:
    found = tools.calls_in_text(
        '<tool_call>{"name": "a", "arguments": {"x": 1}}</tool_call> then '
        '[{"name": "b", "parameters": {"y": [1, 2]}}, {"name": "c", "arguments": "{\\"z\\": 3}"}] '
        '{"not": "a call"} {"name": "d", "arguments": {"broken": '
    )
    assert [(c["name"], orjson.loads(c["arguments"])) for c in found] == [
        ("a", {"x": 1}),
        ("b", {"y": [1, 2]}),
        ("c", {"z": 3}),
    ]
    assert tools.calls_in_text("no json here {oops}") == []


# --- the checker's rules on hand-made references (no data needed) ----------------------------------------


def reference(answers: list[dict[str, Any]], signatures: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {"category": "test", "id": "t", "answers": answers, "names": names, "signatures": signatures}


@pytest.fixture
def weather() -> dict[str, Any]:
    answers = [
        {
            "weather.get": {
                "city": ["New York, NY", "NYC"],
                "days": [3],
                "scale": [1.5],
                "metric": [True, ""],
                "at": [[40.7, -74.0]],
                "filters": [{"kind": ["rain", "snow"], "min": [0, ""]}],
                "layers": [[{"name": ["clouds"]}, {"name": ["wind"]}]],
                "extra": ["", None],
            }
        }
    ]
    params = ["city", "days", "scale", "metric", "at", "filters", "layers", "extra", "unused"]
    signatures = {"weather.get": {"params": params, "required": ["city"]}}
    return reference(answers, signatures, {"weather_get": "weather.get"})


def grade(ref: dict[str, Any], args: dict[str, Any]) -> tuple[float, str]:
    score = score_tool_calls(ref, [call("weather_get", args)])
    return score.value, score.reason


GOOD = {
    "city": "nyc",
    "days": 3,
    "scale": 1.5,
    "at": [40.7, -74.0],
    "filters": {"kind": "Snow"},
    "layers": [{"name": "clouds"}, {"name": "wind"}],
}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, (1.0, "ok")),
        ({"city": "new york ny"}, (1.0, "ok")),  # BFCL ignores case, spaces and ,./-_*^
        ({"days": 3.0}, (1.0, "ok")),
        ({"scale": 1.50}, (1.0, "ok")),
        ({"metric": True, "extra": None}, (1.0, "ok")),
        ({"filters": {"kind": "rain", "min": 0}}, (1.0, "ok")),
        ({"days": True}, (0.0, "param days: got True, accepted [3]")),  # a boolean is not a number
        ({"metric": 1}, (0.0, "param metric: got 1, accepted [True, '']")),
        ({"metric": ""}, (0.0, "param metric: got '', accepted [True, '']")),  # "" marks omission only
        ({"at": [-74.0, 40.7]}, (0.0, "param at: got [-74.0, 40.7], accepted [[40.7, -74.0]]")),
        (
            {"filters": {"kind": "hail"}},
            (0.0, "param filters: got {'kind': 'hail'}, accepted [{'kind': ['rain', 'snow'], 'min': [0, '']}]"),
        ),
        (
            {"filters": {"kind": "rain", "max": 3}},
            (
                0.0,
                "param filters: got {'kind': 'rain', 'max': 3}, accepted [{'kind': ['rain', 'snow'], 'min': [0, '']}]",
            ),
        ),
        (
            {"layers": [{"name": "wind"}, {"name": "clouds"}]},
            (
                0.0,
                "param layers: got [{'name': 'wind'}, {'name': 'clouds'}], accepted [[{'name': ['clouds']}, {'name': ['wind']}]]",
            ),
        ),
        ({"unused": 1}, (0.0, "unexpected param unused: got 1, the accepted answer leaves it out")),
    ],
)
def test_value_rules(weather: dict[str, Any], change: dict[str, Any], expected: tuple[float, str]) -> None:
    assert grade(weather, {**GOOD, **change}) == expected


def test_missing_params(weather: dict[str, Any]) -> None:
    without_city = {k: v for k, v in GOOD.items() if k != "city"}
    assert grade(weather, without_city) == (0.0, "missing required param city")
    without_days = {k: v for k, v in GOOD.items() if k != "days"}
    assert grade(weather, without_days) == (0.0, "missing param days: accepted [3]")


def test_float_parameter_accepts_an_integer() -> None:
    ref = reference([{"f": {"x": [2.0]}}], {"f": {"params": ["x"], "required": ["x"]}}, {"f": "f"})
    assert score_tool_calls(ref, [call("f", {"x": 2})]).value == 1.0
    assert score_tool_calls(ref, [call("f", {"x": 2.000001})]).value == 0.0


def test_booleans_and_numbers_never_match() -> None:
    """Python says True == 1; JSON and BFCL do not."""
    ref = reference([{"f": {"n": [1], "b": [True]}}], {"f": {"params": ["n", "b"], "required": []}}, {"f": "f"})
    assert score_tool_calls(ref, [call("f", {"n": 1, "b": True})]).value == 1.0
    assert score_tool_calls(ref, [call("f", {"n": True, "b": True})]).reason == "param n: got True, accepted [1]"
    assert score_tool_calls(ref, [call("f", {"n": 1, "b": 1})]).reason == "param b: got 1, accepted [True]"


def test_long_values_are_shortened_in_reasons(weather: dict[str, Any]) -> None:
    value, reason = grade(weather, {**GOOD, "city": "x" * 500})
    assert value == 0.0 and len(reason) < 300 and "…" in reason


def test_a_broken_reference_scores_zero_without_raising() -> None:
    assert score_tool_calls(None, [call("f", {})]).reason == "request has no tools reference"
    assert score_tool_calls({"answers": [{}]}, [call("f", {})]).reason == "malformed accepted answer in the reference"
    not_a_call: list[Any] = ["f()"]
    assert (
        score_tool_calls({"answers": [{"f": {}}]}, not_a_call).reason
        == "tool call 1 is not a name with arguments: 'f()'"
    )
