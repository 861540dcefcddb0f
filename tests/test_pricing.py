"""Cost arithmetic against hand-computed values, catalog look-ups and the shipped catalog's validity."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import pytest

from tokenrace.config import ConfigError, EndpointConfig, Price
from tokenrace.pricing import (
    SOURCE_CONFIG,
    SOURCE_HOURLY,
    SOURCE_LOCAL,
    SOURCE_UNKNOWN,
    catalog,
    catalog_as_of,
    effective_price,
    lookup_price,
    parse_catalog,
    provider_for_url,
    request_cost,
    run_cost,
)
from tokenrace.records import FAILED, INCOMPLETE, OK, PHASE_WARMUP, RequestRecord

approx = pytest.approx


def rec(**kw: Any) -> RequestRecord:
    base: dict[str, Any] = {"run_id": "r", "seq": 0, "endpoint": "e", "api": "openai-chat", "model": "m", "status": OK}
    base.update(kw)
    return RequestRecord(**base)


def endpoint(**kw: Any) -> EndpointConfig:
    base: dict[str, Any] = {
        "name": "e",
        "api": "openai-chat",
        "base_url": "https://api.openai.com/v1",
        "model": "gpt-4o",
    }
    base.update(kw)
    return EndpointConfig.model_validate(base)


# --------------------------------------------------------------------------------------------------
# request_cost

SONNET = Price(input=3.0, output=15.0, cached_input=0.3)


def test_cost_with_cached_and_reasoning_tokens():
    r = rec(usage_prompt_tokens=1000, usage_cached_tokens=400, usage_completion_tokens=500, usage_reasoning_tokens=200)
    c = request_cost(r, SONNET)
    assert c is not None
    assert c.input_usd == approx(600 * 3.0 / 1e6)  # 0.0018
    assert c.cached_input_usd == approx(400 * 0.3 / 1e6)  # 0.00012
    assert c.output_usd == approx(300 * 15.0 / 1e6)  # 0.0045
    assert c.reasoning_usd == approx(200 * 15.0 / 1e6)  # reasoning bills at output when unset: 0.003
    assert c.total_usd == approx(0.00942)
    assert c.tokens_source == "server usage"
    assert (c.input_tokens, c.cached_input_tokens, c.output_tokens, c.reasoning_tokens) == (1000, 400, 500, 200)


def test_reasoning_and_cached_rates_and_their_defaults():
    r = rec(usage_prompt_tokens=1000, usage_cached_tokens=400, usage_completion_tokens=500, usage_reasoning_tokens=200)
    c = request_cost(r, Price(input=3.0, output=15.0, reasoning=20.0))
    assert c is not None
    assert c.cached_input_usd == approx(400 * 3.0 / 1e6)  # no cached price: full input price
    assert c.reasoning_usd == approx(200 * 20.0 / 1e6)
    assert c.total_usd == approx((600 * 3 + 400 * 3 + 300 * 15 + 200 * 20) / 1e6)


def test_counts_larger_than_their_whole_are_clamped():
    r = rec(usage_prompt_tokens=100, usage_cached_tokens=150, usage_completion_tokens=10, usage_reasoning_tokens=30)
    c = request_cost(r, SONNET)
    assert c is not None
    assert (c.cached_input_tokens, c.reasoning_tokens) == (100, 10)
    assert c.input_usd == 0.0 and c.output_usd == 0.0
    assert c.total_usd == approx((100 * 0.3 + 10 * 15) / 1e6)


def test_missing_usage_falls_back_to_client_counts():
    r = rec(input_tokens_requested=1000, client_output_tokens=250)
    c = request_cost(r, Price(input=1.0, output=2.0))
    assert c is not None
    assert c.input_usd == approx(0.001) and c.output_usd == approx(0.0005)
    assert c.total_usd == approx(0.0015)
    assert c.tokens_source == "client count"


def test_one_side_from_the_client_makes_the_whole_an_estimate():
    r = rec(usage_completion_tokens=250, input_tokens_requested=1000, client_output_tokens=999)
    c = request_cost(r, Price(input=1.0, output=2.0))
    assert c is not None
    assert c.output_tokens == 250  # the server's count wins over the client's
    assert c.total_usd == approx(0.0015)
    assert c.tokens_source == "client count"
    # Prompt count unknown altogether: counted as 0, still an estimate.
    c = request_cost(rec(usage_completion_tokens=250), Price(input=1.0, output=2.0))
    assert c is not None and c.input_tokens == 0 and c.tokens_source == "client count"


def test_no_counts_at_all_is_no_cost():
    assert request_cost(rec(), SONNET) is None


def test_failed_request_bills_only_server_usage():
    # A 429: no usage; the workload's prompt length and the client's count are not billed.
    r429 = rec(status=FAILED, error_category="rate_limited", http_status=429, input_tokens_requested=1000)
    c = request_cost(r429, SONNET)
    assert c is not None
    assert c.total_usd == 0.0 and c.tokens_source == "server usage"
    # A stream cut after the server reported usage: that usage is billed, the client's count is not.
    cut = rec(status=FAILED, usage_prompt_tokens=1000, usage_completion_tokens=100, client_output_tokens=400)
    c = request_cost(cut, SONNET)
    assert c is not None
    assert c.total_usd == approx((1000 * 3 + 100 * 15) / 1e6)
    # Cancelled at the run's end with only client-side text: a lower bound of 0.
    cancelled = rec(status=INCOMPLETE, client_output_tokens=50, input_tokens_requested=10)
    c = request_cost(cancelled, SONNET)
    assert c is not None and c.total_usd == 0.0


# --------------------------------------------------------------------------------------------------
# run_cost


def test_run_cost_totals_exclude_warmup():
    price = Price(input=1.0, output=2.0, cached_input=0.5)
    records = [
        rec(usage_prompt_tokens=1000, usage_cached_tokens=200, usage_completion_tokens=500, quality=1.0),
        rec(input_tokens_requested=1000, client_output_tokens=300, quality=0.5),
        rec(status=FAILED, error_category="rate_limited", http_status=429, input_tokens_requested=1000),
        rec(phase=PHASE_WARMUP, usage_prompt_tokens=10**6, usage_completion_tokens=10**6, quality=0.0),
    ]
    out = run_cost(records, price, duration_s=10.0)
    # request 1: 800·1 + 200·0.5 + 500·2 = 1900 µ$; request 2: 1000·1 + 300·2 = 1600 µ$; the 429: 0.
    assert out["requests"] == 3 and out["requests_priced"] == 3 and out["requests_client_count"] == 1
    assert (out["input_tokens"], out["cached_input_tokens"], out["output_tokens"]) == (2000, 200, 800)
    assert out["input_usd"] == approx(1800e-6)
    assert out["cached_input_usd"] == approx(100e-6)
    assert out["output_usd"] == approx(1600e-6)
    assert out["reasoning_usd"] == 0.0
    assert out["total_usd"] == approx(3500e-6) == out["tokens_usd"]
    assert out["hourly_usd"] is None
    assert out["per_request_mean_usd"] == approx(3500e-6 / 3)
    assert out["cost_per_completed_request_usd"] == approx(3500e-6 / 2)
    assert out["usd_per_1m_tokens"] == approx(3500e-6 * 1e6 / 2800)
    assert out["cost_per_1m_output_tokens_usd"] == approx(3500e-6 * 1e6 / 800)
    assert out["tokens_per_usd"] == approx(2800 / 3500e-6)
    assert out["output_tokens_per_usd"] == approx(800 / 3500e-6)
    # 800 output tokens per $0.0035: throughput per dollar-per-hour of spend is that over 3600 s
    assert out["output_speed_per_usd_per_hour"] == approx(800 / 3500e-6 / 3600)
    assert out["usd_per_hour"] == approx(3500e-6 * 360)
    assert out["quality_scored"] == 2 and out["quality_mean"] == approx(0.75)
    assert out["quality_per_usd"] == approx(0.75 / (3500e-6 / 3))
    json.dumps(out)  # JSON-ready


def test_run_cost_without_price_counts_tokens_only():
    out = run_cost([rec(usage_prompt_tokens=100, usage_completion_tokens=10, quality=1.0)], None)
    assert out["input_tokens"] == 100 and out["output_tokens"] == 10
    for key in ("input_usd", "tokens_usd", "total_usd", "per_request_mean_usd", "tokens_per_usd", "quality_per_usd"):
        assert out[key] is None, key


def test_run_cost_at_zero_price_has_no_per_dollar_figures():
    out = run_cost([rec(usage_prompt_tokens=100, usage_completion_tokens=10, quality=1.0)], Price(input=0, output=0))
    assert out["total_usd"] == 0.0 and out["per_request_mean_usd"] == 0.0
    assert out["cost_per_1m_output_tokens_usd"] == 0.0
    assert out["tokens_per_usd"] is None and out["output_tokens_per_usd"] is None
    assert out["quality_per_usd"] is None


def test_run_cost_nothing_scored_or_priced():
    out = run_cost([rec(), rec(status=FAILED)], Price(input=1, output=1))
    assert out["requests_priced"] == 1 and out["total_usd"] == 0.0  # the failure is priced at 0
    assert out["quality_scored"] == 0 and out["quality_mean"] is None and out["quality_per_usd"] is None
    empty = run_cost([], Price(input=1, output=1))
    assert empty["total_usd"] == 0.0 and empty["per_request_mean_usd"] is None


def test_price_per_hour_at_measured_throughput():
    # 3.60 $/h for 100 s = 0.10 $; 2000 output tokens in 100 s = 20 tok/s = 72,000 tok/h -> 50 $ per 1M.
    records = [rec(usage_prompt_tokens=500, usage_completion_tokens=1000, quality=1.0) for _ in range(2)]
    out = run_cost(records, Price(input=0, output=0), price_per_hour=3.6, duration_s=100.0)
    assert out["hourly_usd"] == approx(0.1)
    assert out["tokens_usd"] == 0.0 and out["total_usd"] == approx(0.1)
    assert out["cost_per_1m_output_tokens_usd"] == approx(50.0)
    assert out["cost_per_1m_output_tokens_usd"] == approx(3.6 / (3600 * 2000 / 100.0) * 1e6)
    assert out["usd_per_hour"] == approx(3.6)
    assert out["per_request_mean_usd"] == approx(0.05)
    assert out["quality_per_usd"] == approx(1.0 / 0.05)
    # Tokens and hours both billed (a dedicated deployment with a per-token fee): they add up.
    both = run_cost(records, Price(input=1, output=1), price_per_hour=3.6, duration_s=100.0)
    assert both["total_usd"] == approx(0.1 + 3000e-6)
    # Hourly only, price unknown: token figures stay None, the hour is still counted.
    hourly = run_cost(records, None, price_per_hour=3.6, duration_s=100.0)
    assert hourly["tokens_usd"] is None and hourly["total_usd"] == approx(0.1)


def test_duration_defaults_to_the_measurement_window():
    records = [
        rec(sent_s=1.0, done_s=5.0, usage_prompt_tokens=1, usage_completion_tokens=1),
        rec(sent_s=2.0, done_s=11.0, usage_prompt_tokens=1, usage_completion_tokens=1),
        rec(phase=PHASE_WARMUP, sent_s=0.0, done_s=100.0),
    ]
    out = run_cost(records, None, price_per_hour=36.0)
    assert out["duration_s"] == 10.0
    assert out["hourly_usd"] == approx(0.1)
    assert run_cost([rec()], None, price_per_hour=36.0)["hourly_usd"] is None  # no window


# --------------------------------------------------------------------------------------------------
# Catalog look-ups

REQUIRED_PROVIDERS = (
    "openai",
    "anthropic",
    "google",
    "deepseek",
    "xai",
    "alibaba",
    "mistral",
    "groq",
    "together",
    "fireworks",
)


def test_lookup_by_name_alias_and_case():
    entry = lookup_price("gpt-4o")
    assert entry is not None and entry.provider == "openai"
    assert entry.price == Price(input=2.5, output=10.0, cached_input=1.25)
    assert lookup_price("GPT-4o-2024-08-06") is entry
    assert lookup_price("  gpt-4o  ") is entry
    assert lookup_price("claude-sonnet-4-0") is lookup_price("claude-sonnet-4-20250514") is not None


def test_lookup_strips_provider_prefixes():
    assert lookup_price("openai/gpt-4o-mini") is lookup_price("gpt-4o-mini") is not None
    assert lookup_price("openrouter/openai/gpt-4o-mini") is lookup_price("gpt-4o-mini")
    assert lookup_price("models/gemini-2.5-flash") is lookup_price("gemini-2.5-flash") is not None
    fw = lookup_price("accounts/fireworks/models/llama-v3p3-70b-instruct")
    assert fw is not None and fw.provider == "fireworks"
    assert lookup_price("llama-v3p3-70b-instruct") is fw
    tg = lookup_price("meta-llama/Llama-3.3-70B-Instruct-Turbo")
    assert tg is not None and tg.provider == "together"
    assert lookup_price("Qwen/Qwen2.5-72B-Instruct-Turbo", "together") is not None


def test_unknown_or_ambiguous_names_are_never_guessed():
    assert lookup_price("gpt-4o-2099-01-01") is None  # a snapshot the catalog does not list
    assert lookup_price("llama-3.3-70b") is None  # no provider uses this exact name
    assert lookup_price("my-finetune") is None
    # gpt-oss-120b is hosted by Groq, Together and Fireworks at different prices.
    assert lookup_price("openai/gpt-oss-120b") is None
    groq = lookup_price("openai/gpt-oss-120b", "groq")
    together = lookup_price("openai/gpt-oss-120b", "together_ai")
    assert groq is not None and together is not None and groq.price != together.price


def test_lookup_with_provider():
    assert lookup_price("gpt-4o", "anthropic") is None
    assert lookup_price("gpt-4o", "OpenAI") is lookup_price("gpt-4o")
    grok = lookup_price("grok-4", "x-ai")
    assert grok is not None and grok.provider == "xai"
    assert lookup_price("gemini-2.5-pro", "gemini") is lookup_price("gemini-2.5-pro")
    assert lookup_price("gpt-4o", "no-such-provider") is None


def test_provider_for_url():
    assert provider_for_url("https://api.openai.com/v1") == "openai"
    assert provider_for_url("https://api.together.xyz/v1") == "together"
    assert provider_for_url("https://api.fireworks.ai/inference/v1") == "fireworks"
    assert provider_for_url("https://generativelanguage.googleapis.com/v1beta/openai") == "google"
    assert provider_for_url("https://dashscope-intl.aliyuncs.com/compatible-mode/v1") == "alibaba"
    assert provider_for_url("https://dashscope.aliyuncs.com/compatible-mode/v1") is None  # CNY prices
    assert provider_for_url("http://127.0.0.1:8000/v1") is None
    assert provider_for_url("https://evil-api.openai.com.example.net/v1") is None


# --------------------------------------------------------------------------------------------------
# effective_price


def test_effective_price_precedence():
    own = Price(input=1.0, output=1.0)
    assert effective_price(endpoint(price=own.model_dump())) == (own, SOURCE_CONFIG)

    price, source = effective_price(endpoint())
    assert price == lookup_price("gpt-4o").price  # type: ignore[union-attr]
    assert source == f"catalog: openai gpt-4o, as of {catalog_as_of()}"

    local = EndpointConfig.model_validate({"name": "l", "engine": "local", "model": "qwen2.5-0.5b"})
    assert effective_price(local) == (Price(input=0, output=0), SOURCE_LOCAL)
    local_priced = EndpointConfig.model_validate(
        {"name": "l", "engine": "local", "model": "qwen2.5-0.5b", "price": {"input": 0.1, "output": 0.2}}
    )
    assert effective_price(local_priced) == (Price(input=0.1, output=0.2), SOURCE_CONFIG)

    # An hourly price with no per-token price: the hour is the cost, tokens are free (no catalog double bill).
    hourly = endpoint(base_url="https://api.together.xyz/v1", model="openai/gpt-oss-120b", price_per_hour=2.0)
    assert effective_price(hourly) == (Price(input=0, output=0), SOURCE_HOURLY)

    assert effective_price(endpoint(model="my-finetune")) == (None, SOURCE_UNKNOWN)
    assert SOURCE_UNKNOWN == "unknown: set price in tokenrace.yaml"


def test_effective_price_uses_the_host_to_pick_the_provider():
    groq = endpoint(base_url="https://api.groq.com/openai/v1", model="openai/gpt-oss-120b")
    price, source = effective_price(groq)
    assert price == lookup_price("openai/gpt-oss-120b", "groq").price  # type: ignore[union-attr]
    assert source.startswith("catalog: groq openai/gpt-oss-120b")
    # A known host that does not list the model: unknown, not another provider's price.
    assert effective_price(endpoint(base_url="https://api.groq.com/openai/v1", model="gpt-4o"))[0] is None
    # A gateway or self-hosted server: only names that exactly one provider lists are priced.
    gateway = endpoint(base_url="http://127.0.0.1:4000/v1", model="openai/gpt-4o")
    assert effective_price(gateway)[0] == lookup_price("gpt-4o").price  # type: ignore[union-attr]
    vllm = endpoint(base_url="http://127.0.0.1:8000/v1", model="openai/gpt-oss-120b")
    assert effective_price(vllm) == (None, SOURCE_UNKNOWN)


# --------------------------------------------------------------------------------------------------
# The shipped catalog


def test_shipped_catalog_validates_and_covers_every_provider():
    entries = catalog()
    assert re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", catalog_as_of())
    providers = {e.provider for e in entries}
    for p in REQUIRED_PROVIDERS:
        assert p in providers, p
    for e in entries:
        assert e.source.startswith("https://"), e.model
        p = e.price
        assert p.input >= 0 and p.output >= 0
        assert p.cached_input is None or p.cached_input <= p.input, e.model
    # The file parses the same way on its own (the test a catalog edit must pass).
    text = resources.files("tokenrace").joinpath("data/prices.yaml").read_text(encoding="utf-8")
    assert list(parse_catalog(text).entries) == entries


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "gpt-4o"),
        ("openai", "gpt-4o-mini"),
        ("openai", "gpt-4.1"),
        ("openai", "gpt-4.1-mini"),
        ("openai", "gpt-4.1-nano"),
        ("openai", "o3"),
        ("openai", "o3-mini"),
        ("openai", "o4-mini"),
        ("openai", "gpt-5"),
        ("openai", "gpt-5-mini"),
        ("openai", "gpt-5-nano"),
        ("anthropic", "claude-3-5-haiku-latest"),
        ("anthropic", "claude-3-7-sonnet-latest"),
        ("anthropic", "claude-sonnet-4-0"),
        ("anthropic", "claude-opus-4-0"),
        ("anthropic", "claude-haiku-4-5"),
        ("google", "gemini-2.0-flash"),
        ("google", "gemini-2.0-flash-lite"),
        ("google", "gemini-2.5-flash"),
        ("google", "gemini-2.5-flash-lite"),
        ("google", "gemini-2.5-pro"),
        ("deepseek", "deepseek-chat"),
        ("deepseek", "deepseek-reasoner"),
        ("xai", "grok-3"),
        ("xai", "grok-3-mini"),
        ("xai", "grok-4"),
        ("alibaba", "qwen-max"),
        ("alibaba", "qwen-plus"),
        ("alibaba", "qwen-turbo"),
        ("mistral", "mistral-large-latest"),
        ("mistral", "mistral-medium-latest"),
        ("mistral", "mistral-small-latest"),
        ("mistral", "codestral-latest"),
        ("groq", "llama-3.1-8b-instant"),
        ("groq", "llama-3.3-70b-versatile"),
        ("together", "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo"),
        ("together", "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo"),
        ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
        ("together", "Qwen/Qwen2.5-72B-Instruct-Turbo"),
        ("together", "deepseek-ai/DeepSeek-V3"),
        ("together", "mistralai/Mixtral-8x7B-Instruct-v0.1"),
        ("fireworks", "accounts/fireworks/models/llama-v3p1-8b-instruct"),
        ("fireworks", "accounts/fireworks/models/llama-v3p1-70b-instruct"),
        ("fireworks", "accounts/fireworks/models/qwen2p5-72b-instruct"),
        ("fireworks", "accounts/fireworks/models/deepseek-v3"),
        ("fireworks", "accounts/fireworks/models/mixtral-8x7b-instruct"),
    ],
)
def test_catalog_lists_the_major_models(provider: str, model: str):
    entry = lookup_price(model, provider)
    assert entry is not None, f"{provider} {model}"
    assert entry.price.output > 0


GOOD = """\
as_of: "2025-11"
providers:
  acme:
    name: Acme
    hosts: [api.acme.test]
    source: https://acme.test/pricing
