"""What a run cost, and cost-normalised figures (tokens per dollar, quality per dollar).

Speed alone ranks endpoints badly: a fast model at ten times the price is rarely the right choice. This
module prices every request from its token counts and a :class:`~tokenrace.config.Price`, and the run from
its requests (plus, for self-hosting, the hardware's hourly price). The catalog of public list prices that
fills in a missing price ships as ``tokenrace/data/prices.yaml``.

The section below is the reference for ``docs/metrics.md`` ("Cost"); keep the two the same.

Cost
====

Prices are US dollars per 1M tokens: ``in``, ``out``, ``cin`` (cached prompt tokens; ``in`` when unset)
and ``rsn`` (reasoning tokens; ``out`` when unset). All figures are US dollars (``_usd``).

Which price
-----------
``effective_price(endpoint)`` takes the first that applies:

1. the endpoint's own ``price`` in tokenrace.yaml (source ``config``);
2. a local engine (``engine: local``) with no non-zero price of its own: 0 (``local engine``);
3. an endpoint with ``price_per_hour`` and no ``price``: tokens are not billed, 0
   (``price_per_hour``); the hour is the cost (below);
4. the catalog entry for the endpoint's model (``catalog: PROVIDER MODEL, as of DATE``). The provider
   is the one whose API host ``base_url`` points at; at an unrecognised host (a proxy, a gateway) a name
   counts only if exactly one provider lists it;
5. none: ``(None, "unknown: set price in tokenrace.yaml")``; every dollar figure is then None.

Names match case-insensitively, after stripping namespace prefixes such as ``openai/``,
``meta-llama/``, ``accounts/fireworks/models/``. There is no fuzzy matching: a dated snapshot that the
catalog does not list is unknown rather than priced like its neighbour.

Token counts of one request
---------------------------
A completed request (status ``ok``):

- ``P`` (prompt) = ``usage_prompt_tokens``, else ``input_tokens_requested``;
- ``O`` (output) = ``usage_completion_tokens``, else ``client_output_tokens`` (which counts output,
  reasoning and tool-call text);
- a side with neither count is 0; with no count on either side the request has no cost (None);
- ``tokens_source`` is ``server usage`` when both ``P`` and ``O`` are the server's usage, else
  ``client count`` (an estimate: the client's cl100k count or the workload's requested length).

A failed or incomplete request is billed only what the server reported: ``P`` =
``usage_prompt_tokens``, ``O`` = ``usage_completion_tokens``, each 0 when absent, ``tokens_source`` =
``server usage``. Providers do not bill a rejected request (a 429 carries no usage, so it costs 0), and
tokenrace cannot know what a provider billed for a stream that was cut or cancelled: its cost is a lower
bound, never a client-side guess.

Of those, ``C = min(usage_cached_tokens or 0, P)`` prompt tokens were cache hits and
``R = min(usage_reasoning_tokens or 0, O)`` output tokens were reasoning (OpenAI's convention: the
completion count includes reasoning tokens; Anthropic reports cache reads apart and the client adds them
to ``P``).

Per-request cost (``request_cost``)
-----------------------------------
::

    input_usd        = (P − C) · in  / 10⁶
    cached_input_usd =  C      · cin / 10⁶
    output_usd       = (O − R) · out / 10⁶
    reasoning_usd    =  R      · rsn / 10⁶
    total_usd        = input_usd + cached_input_usd + output_usd + reasoning_usd

Run cost (``run_cost``)
-----------------------
Over the measure-phase records (warmup records are excluded: they are not part of the measured load);
``N`` = records with a cost (``requests_priced``), ``K`` = records with status ``ok``::

    input_tokens, cached_input_tokens,       Σ P, Σ C, Σ O, Σ R over the N records
      output_tokens, reasoning_tokens        (input_tokens includes cached, output_tokens reasoning)
    input_usd, cached_input_usd,             Σ of the per-request figures
      output_usd, reasoning_usd
    tokens_usd       = input_usd + cached_input_usd + output_usd + reasoning_usd
    duration_s       = the duration_s argument, else the measurement window (metrics.measurement_window)
    hourly_usd       = price_per_hour · duration_s / 3600             (self-hosting: the hardware's time)
    total_usd        = tokens_usd + hourly_usd                        (a part that is None is left out)
    per_request_mean_usd           = total_usd / N
    cost_per_completed_request_usd = total_usd / K     (failures are paid for by the answers that came back)
    usd_per_1m_tokens              = total_usd · 10⁶ / (input_tokens + output_tokens)   (blended)
    cost_per_1m_output_tokens_usd  = total_usd · 10⁶ / output_tokens
    tokens_per_usd                 = (input_tokens + output_tokens) / total_usd
    output_tokens_per_usd          = output_tokens / total_usd
    usd_per_hour                   = total_usd · 3600 / duration_s   (spend rate at the measured load)
    output_speed_per_usd_per_hour  = (output_tokens / duration_s) / usd_per_hour = output_tokens_per_usd / 3600
    quality_mean                   = mean of quality over the scored records (quality not None)
    quality_per_usd                = quality_mean / per_request_mean_usd

``cost_per_1m_output_tokens_usd`` puts self-hosting and APIs on one scale: with only ``price_per_hour`` it
is ``price_per_hour / (3600 · output_tokens / duration_s) · 10⁶``, the hourly price at the measured output
throughput; for an API it is everything the run paid per million output tokens, input included.
``usd_per_hour`` is the converse: what the measured load costs per hour on an API, to set against a GPU's
hourly price. The "speed per dollar" figure, ``output_speed_per_usd_per_hour`` (output tokens/s per $/h of
spend), is ``output_tokens_per_usd / 3600`` (throughput ÷ spend rate = tokens ÷ spend); per-request output
speed is a latency figure, to be plotted against cost rather than divided by it. With quality scored 0 or 1,
``quality_per_usd`` is the expected number of correct answers per dollar.

A figure is None when it is undefined: no price (``price`` None and no ``price_per_hour``), a zero or
missing denominator (a free local run has ``total_usd`` 0 and no tokens per dollar), no scored record.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tokenrace.config import ConfigError, EndpointConfig, Price
from tokenrace.records import OK, PHASE_WARMUP, RequestRecord

__all__ = [
    "Catalog",
    "CatalogEntry",
    "RequestCost",
    "catalog",
    "catalog_as_of",
    "effective_price",
    "lookup_price",
    "parse_catalog",
    "provider_for_url",
    "request_cost",
    "run_cost",
]

CATALOG_RESOURCE = "data/prices.yaml"
SOURCE_CONFIG = "config"
SOURCE_LOCAL = "local engine"
SOURCE_HOURLY = "price_per_hour"
SOURCE_UNKNOWN = "unknown: set price in tokenrace.yaml"
TOKENS_SERVER: Final = "server usage"
TOKENS_CLIENT: Final = "client count"
TokensSource = Literal["server usage", "client count"]

_PER_TOKEN = 1e-6  # prices are per 1M tokens

# Namespaces that gateways and hosts put in front of a model's own name (OpenRouter, LiteLLM, Hugging
# Face orgs, Fireworks' account path, Gemini's "models/"). Stripped from both sides before comparing.
_PREFIXES: tuple[str, ...] = (
    "accounts/fireworks/models/",
    "models/",
    "openrouter/",
    "openai/",
    "anthropic/",
    "google/",
    "gemini/",
    "vertex_ai/",
    "deepseek/",
    "deepseek-ai/",
    "xai/",
    "x-ai/",
    "qwen/",
    "alibaba/",
    "dashscope/",
    "mistral/",
    "mistralai/",
    "groq/",
    "together/",
    "together_ai/",
    "togethercomputer/",
    "fireworks/",
    "fireworks_ai/",
    "meta-llama/",
    "meta/",
    "moonshotai/",
)
# Other spellings of the catalog's provider ids (LiteLLM's and OpenRouter's among them).
_PROVIDER_ALIASES: dict[str, str] = {
    "gemini": "google",
    "google-ai": "google",
    "x-ai": "xai",
    "grok": "xai",
    "dashscope": "alibaba",
    "qwen": "alibaba",
    "alibaba-cloud": "alibaba",
    "mistralai": "mistral",
    "together_ai": "together",
    "togetherai": "together",
    "together-ai": "together",
    "fireworks_ai": "fireworks",
    "fireworks-ai": "fireworks",
}
_AS_OF_RE = re.compile(r"^\d{4}-\d{2}(-\d{2})?$")


# ---------------------------------------------------------------------------------------------
# The catalog file


class _Strict(BaseModel):
    """A typo'd key in the catalog must fail the tests, not silently drop a price."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Sourced(_Strict):
    """A price without the page it was read from cannot be checked or updated."""

    source: str

    @field_validator("source")
    @classmethod
    def _https(cls, v: str) -> str:
        if not v.startswith("https://"):
            raise ValueError("must be an https:// URL of the provider's pricing page")
        return v


