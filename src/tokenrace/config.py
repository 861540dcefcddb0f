"""The endpoints config: ``tokenrace.yaml`` (or ``tokenrace.toml``) naming every endpoint a run can hit.

Errors are reported as ``file:line: field: message`` because a benchmark that dies on a typo should
point at the typo. Secrets never live in the config: it names an environment variable or a file, and
the key is read only when a request is about to be sent, so nothing stored or printed can leak it.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "APIS",
    "CONFIG_ENV",
    "DEFAULT_CONFIG_NAMES",
    "EXAMPLE_CONFIG",
    "Api",
    "Config",
    "ConfigError",
    "EndpointConfig",
    "MissingSecretError",
    "Price",
    "Timeouts",
    "UnknownEndpointError",
    "find_config",
    "load_config",
    "parse_toml",
    "parse_yaml",
    "redact_headers",
    "redact_url",
]

Api = Literal["openai-chat", "openai-completions", "anthropic-messages"]
APIS: tuple[str, ...] = typing.get_args(Api)

CONFIG_ENV = "TOKENRACE_CONFIG"
DEFAULT_CONFIG_NAMES: tuple[str, ...] = ("tokenrace.yaml", "tokenrace.yml", "tokenrace.toml")
EXAMPLE_CONFIG = "tokenrace.example.yaml"

REDACTED = "<redacted>"
# A header or query parameter whose name contains one of these carries a credential.
_SECRET_NAME_PARTS = ("auth", "key", "token", "secret", "password", "cookie", "signature", "credential")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Paths a client appends itself; a base_url ending in one would be doubled into a 404.
_ENDPOINT_SUFFIXES = ("/chat/completions", "/completions", "/messages")


class ConfigError(ValueError):
    """A config problem located as ``path:line: field: message`` so the user can jump to it.

    ``path``, ``line`` (1-based) and ``field`` (e.g. ``endpoints[1].api``) describe the first problem;
    ``problems`` holds every problem found (each a ConfigError), and ``str()`` lists them all.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        line: int | None = None,
        field: str | None = None,
        problems: list[ConfigError] | None = None,
    ) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field or None
        self.problems: list[ConfigError] = problems or [self]
        text = "\n".join(p.located() for p in self.problems) if problems else self.located()
        super().__init__(text)

    def located(self) -> str:
        """This problem alone, prefixed with its location."""
        prefix = ""
        if self.path is not None:
            prefix = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        elif self.line is not None:
            prefix = f"line {self.line}: "
        if self.field:
            prefix += f"{self.field}: "
        return prefix + self.message


class MissingSecretError(ConfigError):
    """An endpoint names a key source that is unset, empty or unreadable; the message names the
    source (variable or file), never a value."""

    def __init__(self, message: str, *, endpoint: str, source: str, field: str) -> None:
        self.endpoint = endpoint
        self.source = source
        super().__init__(message, field=field)


class UnknownEndpointError(LookupError):
    """``--endpoint`` named nothing in the config; the message lists what is there."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        msg = f"unknown endpoint {name!r}"
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            msg += f" (did you mean {close[0]!r}?)"
        msg += "; known endpoints: " + (", ".join(known) if known else "(none)")
        super().__init__(msg)

    def __str__(self) -> str:
        return str(self.args[0])


def _is_secret_name(name: str) -> bool:
    low = name.lower()
    return any(part in low for part in _SECRET_NAME_PARTS)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers with credential-looking values replaced, for storage and display."""
    return {k: (REDACTED if _is_secret_name(k) else v) for k, v in headers.items()}