models:
  - provider: acme
    model: acme-1
    input: 1.0
    output: 2.0
    source: https://acme.test/pricing
  - provider: acme
    model: acme-2
    aliases: [acme-2-latest]
    input: 1.0
    output: 2.0
    cached_input: 0.5
    source: https://acme.test/pricing
"""


def test_parse_catalog_accepts_a_good_file():
    cat = parse_catalog(GOOD)
    assert cat.as_of == "2025-11" and [e.model for e in cat.entries] == ["acme-1", "acme-2"]
    assert cat.hosts == {"api.acme.test": "acme"}


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "message"),
    [
        (
            "    input: 1.0\n    output: 2.0\n    source",
            "    input: -1.0\n    output: 2.0\n    source",
            10,
            "models[0].input",
            "greater than or equal",
        ),
        ("    cached_input: 0.5\n", "    cached_inptu: 0.5\n", 18, "models[1].cached_inptu", "unknown field"),
        (
            "  - provider: acme\n    model: acme-2\n",
            "  - provider: acne\n    model: acme-2\n",
            13,
            "models[1].provider",
            "unknown provider 'acne'",
        ),
        ("aliases: [acme-2-latest]", "aliases: [ACME-1]", 14, "models[1].model", "already used by models[0]"),
        (
            "    source: https://acme.test/pricing\n  - provider: acme\n    model: acme-2",
            "    source: http://acme.test/pricing\n  - provider: acme\n    model: acme-2",
            12,
            "models[0].source",
            "https://",
        ),
        ('as_of: "2025-11"', "as_of: 2025-11-01", 1, "as_of", "string"),
        ("    output: 2.0\n    cached", "    cached", 13, "models[1].output", "Field required"),
    ],
)
def test_bad_catalog_entry_is_located(old: str, new: str, line: int, field: str, message: str):
    assert old in GOOD
    with pytest.raises(ConfigError) as info:
        parse_catalog(GOOD.replace(old, new, 1), path="prices.yaml")
    err = info.value
    assert (err.path, err.line, err.field) == ("prices.yaml", line, field)
    assert message in err.message
    assert str(err).startswith(f"prices.yaml:{line}: {field}: ")


def test_bad_catalog_syntax_and_duplicate_keys():
    with pytest.raises(ConfigError, match=r"prices.yaml:12: duplicate key 'output'"):
        parse_catalog(GOOD.replace("    output: 2.0\n", "    output: 2.0\n    output: 3.0\n", 1), path="prices.yaml")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        parse_catalog(GOOD + "  - [unclosed\n", path="prices.yaml")
    with pytest.raises(ConfigError, match="empty"):
        parse_catalog("", path="prices.yaml")
