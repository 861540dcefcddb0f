from itertools import islice

import pytest

from tokenrace.tokenizer import count_tokens, reference_encoding
from tokenrace.workloads import SINGLE_TOKEN_WORDS, WorkloadError, parse_workload


def test_filler_words_are_one_cl100k_token_each():
    encoding = reference_encoding()
    assert [w for w in SINGLE_TOKEN_WORDS if len(encoding.encode_ordinary(" " + w)) != 1] == []


@pytest.mark.parametrize("tokens", [16, 100, 1000])
def test_synthetic_prompts_have_the_exact_requested_token_count(tokens):
    for request in islice(parse_workload(f"synthetic:input={tokens},output=7").requests(), 5):
        assert count_tokens(request.prompt) == tokens == request.input_tokens
        assert request.max_tokens == 7


def test_prompts_are_unique_within_a_run_and_across_runs_with_the_same_seed():
    workload = parse_workload("synthetic:input=50,output=5")
    first = [r.prompt for r in islice(workload.requests(seed=1), 20)]
    again = [r.prompt for r in islice(workload.requests(seed=1), 20)]
    assert len(set(first)) == 20
    assert not set(first) & set(again)  # no prompt cache can serve a rerun
    chat = parse_workload("chat:output=32")
    assert not {r.prompt for r in islice(chat.requests(), 30)} & {r.prompt for r in islice(chat.requests(), 30)}


def test_ignore_eos_and_vary_options():
    requests = list(islice(parse_workload("synthetic:input=200,output=9,ignore_eos=1,vary=0.5").requests(), 30))
    assert all(r.params["ignore_eos"] is True for r in requests)
    assert len({r.input_tokens for r in requests}) > 5
    assert all(100 <= r.input_tokens <= 300 for r in requests)


def test_jsonl_workload_reads_messages_or_prompts_and_names_bad_lines(tmp_path, caplog):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "hello"}\n\n{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}\n')
    first, second, third = islice(parse_workload(f"jsonl:{path},output=11").requests(), 3)
    assert (first.prompt, first.max_tokens) == ("hello", 11)
    assert (second.prompt, second.max_tokens) == ("hi", 3)
    assert third.prompt == "hello"  # the file is cycled
    path.write_text('{"prompt": "ok"}\n{"oops": 1}\nnot json\n{"prompt": "fine"}\n')
    with caplog.at_level("WARNING"):
        prompts = [r.prompt for r in islice(parse_workload(f"jsonl:{path}").requests(), 2)]
    assert prompts == ["ok", "fine"]  # bad lines are named and skipped, not fatal
    assert "p.jsonl:2: needs a 'messages' list or a 'prompt' string" in caplog.text
    assert "p.jsonl:3: not valid JSON" in caplog.text
    path.write_text('{"oops": 1}\n')
    with pytest.raises(WorkloadError, match=r"no usable requests"):
        next(parse_workload(f"jsonl:{path}").requests())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("poems", "valid: synthetic"),
        ("synthetic:input=ten", "input must be a number"),
        ("synthetic:colour=1", "valid options"),
        ("synthetic:input=0", "must be >= 1"),
        ("jsonl:", "needs a path"),
        ("jsonl:/nonexistent.jsonl", "not found"),
    ],
)
def test_bad_workload_specs_say_what_is_valid(spec, message):
    with pytest.raises(WorkloadError, match=message):
        parse_workload(spec)