class _ProviderSpec(_Sourced):
    name: str = Field(min_length=1)
    hosts: list[str] = Field(min_length=1)


class _EntrySpec(_Sourced):
    provider: str
    model: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    reasoning: float | None = Field(default=None, ge=0)
    notes: str | None = None


class CatalogSpec(_Strict):
    as_of: str
    providers: dict[str, _ProviderSpec] = Field(min_length=1)
    models: list[_EntrySpec] = Field(min_length=1)

    @field_validator("as_of")
    @classmethod
    def _date(cls, v: str) -> str:
        if not _AS_OF_RE.match(v):
            raise ValueError("must be a date YYYY-MM or YYYY-MM-DD (quote it in YAML)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> CatalogSpec:
        # Errors carry their location in the message prefix; _located() turns it into a line.
        seen: dict[tuple[str, str], int] = {}
        for i, entry in enumerate(self.models):
            if entry.provider not in self.providers:
                raise ValueError(f"@models[{i}].provider: unknown provider {entry.provider!r}")
            for name in (entry.model, *entry.aliases):
                key = (entry.provider, _canonical(name))
                if key in seen:
                    raise ValueError(
                        f"@models[{i}].model: name {name!r} already used by models[{seen[key]}] of {entry.provider}"
                    )
                seen[key] = i
        return self


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One model at one provider, with its list price and where the price was read."""

    provider: str
    model: str
    aliases: tuple[str, ...]
    price: Price
    notes: str | None
    source: str

    def names(self) -> tuple[str, ...]:
        return (self.model, *self.aliases)


@dataclass(frozen=True, slots=True)
class Catalog:
    """The validated catalog file: entries, the API hosts that identify each provider, a name index."""

    as_of: str
    entries: tuple[CatalogEntry, ...]
    hosts: dict[str, str]  # API host -> provider id
    index: dict[str, tuple[CatalogEntry, ...]]  # canonical name -> entries (one per provider)


def _canonical(name: str) -> str:
    """The name compared: lower case, namespace prefixes stripped (repeatedly: ``openrouter/openai/x``)."""
    key = name.strip().lower()
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if key.startswith(prefix) and len(key) > len(prefix):
                key = key[len(prefix) :]
                stripped = True
    return key


def parse_catalog(text: str, path: str = "prices.yaml") -> Catalog:
    """Validate catalog YAML; a bad entry raises ConfigError as ``path:line: field: message``."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError("the catalog is empty", path=path, line=1)
        _no_duplicate_keys(node, path)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        raise ConfigError(
            f"YAML syntax error: {err.problem or err.context}", path=path, line=mark.line + 1 if mark else None
        ) from None
    finally:
        loader.dispose()
    try:
        spec = CatalogSpec.model_validate(data)
    except ValidationError as err:
        raise _located(err, node, path) from None
    entries = tuple(
        CatalogEntry(
            provider=e.provider,
            model=e.model,
            aliases=tuple(e.aliases),
            price=Price(input=e.input, output=e.output, cached_input=e.cached_input, reasoning=e.reasoning),
            notes=e.notes,
            source=e.source,
        )
        for e in spec.models
    )
    index: dict[str, tuple[CatalogEntry, ...]] = {}
    for entry in entries:
        for name in entry.names():
            key = _canonical(name)
            index[key] = (*index.get(key, ()), entry)
    hosts = {h.lower(): pid for pid, p in spec.providers.items() for h in p.hosts}
    return Catalog(as_of=spec.as_of, entries=entries, hosts=hosts, index=index)


def _located(err: ValidationError, root: yaml.Node, path: str) -> ConfigError:
    """The first pydantic error, placed at the YAML line of the field it is about."""
    problems: list[ConfigError] = []
    for e in err.errors(include_url=False):
        loc: tuple[int | str, ...] = tuple(e["loc"])
        msg = str(e["ctx"]["error"]) if e["type"] == "value_error" and "error" in e.get("ctx", {}) else e["msg"]
        if msg.startswith("@"):  # a cross-entry check: "@models[3].provider: message"
            where, msg = msg[1:].split(": ", 1)
            loc = tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", where) if p)
        elif e["type"] == "extra_forbidden":
            msg = "unknown field"
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        problems.append(ConfigError(msg, path=path, line=_yaml_line(root, loc), field=field))
    first = problems[0]
    return ConfigError(first.message, path=path, line=first.line, field=first.field, problems=problems)


def _yaml_line(root: yaml.Node, loc: tuple[int | str, ...]) -> int:
    """1-based line of ``loc``: the key's line, or the nearest enclosing node's when it is missing."""
    node, line = root, root.start_mark.line
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = next((kv for kv in node.value if kv[0].value == part), None)
            if match is None:
                break
            line, node = match[0].start_mark.line, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line
        else:
            break
    return line + 1


def _no_duplicate_keys(node: yaml.Node, path: str) -> None:
    """YAML keeps the last of two equal keys; in a price list that hides a wrong price."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for k, v in n.value:
                if k.value in seen:
                    raise ConfigError(f"duplicate key {k.value!r}", path=path, line=k.start_mark.line + 1)
                seen.add(k.value)
                stack.append(v)
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)


@cache
def _catalog() -> Catalog:
    """The shipped catalog, read and validated once per process."""
    text = resources.files("tokenrace").joinpath(CATALOG_RESOURCE).read_text(encoding="utf-8")
    return parse_catalog(text, path=f"tokenrace/{CATALOG_RESOURCE}")


def catalog() -> list[CatalogEntry]:
    """Every catalog entry, in file order."""
    return list(_catalog().entries)


def catalog_as_of() -> str:
    """The date the catalog's list prices were taken (they change often)."""
    return _catalog().as_of


def _provider_id(provider: str) -> str:
    key = provider.strip().lower()
    return _PROVIDER_ALIASES.get(key, key)


def lookup_price(model: str, provider: str | None = None) -> CatalogEntry | None:
    """The catalog entry for ``model`` (a name or alias), at ``provider`` if given.

    Without a provider a name listed by several providers (an open model at Groq and Together) is
    ambiguous and gives None: the hosts' prices differ, and guessing one would print a wrong cost.
    """
    matches = _catalog().index.get(_canonical(model), ())
    if provider is not None:
        pid = _provider_id(provider)
        matches = tuple(e for e in matches if e.provider == pid)
    return matches[0] if len(matches) == 1 else None


def provider_for_url(base_url: str) -> str | None:
    """The catalog provider whose API host ``base_url`` points at (subdomains included), else None."""
    try:
        host = (urlsplit(base_url).hostname or "").lower()
    except ValueError:
        return None
    hosts = _catalog().hosts
    for known, pid in hosts.items():
        if host == known or host.endswith("." + known):
            return pid
    return None


def effective_price(endpoint: EndpointConfig) -> tuple[Price | None, str]:
    """The price to bill ``endpoint`` at and where it came from (precedence in the module docstring)."""
    return price_for(
        price=endpoint.price,
        is_local=endpoint.is_local,
        price_per_hour=endpoint.price_per_hour,
        model=endpoint.model,
        base_url=endpoint.base_url,
    )


def price_for(
    *, price: Price | None, is_local: bool, price_per_hour: float | None, model: str, base_url: str
) -> tuple[Price | None, str]:
    """The precedence itself, on plain fields, so a stored run (whose endpoint is a dict) is priced by
    the same rules as a live endpoint."""
    zero = Price(input=0.0, output=0.0)
    if is_local and (price is None or _is_zero(price)):
        return zero, SOURCE_LOCAL
    if price is not None:
        return price, SOURCE_CONFIG
    if price_per_hour is not None:
        return zero, SOURCE_HOURLY
    entry = lookup_price(model, provider_for_url(base_url))
    if entry is None:
        return None, SOURCE_UNKNOWN
    return entry.price, f"catalog: {entry.provider} {entry.model}, as of {catalog_as_of()}"


def price_for_stored(endpoint: Mapping[str, Any], model: str = "") -> tuple[Price | None, str]:
    """The price of an endpoint as stored in a run's config (``EndpointConfig.public_dict()``)."""
    return price_for(
        price=Price(**endpoint["price"]) if endpoint.get("price") else None,
        is_local=endpoint.get("engine") == "local",
        price_per_hour=endpoint.get("price_per_hour"),
        model=str(endpoint.get("model") or model),
        base_url=str(endpoint.get("base_url", "")),
    )


def _is_zero(price: Price) -> bool:
    return not any((price.input, price.output, price.cached_input, price.reasoning))


# ---------------------------------------------------------------------------------------------
# Cost arithmetic


@dataclass(frozen=True, slots=True)
class _Tokens:
    prompt: int
    cached: int
    output: int
    reasoning: int
    source: TokensSource


def _billed_tokens(record: RequestRecord) -> _Tokens | None:
    """The counts a request is billed for (see "Token counts of one request" above)."""
    if record.status == OK:
        prompt = record.usage_prompt_tokens
        output = record.usage_completion_tokens
        source: TokensSource = TOKENS_SERVER if prompt is not None and output is not None else TOKENS_CLIENT
        if prompt is None:
            prompt = record.input_tokens_requested
        if output is None:
            output = record.client_output_tokens
        if prompt is None and output is None:
            return None
    else:
        prompt, output, source = record.usage_prompt_tokens, record.usage_completion_tokens, TOKENS_SERVER
    p = max(prompt or 0, 0)
    o = max(output or 0, 0)
    cached = min(max(record.usage_cached_tokens or 0, 0), p)
    reasoning = min(max(record.usage_reasoning_tokens or 0, 0), o)
    return _Tokens(prompt=p, cached=cached, output=o, reasoning=reasoning, source=source)


@dataclass(frozen=True, slots=True)
class RequestCost:
    """One request's cost in dollars, split by what was billed, and the token counts behind it."""

    input_usd: float  # uncached prompt tokens
    cached_input_usd: float
    output_usd: float  # non-reasoning output tokens
    reasoning_usd: float
    total_usd: float
    tokens_source: TokensSource
    input_tokens: int = 0  # all prompt tokens, cached included
    cached_input_tokens: int = 0
    output_tokens: int = 0  # all output tokens, reasoning included
    reasoning_tokens: int = 0


def _cost(tokens: _Tokens, price: Price) -> RequestCost:
    cached_rate = price.input if price.cached_input is None else price.cached_input
    reasoning_rate = price.output if price.reasoning is None else price.reasoning
    input_usd = (tokens.prompt - tokens.cached) * price.input * _PER_TOKEN
    cached_usd = tokens.cached * cached_rate * _PER_TOKEN
    output_usd = (tokens.output - tokens.reasoning) * price.output * _PER_TOKEN
    reasoning_usd = tokens.reasoning * reasoning_rate * _PER_TOKEN
    return RequestCost(
        input_usd=input_usd,
        cached_input_usd=cached_usd,
        output_usd=output_usd,
        reasoning_usd=reasoning_usd,
        total_usd=input_usd + cached_usd + output_usd + reasoning_usd,
        tokens_source=tokens.source,
        input_tokens=tokens.prompt,
        cached_input_tokens=tokens.cached,
        output_tokens=tokens.output,
        reasoning_tokens=tokens.reasoning,
    )


def request_cost(record: RequestRecord, price: Price) -> RequestCost | None:
    """What one request cost at ``price``; None for a completed request with no token count at all."""
    tokens = _billed_tokens(record)
    return None if tokens is None else _cost(tokens, price)


def safe_ratio(num: float | None, den: float | None, scale: float = 1.0) -> float | None:
    """num · scale / den, None when either is unknown or the denominator is not positive."""
    if num is None or den is None or den <= 0:
        return None
    return num * scale / den


def run_cost(
    records: Iterable[RequestRecord],
    price: Price | None,
    *,
    price_per_hour: float | None = None,
    duration_s: float | None = None,
) -> dict[str, Any]:
    """A run's cost figures as JSON-ready values (each defined in the module docstring)."""
    measure = [r for r in records if r.phase != PHASE_WARMUP]
    if duration_s is None:
        from tokenrace.metrics import measurement_window  # here: metrics may come to import this module

        window = measurement_window(measure)
        duration_s = window[1] - window[0] if window else None

    billed = [t for t in map(_billed_tokens, measure) if t is not None]
    n_priced = len(billed)
    completed = sum(r.status == OK for r in measure)
    input_tokens = sum(t.prompt for t in billed)
    output_tokens = sum(t.output for t in billed)
    all_tokens = input_tokens + output_tokens

    parts: dict[str, float | None] = dict.fromkeys(("input_usd", "cached_input_usd", "output_usd", "reasoning_usd"))
    tokens_usd: float | None = None
    if price is not None:
        costs = [_cost(t, price) for t in billed]
        for key in parts:
            parts[key] = sum(getattr(c, key) for c in costs)
        tokens_usd = sum(c.total_usd for c in costs)
    hourly_usd = None
    if price_per_hour is not None and duration_s is not None and duration_s >= 0:
        hourly_usd = price_per_hour * duration_s / 3600.0
    total_usd = None if tokens_usd is None and hourly_usd is None else (tokens_usd or 0.0) + (hourly_usd or 0.0)

    scored = [r.quality for r in measure if r.quality is not None]
    quality_mean = sum(scored) / len(scored) if scored else None
    per_request = safe_ratio(total_usd, n_priced)

    return {
        "requests": len(measure),
        "requests_priced": n_priced,
        "requests_client_count": sum(t.source == TOKENS_CLIENT for t in billed),
        "input_tokens": input_tokens,
        "cached_input_tokens": sum(t.cached for t in billed),
        "output_tokens": output_tokens,
        "reasoning_tokens": sum(t.reasoning for t in billed),
        **parts,
        "tokens_usd": tokens_usd,
        "duration_s": duration_s,
        "price_per_hour": price_per_hour,
        "hourly_usd": hourly_usd,
        "total_usd": total_usd,
        "per_request_mean_usd": per_request,
        "cost_per_completed_request_usd": safe_ratio(total_usd, completed),
        "usd_per_1m_tokens": safe_ratio(total_usd, all_tokens, 1e6),
        "cost_per_1m_output_tokens_usd": safe_ratio(total_usd, output_tokens, 1e6),
        "tokens_per_usd": safe_ratio(all_tokens, total_usd),
        "output_tokens_per_usd": safe_ratio(output_tokens, total_usd),
        "usd_per_hour": safe_ratio(total_usd, duration_s, 3600.0),
        # throughput bought per dollar-per-hour of spend: (output_tokens / duration_s) / usd_per_hour
        "output_speed_per_usd_per_hour": safe_ratio(safe_ratio(output_tokens, total_usd), 3600.0),
        "quality_scored": len(scored),
        "quality_mean": quality_mean,
        "quality_per_usd": safe_ratio(quality_mean, per_request),
    }
