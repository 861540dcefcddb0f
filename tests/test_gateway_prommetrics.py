"""GET /metrics: the exposition parses as Prometheus text and its counts and histograms are the records'."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tokenrace.gateway.prommetrics import GatewayMetrics
from tokenrace.records import ERR_RATE_LIMIT, FAILED, OK, RequestRecord


def _ok(endpoint: str, ttft_s: float, e2e_s: float, *, prompt: int = 100, completion: int = 50) -> RequestRecord:
    tokens = [ttft_s + (e2e_s - ttft_s) * i / 9 for i in range(10)]
    return RequestRecord(
        run_id="g", seq=0, endpoint=endpoint, api="openai-chat", model="m", status=OK, sent_s=0.0,
        first_token_s=ttft_s, last_token_s=e2e_s, done_s=e2e_s, token_times_s=tokens,
        usage_prompt_tokens=prompt, usage_completion_tokens=completion, first_chunk_tokens=5,
    )  # fmt: skip


def _failed(endpoint: str) -> RequestRecord:
    return RequestRecord(
        run_id="g", seq=1, endpoint=endpoint, api="openai-chat", model="m", status=FAILED,
        error_category=ERR_RATE_LIMIT, http_status=429, sent_s=0.0, done_s=0.01, input_tokens_requested=100,
    )  # fmt: skip


def _samples(metrics: GatewayMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain; version=")  # the text format (0.0.4, or 1.0.0 since client 0.22)
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _get(samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_counts_tokens_cost_and_histograms():
    m = GatewayMetrics()
    m.observe(_ok("fast", 0.2, 1.1), route="chat", cost_usd=0.001)
    m.observe(_ok("fast", 0.4, 2.0, prompt=10, completion=20), route="chat", cost_usd=0.0005)
    m.observe(_ok("slow", 3.0, 30.0), route="chat", cost_usd=None)
    m.observe(_failed("slow"), route="chat", cost_usd=0.0)
    s = _samples(m)

    assert _get(s, "tokenrace_gateway_requests_total", endpoint="fast", route="chat", status="ok", error="none") == 2
    assert _get(s, "tokenrace_gateway_requests_total", endpoint="slow", route="chat", status="ok", error="none") == 1
    assert (
        _get(
            s, "tokenrace_gateway_requests_total", endpoint="slow", route="chat", status="failed", error="rate_limited"
        )
        == 1
    )
    assert _get(s, "tokenrace_gateway_tokens_total", endpoint="fast", kind="prompt") == 110
    assert _get(s, "tokenrace_gateway_tokens_total", endpoint="fast", kind="completion") == 70
    # 100 from the completed request; the failed one adds only what the server reported: nothing.
    assert _get(s, "tokenrace_gateway_tokens_total", endpoint="slow", kind="prompt") == 100
    assert _get(s, "tokenrace_gateway_cost_usd_total", endpoint="fast") == pytest.approx(0.0015)
    assert _get(s, "tokenrace_gateway_cost_usd_total", endpoint="slow") == 0

    # Histograms: completed requests only; cumulative buckets.
    assert _get(s, "tokenrace_gateway_ttft_seconds_count", endpoint="fast") == 2
    assert _get(s, "tokenrace_gateway_ttft_seconds_sum", endpoint="fast") == pytest.approx(0.6)
    assert _get(s, "tokenrace_gateway_ttft_seconds_bucket", endpoint="fast", le="0.25") == 1
    assert _get(s, "tokenrace_gateway_ttft_seconds_bucket", endpoint="fast", le="0.5") == 2
    assert _get(s, "tokenrace_gateway_ttft_seconds_count", endpoint="slow") == 1  # the 429 is not a latency
    assert _get(s, "tokenrace_gateway_e2e_seconds_bucket", endpoint="slow", le="20.0") == 0
    assert _get(s, "tokenrace_gateway_e2e_seconds_bucket", endpoint="slow", le="30.0") == 1
    assert _get(s, "tokenrace_gateway_e2e_seconds_bucket", endpoint="slow", le="+Inf") == 1
    assert _get(s, "tokenrace_gateway_e2e_seconds_bucket", endpoint="fast", le="0.05") == 0
    assert _get(s, "tokenrace_gateway_e2e_seconds_bucket", endpoint="fast", le="120.0") == 2
    # (50 - 5) tokens over 0.9 s = 50 tok/s; (20 - 5) over 1.6 s = 9.4 tok/s
    assert _get(s, "tokenrace_gateway_output_tokens_per_second_sum", endpoint="fast") == pytest.approx(50 + 15 / 1.6)
    assert _get(s, "tokenrace_gateway_output_tokens_per_second_bucket", endpoint="fast", le="10.0") == 1
    assert _get(s, "tokenrace_gateway_output_tokens_per_second_bucket", endpoint="fast", le="50.0") == 2


def test_failed_request_with_server_usage_counts_its_tokens():
    m = GatewayMetrics()
    record = _failed("x")
    record.usage_prompt_tokens = 30
    m.observe(record, route="r", cost_usd=None)
    s = _samples(m)
    assert _get(s, "tokenrace_gateway_tokens_total", endpoint="x", kind="prompt") == 30
    assert ("tokenrace_gateway_tokens_total", frozenset({("endpoint", "x"), ("kind", "completion")})) in s


def test_gauges_and_registries_are_separate():
    a, b = GatewayMetrics(), GatewayMetrics()
    a.set_in_flight("up", 3)
    a.set_in_flight("up", 2)
    a.set_breaker("up", "open")
    a.set_breaker("down", "half-open")
    a.set_breaker("ok", "closed")
    s = _samples(a)
    assert _get(s, "tokenrace_gateway_in_flight", endpoint="up") == 2
    assert _get(s, "tokenrace_gateway_breaker_state", endpoint="up") == 2
    assert _get(s, "tokenrace_gateway_breaker_state", endpoint="down") == 1
    assert _get(s, "tokenrace_gateway_breaker_state", endpoint="ok") == 0
    assert not any(name == "tokenrace_gateway_in_flight" for name, _ in _samples(b))
    with pytest.raises(ValueError, match="unknown breaker state"):
        a.set_breaker("up", "melted")


def test_observe_reuses_cached_children():
    m = GatewayMetrics()
    for _ in range(3):
        m.observe(_ok("e", 0.1, 0.5), route="r", cost_usd=0.01)
    assert len(m._requests) == 1 and len(m._endpoints) == 1
    assert (
        _get(_samples(m), "tokenrace_gateway_requests_total", endpoint="e", route="r", status="ok", error="none") == 3
    )
