import pytest

from tokenrace.records import RequestRecord
from tokenrace.suites.base import SuiteError
from tokenrace.suites.custom import CustomSuite
from tokenrace.suites.workload import parse_suite_workload

LINES = [
    '{"id": "capital", "prompt": "Capital of France?", "reference": "Paris", "scorer": "contains"}',
    '{"prompt": "2+2?", "reference": 4, "scorer": "number", "max_tokens": 8}',
    '{"messages": [{"role": "user", "content": "Say yes"}], "reference": "yes"}',
    '{"prompt": "Zip code?", "reference": "^\\\\d{5}$", "scorer": "regex"}',
    '{"prompt": "JSON please", "reference": {"name": "Ada", "age": 36}, "scorer": "json"}',
    '{"prompt": "Just chat"}',
    "not json at all",
    '{"prompt": "x", "scorer": "vibes", "reference": 1}',
    '{"reference": "orphan"}',
]


def answer(suite, request, text, finish="stop"):
    record = RequestRecord(run_id="r", seq=0, endpoint="e", api="openai-chat", model="m", output_text=text)
    record.finish_reason = finish
    return suite.score(request, record)


def test_custom_jsonl_scores_each_line_its_own_way_and_skips_malformed_lines(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(LINES) + "\n")
    suite = CustomSuite(path=path, nonce="")
    assert len(suite.items) == 6
    assert [w.split(": ")[0] for w in suite.warnings] == [f"{path}:7", f"{path}:8", f"{path}:9"]
    by_line = {r.reference["line"]: r for r in _one_pass(suite)}
    assert by_line[1].prompt_id == "capital" and by_line[2].max_tokens == 8
    assert answer(suite, by_line[1], "It is Paris.").value == 1.0
    assert answer(suite, by_line[1], "It is Lyon.").reason == "'Paris' not in the answer"
    assert answer(suite, by_line[2], "That makes 4.").value == 1.0
    assert answer(suite, by_line[2], "5").reason == "expected 4, got 5"
    assert answer(suite, by_line[3], " YES ").value == 1.0 and answer(suite, by_line[3], "no").value == 0.0
    assert answer(suite, by_line[4], "10115").value == 1.0 and answer(suite, by_line[4], "1011").value == 0.0
    half = answer(suite, by_line[5], '```json\n{"name": "Ada", "age": 37}\n```')
    assert half.value == 0.5 and "age" in half.reason
    assert answer(suite, by_line[6], "hello") is None  # no reference: speed only
    assert "cut off" in answer(suite, by_line[1], "It is", finish="length").reason


def _one_pass(suite):
    requests = suite.requests(seed=0)
    return [next(requests) for _ in suite.items]


def test_custom_suite_spec_needs_a_path_and_reads_it(tmp_path):
    with pytest.raises(SuiteError, match=r"custom:prompts\.jsonl"):
        parse_suite_workload("custom")
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "hi", "reference": "hi"}\n')
    workload = parse_suite_workload(f"chat,custom:{path}", sample=1)
    assert [s.name for s in workload.suites] == ["chat", "custom"]