def redact_url(url: str) -> str:
    """The URL without a password in its userinfo or credential-looking query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if _is_secret_name(k) else v) for k, v in pairs], safe="<>")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class SecretUnavailable(Exception):
    """A secret's variable or file gave no value: ``source`` is the variable's name or the file's path,
    ``from_file`` which of the two, ``problem`` why (e.g. "is not set", "does not exist")."""

    def __init__(self, source: str, from_file: bool, problem: str) -> None:
        super().__init__(f"{source} {problem}")
        self.source = source
        self.from_file = from_file
        self.problem = problem


def read_secret(env_name: str | None, file_name: str | None, environ: Mapping[str, str]) -> str:
    """A secret from an environment variable (when named) or a file (``~`` expanded), stripped.

    Shared by endpoint keys and gateway keys so both report a missing, empty or unreadable source alike;
    the value itself never appears in an error.
    """
    if env_name is not None:
        value = environ.get(env_name)
        if value is None or not value.strip():
            problem = "is not set" if value is None else "is empty"
            raise SecretUnavailable(env_name, False, problem)
        return value.strip()
    if file_name is None:
        raise ValueError("read_secret needs a variable or a file")
    path = Path(file_name).expanduser()
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        problem = "does not exist"
    except OSError as err:
        problem = f"cannot be read ({err.strerror or type(err).__name__})"
    except UnicodeDecodeError:
        problem = "is not UTF-8 text"
    else:
        if value:
            return value
        problem = "is empty"
    raise SecretUnavailable(str(path), True, problem)


class _LocatedValueError(ValueError):
    """A validator error that knows the deeper location it is about (appended to pydantic's loc)."""

    def __init__(self, message: str, loc: tuple[int | str, ...]) -> None:
        super().__init__(message)
        self.loc = loc


class _Strict(BaseModel):
    """Unknown keys are errors: a typo'd field must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Strict):
    """Dollars per 1M tokens. ``cached_input`` unset means cached tokens bill at ``input``;
    ``reasoning`` unset means reasoning tokens bill at ``output``."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    reasoning: float | None = Field(default=None, ge=0)


class Timeouts(_Strict):
    """Per-request limits in seconds. Generous by default: reasoning models can think for minutes
    before the first token, and a benchmark should measure slowness rather than hide it as errors."""

    connect_s: float = Field(default=10.0, gt=0)  # TCP + TLS handshake
    first_token_s: float = Field(default=120.0, gt=0)  # request sent -> first output event
    idle_s: float = Field(default=60.0, gt=0)  # longest silence inside a stream (a stall)
    total_s: float = Field(default=600.0, gt=0)  # whole request, sent -> stream end


LOCAL_ENGINE_URL = "http://127.0.0.1/v1"  # placeholder for a local engine that is not running yet


class LocalEngineOptions(_Strict):
    """How tokenrace runs a local llama.cpp engine for an ``engine: local`` endpoint."""

    parallel: int = Field(default=4, ge=1)  # slots: concurrent sequences with continuous batching
    context: int = Field(default=8192, ge=256)  # total context, shared by the slots
    threads: int | None = Field(default=None, ge=1)  # default: every CPU
    port: int | None = Field(default=None, ge=1, le=65535)  # default: a free port


class EndpointConfig(_Strict):
    """One endpoint: where to send, which API dialect, which model, how to authenticate, what it costs.

    ``base_url`` is the API root including any version segment (``https://api.openai.com/v1``,
    ``https://api.anthropic.com/v1``); clients append ``/chat/completions``, ``/completions`` or
    ``/messages``. With ``engine: local`` tokenrace starts a llama.cpp server for ``model`` (a known
    short name or a .gguf path) and fills in ``base_url`` itself; the API defaults to ``openai-chat`` and
    the price to 0 (``price_per_hour`` states what the hardware costs, to compare with API prices).
    """

    name: str = Field(min_length=1)
    api: Api
    base_url: str
    model: str = Field(min_length=1)
    engine: Literal["local"] | None = None
    local: LocalEngineOptions = Field(default_factory=LocalEngineOptions)
    price_per_hour: float | None = Field(default=None, ge=0)
    api_key_env: str | None = None
    api_key_file: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    price: Price | None = None
    max_concurrency: int | None = Field(default=None, ge=1)  # None: no cap of the endpoint's own
    tags: list[str] = Field(default_factory=list)
    timeouts: Timeouts = Field(default_factory=Timeouts)

    @field_validator("name")
    @classmethod
    def _name_is_clean(cls, v: str) -> str:
        if v != v.strip() or any(c.isspace() for c in v):
            raise ValueError("must not contain whitespace")
        return v

    @model_validator(mode="before")
    @classmethod
    def _local_engine_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("engine") != "local":
            return data
        if "base_url" in data:
            raise _LocatedValueError("not allowed with `engine: local`: the engine sets it", ("base_url",))
        # Until the engine runs, the URL is a placeholder; bench swaps in the real one (with_base_url).
        return {"api": "openai-chat", "price": {"input": 0.0, "output": 0.0}, **data, "base_url": LOCAL_ENGINE_URL}

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, v: str) -> str:
        # Messages never echo the URL: it may carry credentials.
        v = v.strip()
        try:
            parts = urlsplit(v)
        except ValueError:
            raise ValueError("not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        v = v.rstrip("/")
        for suffix in _ENDPOINT_SUFFIXES:
            if urlsplit(v).path.endswith(suffix):
                raise ValueError(
                    f"must be the API root (e.g. https://api.openai.com/v1), without {suffix!r}: the client appends it"
                )
        return v

    @field_validator("api_key_env")
    @classmethod
    def _env_is_a_name(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME_RE.match(v):
            raise ValueError("must be the NAME of an environment variable (e.g. OPENAI_API_KEY), not the key itself")
        return v

    @field_validator("api_key_file")
    @classmethod
    def _file_not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must be a path")
        return v

    @model_validator(mode="after")
    def _one_key_source(self) -> EndpointConfig:
        if self.api_key_env is not None and self.api_key_file is not None:
            raise _LocatedValueError("set api_key_env or api_key_file, not both", ("api_key_file",))
        if self.engine == "local" and self.api == "anthropic-messages":
            raise _LocatedValueError("a local engine speaks openai-chat or openai-completions", ("api",))
        return self

    @property
    def is_local(self) -> bool:
        return self.engine == "local"

    def with_base_url(self, base_url: str) -> EndpointConfig:
        """The same endpoint pointed at a running engine."""
        return self.model_copy(update={"base_url": base_url})

    @classmethod
    def adhoc(cls, base_url: str, api: str, model: str, name: str | None = None) -> EndpointConfig:
        """An endpoint from command-line flags, validated like a config entry.

        The default name is ``model@host[:port]`` so runs against different servers stay apart.
        """
        if name is None:
            try:
                host = urlsplit(base_url.strip()).netloc.rsplit("@", 1)[-1]
            except ValueError:
                host = ""
            name = f"{model}@{host}" if host else model
        try:
            return cls(name=name, api=api, base_url=base_url, model=model)  # type: ignore[arg-type]
        except ValidationError as err:
            raise _from_validation(err, path=None, locate=lambda loc: None) from None

    def api_key(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The key, read now from the named variable or file; None when the endpoint needs none."""
        if self.api_key_env is None and self.api_key_file is None:
            return None
        try:
            return read_secret(self.api_key_env, self.api_key_file, os.environ if environ is None else environ)
        except SecretUnavailable as err:
            what = "api key file" if err.from_file else "environment variable"
            raise MissingSecretError(
                f"endpoint {self.name!r}: {what} {err.source} {err.problem}",
                endpoint=self.name,
                source=err.source,
                field="api_key_file" if err.from_file else "api_key_env",
            ) from None

    def public_dict(self) -> dict[str, Any]:
        """The config as stored with a run: JSON-ready, secret values removed (names of the
        variable/file stay, so a run says how it authenticated)."""
        data = self.model_dump(mode="json")
        data["headers"] = redact_headers(self.headers)
        data["base_url"] = redact_url(self.base_url)
        return data

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # repr/str (and rich) go through here: show headers and URL redacted.
        for key, value in super().__repr_args__():
            if key == "headers":
                yield key, redact_headers(self.headers)
            elif key == "base_url":
                yield key, redact_url(self.base_url)
            else:
                yield key, value


POLICIES = ("fixed", "weighted", "cheapest", "fastest", "lowest-ttft", "least-busy", "cascade")


class RouteConfig(_Strict):
    """A virtual model name of the gateway: candidate endpoints and how to choose among them.

    ``endpoints`` are the candidates in order (``fixed`` tries them in that order; every policy falls back
    to the next candidate on an error before the first token). ``cascade`` sends easy prompts to
    ``endpoints`` (the cheap, fast tier) and hard ones to ``premium``; the difficulty threshold is
    ``threshold`` (a score in [0, 1]) or is calibrated to send ``premium_share`` of the calls to premium.
    """

    name: str = Field(min_length=1)
    policy: Literal["fixed", "weighted", "cheapest", "fastest", "lowest-ttft", "least-busy", "cascade"] = "fixed"
    endpoints: list[str] = Field(min_length=1)
    weights: list[float] | None = None  # weighted: one weight >= 0 per endpoint
    premium: list[str] = Field(default_factory=list)  # cascade: the premium tier
    threshold: float | None = Field(default=None, ge=0, le=1)  # cascade: difficulty at or above -> premium
    premium_share: float | None = Field(default=None, ge=0, le=1)  # cascade: target share of premium calls
    retries: int = Field(default=1, ge=0, le=5)  # per candidate, on 429/5xx/connect errors before any token
    fallback: bool = True  # try the next candidate when one fails before its first token

    @model_validator(mode="after")
    def _policy_options(self) -> RouteConfig:
        if self.policy == "weighted":
            if self.weights is None or len(self.weights) != len(self.endpoints):
                raise _LocatedValueError("weighted needs one weight per endpoint", ("weights",))
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise _LocatedValueError("weights must be >= 0 with a positive sum", ("weights",))
        elif self.weights is not None:
            raise _LocatedValueError(f"weights only apply to policy weighted, not {self.policy}", ("weights",))
        if self.policy == "cascade":
            if not self.premium:
                raise _LocatedValueError("cascade needs a premium tier (premium: [endpoint, ...])", ("premium",))
            if (self.threshold is None) == (self.premium_share is None):
                raise _LocatedValueError("cascade needs exactly one of threshold or premium_share", ("threshold",))
        elif self.premium or self.threshold is not None or self.premium_share is not None:
            raise _LocatedValueError(
                f"premium, threshold and premium_share only apply to policy cascade, not {self.policy}", ("policy",)
            )
        return self


class GatewayKey(_Strict):
    """A gateway API key: stored only as its SHA-256, given as a hash, an env var or a file."""

    id: str = Field(min_length=1)  # what records, logs and `usage` show instead of the key
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    key_env: str | None = None
    key_file: str | None = None
    rpm: int | None = Field(default=None, ge=1)  # requests per minute
    tpm: int | None = Field(default=None, ge=1)  # tokens (prompt + output) per minute
    budget_usd: float | None = Field(default=None, ge=0)  # total spend allowed
    routes: list[str] | None = None  # routes (or endpoint names) this key may call; None: all

    @model_validator(mode="after")
    def _one_source(self) -> GatewayKey:
        given = [k for k in ("key_sha256", "key_env", "key_file") if getattr(self, k)]
        if len(given) != 1:
            raise _LocatedValueError("give exactly one of key_sha256, key_env or key_file", ("key_sha256",))
        return self


class BreakerOptions(_Strict):
    failures: int = Field(default=5, ge=1)  # consecutive failures that open the circuit
    cooldown_s: float = Field(default=30.0, gt=0)  # open this long, then one trial request


class GatewayConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    keys: list[GatewayKey] = Field(default_factory=list)  # none: no key needed (keep it on loopback)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    breaker: BreakerOptions = Field(default_factory=BreakerOptions)
    ewma_alpha: float = Field(default=0.2, gt=0, le=1)  # weight of the newest request in live stats
    default_route: str | None = None  # used when the request's model matches no route or endpoint
    # Keep each call's last user message in its record (extra.prompt), for `router train --from-feedback`.
    # Off by default: prompts can be sensitive. A fingerprint of it (extra.prompt_sha256) is always kept.
    record_prompts: bool = False
    # cascade difficulty: "heuristic" (default when unset) or a router file from `tokenrace router train`;
    # a relative path in a config file is relative to that file's directory
    difficulty: str | None = None


class Config(_Strict):
    """Every configured endpoint; names are unique so ``--endpoint NAME`` is unambiguous. Routes and the
    gateway section are read only by ``tokenrace serve``."""

    endpoints: list[EndpointConfig] = Field(min_length=1)
    routes: list[RouteConfig] = Field(default_factory=list)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)

    @model_validator(mode="after")
    def _routes_name_endpoints(self) -> Config:
        names = set(self.names())
        seen: dict[str, int] = {}
        for i, route in enumerate(self.routes):
            if route.name in seen:
                raise _LocatedValueError(
                    f"duplicate route name {route.name!r} (also routes[{seen[route.name]}])", ("routes", i, "name")
                )
            if route.name in names:
                raise _LocatedValueError(f"route name {route.name!r} is also an endpoint name", ("routes", i, "name"))
            seen[route.name] = i
            for field_name in ("endpoints", "premium"):
                for j, name in enumerate(getattr(route, field_name)):
                    if name not in names:
                        raise _LocatedValueError(
                            f"unknown endpoint {name!r}; endpoints: {', '.join(self.names())}",
                            ("routes", i, field_name, j),
                        )
        default = self.gateway.default_route
        if default is not None and default not in seen and default not in names:
            raise _LocatedValueError(
                f"default_route {default!r} is neither a route nor an endpoint", ("gateway", "default_route")
            )
        key_ids: set[str] = set()
        for i, key in enumerate(self.gateway.keys):
            if key.id in key_ids:
                raise _LocatedValueError(f"duplicate key id {key.id!r}", ("gateway", "keys", i, "id"))
            key_ids.add(key.id)
        return self

    def route(self, name: str) -> RouteConfig | None:
        for route in self.routes:
            if route.name == name:
                return route
        return None

    @field_validator("endpoints")
    @classmethod
    def _unique_names(cls, endpoints: list[EndpointConfig]) -> list[EndpointConfig]:
        first: dict[str, int] = {}
        for i, ep in enumerate(endpoints):
            if ep.name in first:
                raise _LocatedValueError(
                    f"duplicate endpoint name {ep.name!r} (also endpoints[{first[ep.name]}])",
                    (i, "name"),
                )
            first[ep.name] = i
        return endpoints

    def names(self) -> list[str]:
        """Endpoint names in config order."""
        return [ep.name for ep in self.endpoints]

    def endpoint(self, name: str) -> EndpointConfig:
        """The endpoint called ``name``; UnknownEndpointError lists the known names otherwise."""
        for ep in self.endpoints:
            if ep.name == name:
                return ep
        raise UnknownEndpointError(name, self.names())


# ---------------------------------------------------------------------------------------------
# Loading


def find_config(explicit: str | os.PathLike[str] | None = None, *, cwd: Path | None = None) -> Path | None:
    """The config to use: the explicit path, else ``$TOKENRACE_CONFIG``, else the first of
    ``tokenrace.yaml``, ``tokenrace.yml``, ``tokenrace.toml`` in ``cwd``; None if there is none.

    An explicit or environment path is returned even if missing, so loading it reports the mistake
    instead of silently falling back to another file.
    """
    if explicit is not None and str(explicit):
        return Path(explicit).expanduser()
    env = os.environ.get(CONFIG_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    base = cwd if cwd is not None else Path.cwd()
    for name in DEFAULT_CONFIG_NAMES:
        candidate = base / name
        if candidate.is_file():
            return candidate
    return None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file (TOML if it ends in ``.toml``, YAML otherwise).

    Raises ConfigError, located at file and line, for a missing file, a syntax error or any
    invalid value.
    """
    shown = str(path)
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(
            f"config file not found; copy {EXAMPLE_CONFIG} to tokenrace.yaml and edit it, "
            f"or pass --config PATH (or set {CONFIG_ENV})",
            path=shown,
        )
    if not p.is_file():
        raise ConfigError("not a file", path=shown)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path=shown) from None
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror or err}", path=shown) from None
    config = parse_toml(text, path=shown) if p.suffix.lower() == ".toml" else parse_yaml(text, path=shown)
    return _resolve_relative(config, p.parent)


def _resolve_relative(config: Config, base: Path) -> Config:
    """Paths the gateway reads (``gateway.difficulty``) made relative to the config file, not the shell."""
    difficulty = config.gateway.difficulty
    if difficulty is None or difficulty == "heuristic" or Path(difficulty).expanduser().is_absolute():
        return config
    gateway = config.gateway.model_copy(update={"difficulty": str(base / difficulty)})
    return config.model_copy(update={"gateway": gateway})


def parse_yaml(text: str, path: str = "<yaml>") -> Config:
    """Validate YAML text; lines come from the composed node tree."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_duplicate_keys(node, path)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = err.problem or err.context or "invalid YAML"
        col = f" (column {mark.column + 1})" if mark is not None else ""
        ctx = err.context_mark
        if err.problem and err.context and ctx is not None and ctx is not mark:
            # e.g. an unclosed quote: the problem is at the end, the cause where the quote opened.
            col += f", {err.context} on line {ctx.line + 1}"
        raise ConfigError(f"YAML syntax error: {problem}{col}", path=path, line=line) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"YAML error: {type(err).__name__}", path=path) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        what = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError(
            f"the file is {what}; expected a mapping with an 'endpoints:' list (see {EXAMPLE_CONFIG})",
            path=path,
            line=node.start_mark.line + 1 if node is not None else 1,
        )
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise _from_validation(err, path=path, locate=lambda loc: _yaml_line(node, loc)) from None


def parse_toml(text: str, path: str = "<toml>") -> Config:
    """Validate TOML text; tomllib has no positions, so lines are found by scanning the text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        msg = str(err)
        line = getattr(err, "lineno", None)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", msg)
        if m:
            line = line or int(m.group(1))
            msg = f"{msg[: m.start()]} (column {m.group(2)})"
        elif m is None and "(at end of document)" in msg:
            line = line or max(1, len(text.splitlines()))
            msg = msg.replace(" (at end of document)", " at end of file")
        raise ConfigError(f"TOML syntax error: {msg}", path=path, line=line) from None
    lines = text.splitlines()
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise _from_validation(err, path=path, locate=lambda loc: _toml_line(lines, loc)) from None


def _from_validation(
    err: ValidationError,
    *,
    path: str | None,
    locate: Callable[[tuple[int | str, ...]], int | None],
) -> ConfigError:
    """One ConfigError listing every pydantic error with its line and dotted field path.

    Only pydantic's message is used, never the input value, which could be a misplaced secret.
    """
    problems: list[ConfigError] = []
    for e in err.errors(include_url=False):
        loc: tuple[int | str, ...] = tuple(e["loc"])
        ctx = e.get("ctx") or {}
        cause = ctx.get("error")
        if e["type"] == "value_error" and isinstance(cause, BaseException):
            msg = str(cause)
            if isinstance(cause, _LocatedValueError):
                loc += cause.loc
        elif e["type"] == "assertion_error" and isinstance(cause, BaseException):
            msg = str(cause)
        else:
            msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field" + _field_hint(loc)
        problems.append(ConfigError(msg, path=path, line=locate(loc), field=_dotted(loc)))
    problems.sort(key=lambda p: p.line if p.line is not None else 1 << 30)  # top of the file first
    first = problems[0]
    return ConfigError(first.message, path=path, line=first.line, field=first.field, problems=problems)


def _dotted(loc: tuple[int | str, ...]) -> str:
    """``('endpoints', 1, 'api')`` -> ``endpoints[1].api``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _field_hint(loc: tuple[int | str, ...]) -> str:
    """A 'did you mean' for a typo'd key, and where a literal key should go instead."""
    key = loc[-1] if loc else None
    if not isinstance(key, str):
        return ""
    if key in ("api_key", "key", "token", "apikey"):
        return " (put the key in an environment variable and set api_key_env, or use api_key_file)"
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    close = difflib.get_close_matches(key, list(model.model_fields), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc`` (for field-name suggestions)."""
    model: type[BaseModel] = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        found = _find_model(field.annotation) if field is not None else None
        if found is None:
            return None
        model = found
    return model


def _find_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _find_model(arg)
            if found is not None:
                return found
    return None


def _check_duplicate_keys(node: yaml.Node, path: str) -> None:
    """YAML silently keeps the last of two equal keys; in a config that hides a mistake."""
    stack: list[yaml.Node] = [node]
    seen_nodes: set[int] = set()
    while stack:
        n = stack.pop()
        if id(n) in seen_nodes:
            continue
        seen_nodes.add(id(n))
        if isinstance(n, yaml.MappingNode):
            keys: dict[str, int] = {}
            for k, v in n.value:
                if isinstance(k, yaml.ScalarNode) and k.value != "<<":
                    if k.value in keys:
                        raise ConfigError(
                            f"duplicate key {k.value!r} (first on line {keys[k.value]})",
                            path=path,
                            line=k.start_mark.line + 1,
                        )
                    keys[k.value] = k.start_mark.line + 1
                stack.extend((k, v))
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)


def _yaml_line(root: yaml.Node, loc: tuple[int | str, ...]) -> int:
    """The line of ``loc``: the key's line for a bad value; the enclosing mapping's line when the
    key is missing."""
    node = root
    line = root.start_mark.line
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == part:
                    line, node = k.start_mark.line, v
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line
        else:
            break
    return line + 1


_TOML_HEADER_RE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?")


def _toml_key_re(key: str) -> re.Pattern[str]:
    k = re.escape(key)
    return re.compile(rf"""^\s*(?:{k}|"{k}"|'{k}')\s*(?:=|\.)""")


def _toml_header_name(line: str) -> str | None:
    m = _TOML_HEADER_RE.match(line)
    if not m:
        return None
    return ".".join(part.strip().strip("\"'") for part in m.group(1).split("."))


def _toml_find_key(lines: list[str], start: int, end: int, key: str) -> int | None:
    """First ``key =`` line in ``lines[start:end]`` before any table header (0-based index)."""
    pattern = _toml_key_re(key)
    for i in range(start, end):
        if _toml_header_name(lines[i]) is not None:
            return None
        if pattern.match(lines[i]):
            return i
    return None


def _toml_line(lines: list[str], loc: tuple[int | str, ...]) -> int | None:
    """Best-effort line of ``loc`` in TOML text: the n-th ``[[endpoints]]`` header, then the
    ``key =`` line (or ``[endpoints.key]`` sub-table) inside it; falls back to the header line."""
    if not loc:
        return None
    top = loc[0]
    if not isinstance(top, str):
        return None
    headers = [(i, _toml_header_name(text)) for i, text in enumerate(lines)]
    headers = [(i, h) for i, h in headers if h is not None]
    if top == "endpoints" and len(loc) >= 2 and isinstance(loc[1], int):
        entries = [i for i, text in enumerate(lines) if re.match(r"^\s*\[\[\s*endpoints\s*\]\]", text)]
        if loc[1] < len(entries):
            start = entries[loc[1]]
            end = next((i for i in entries if i > start), len(lines))
            found = _toml_table_line(lines, headers, start, end, "endpoints", loc[2:])
            return found + 1
    # A top-level key or table (e.g. a typo'd ``[[endpoint]]``), or an inline ``endpoints = [...]``.
    for i, name in headers:
        if name == top:
            return i + 1
    first_header = headers[0][0] if headers else len(lines)
    i = _toml_find_key(lines, 0, first_header, top)
    return i + 1 if i is not None else None


def _toml_table_line(
    lines: list[str],
    headers: list[tuple[int, str | None]],
    start: int,
    end: int,
    prefix: str,
    rest: tuple[int | str, ...],
) -> int:
    """0-based line of ``rest`` inside the table whose header is ``lines[start]``."""
    if not rest or not isinstance(rest[0], str):
        return start
    key = rest[0]
    i = _toml_find_key(lines, start + 1, end, key)
    if i is not None:
        return i  # an inline table or dotted key: its line is as close as TOML text allows
    sub = f"{prefix}.{key}"
    for h, name in headers:
        if start < h < end and name == sub:
            sub_end = next((k for k, _ in headers if k > h), end)
            return _toml_table_line(lines, headers, h, min(sub_end, end), sub, rest[1:])
    return start
