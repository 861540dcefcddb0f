"""Config loading: valid files load, and every mistake is reported at its file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tokenrace.config import (
    Config,
    ConfigError,
    EndpointConfig,
    MissingSecretError,
    Price,
    Timeouts,
    UnknownEndpointError,
    find_config,
    load_config,
)

REPO = Path(__file__).resolve().parents[1]

GOOD_YAML = """\
endpoints:
  - name: gpt-4o-mini
    api: openai-chat
    base_url: https://api.openai.com/v1/
    model: gpt-4o-mini
    api_key_env: OPENAI_API_KEY
    headers: {X-Team: infra}
    price: {input: 0.15, output: 0.60, cached_input: 0.075, reasoning: 0.60}
    max_concurrency: 64
    tags: [hosted, cheap]
    timeouts: {connect_s: 10, first_token_s: 120, idle_s: 60, total_s: 600}
  - name: local
    api: openai-completions
    base_url: http://127.0.0.1:8765/v1
    model: emulator
"""

GOOD_TOML = """\
[[endpoints]]
name = "gpt-4o-mini"
api = "openai-chat"
base_url = "https://api.openai.com/v1"
model = "gpt-4o-mini"
api_key_env = "OPENAI_API_KEY"
headers = { X-Team = "infra" }
price = { input = 0.15, output = 0.60 }
max_concurrency = 64
tags = ["hosted", "cheap"]

[endpoints.timeouts]
first_token_s = 30

[[endpoints]]
name = "claude"
api = "anthropic-messages"
base_url = "https://api.anthropic.com/v1"
model = "claude-3-5-haiku-latest"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def yaml_error(tmp_path: Path, text: str) -> ConfigError:
    p = write(tmp_path, "tokenrace.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    return info.value


def toml_error(tmp_path: Path, text: str) -> ConfigError:
    p = write(tmp_path, "tokenrace.toml", text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    return info.value


# --- valid files -------------------------------------------------------------------------------


def test_valid_yaml_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "tokenrace.yaml", GOOD_YAML))
    assert cfg.names() == ["gpt-4o-mini", "local"]
    ep = cfg.endpoint("gpt-4o-mini")
    assert ep.api == "openai-chat"
    assert ep.base_url == "https://api.openai.com/v1"  # trailing slash dropped
    assert ep.headers == {"X-Team": "infra"}
    assert ep.price == Price(input=0.15, output=0.60, cached_input=0.075, reasoning=0.60)
    assert ep.max_concurrency == 64
    assert ep.tags == ["hosted", "cheap"]
    assert ep.timeouts == Timeouts(connect_s=10, first_token_s=120, idle_s=60, total_s=600)
    local = cfg.endpoint("local")
    assert local.api_key_env is None and local.price is None and local.max_concurrency is None
    assert local.timeouts == Timeouts()


def test_valid_toml_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "tokenrace.toml", GOOD_TOML))
    assert cfg.names() == ["gpt-4o-mini", "claude"]
    ep = cfg.endpoint("gpt-4o-mini")
    assert ep.price is not None and ep.price.output == 0.60 and ep.price.cached_input is None
    assert ep.timeouts.first_token_s == 30 and ep.timeouts.total_s == Timeouts().total_s
    assert cfg.endpoint("claude").api == "anthropic-messages"


def test_example_file_is_valid() -> None:
    cfg = load_config(REPO / "tokenrace.example.yaml")
    apis = {ep.api for ep in cfg.endpoints}
    assert {"openai-chat", "anthropic-messages"} <= apis
    emu = cfg.endpoint("emulator")
    assert emu.base_url == "http://127.0.0.1:8765/v1" and emu.api == "openai-chat" and emu.model == "emulator"


def test_default_timeouts_suit_llms() -> None:
    t = Timeouts()
    assert t.connect_s <= 30 and t.first_token_s >= 60 and t.idle_s >= 30 and t.total_s >= t.first_token_s


def test_unknown_endpoint_lists_known_names(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "tokenrace.yaml", GOOD_YAML))
    with pytest.raises(UnknownEndpointError) as info:
        cfg.endpoint("gpt-4o-mni")
    msg = str(info.value)
    assert isinstance(info.value, LookupError)
    assert "gpt-4o-mni" in msg and "gpt-4o-mini" in msg and "local" in msg
    assert info.value.known == ["gpt-4o-mini", "local"]


# --- YAML errors: file, line, field ------------------------------------------------------------


def test_yaml_bad_api_value(tmp_path: Path) -> None:
    err = yaml_error(
        tmp_path,
        """\
        endpoints:
          - name: a
            api: openai-chat
            base_url: http://x/v1
            model: m
          - name: b
            api: openai-chatt
            base_url: http://x/v1
            model: m
        """,
    )
    assert (err.line, err.field) == (7, "endpoints[1].api")
    assert err.path is not None and err.path.endswith("tokenrace.yaml")
    assert str(err) == (
        f"{err.path}:7: endpoints[1].api: Input should be 'openai-chat', 'openai-completions' or 'anthropic-messages'"
    )


def test_yaml_typo_field_suggests_the_right_one(tmp_path: Path) -> None:
    err = yaml_error(
        tmp_path,
        """\
        endpoints:
          - name: a
            api: openai-chat
            base_uri: http://x/v1
            model: m
        """,
    )
    # The typo is reported at its own line; the now-missing base_url at the entry's line.
    lines = {p.field: p.line for p in err.problems}
    assert lines["endpoints[0].base_uri"] == 4
    assert lines["endpoints[0].base_url"] == 2
    typo = next(p for p in err.problems if p.field == "endpoints[0].base_uri")
    assert "unknown field" in typo.message and "base_url" in typo.message
    assert "tokenrace.yaml:4: endpoints[0].base_uri:" in str(err)


def test_yaml_typo_in_nested_table(tmp_path: Path) -> None:
    err = yaml_error(
        tmp_path,
        """\
        endpoints:
          - name: a
            api: openai-chat
            base_url: http://x/v1
            model: m
            timeouts:
              connect_s: 5
              frist_token_s: 5
        """,
    )
    assert (err.line, err.field) == (8, "endpoints[0].timeouts.frist_token_s")
    assert "first_token_s" in err.message


def test_yaml_missing_model_points_at_the_entry(tmp_path: Path) -> None:
    err = yaml_error(
        tmp_path,
        """\
        # a comment line
        endpoints:
          - name: a
            api: openai-chat
            base_url: http://x/v1
            model: m

          - name: b
            api: openai-chat
            base_url: http://x/v1
        """,
    )
    assert (err.line, err.field) == (8, "endpoints[1].model")
    assert "Field required" in err.message


def test_yaml_duplicate_name_points_at_the_second(tmp_path: Path) -> None:
    err = yaml_error(
        tmp_path,
        """\
        endpoints:
          - name: same
            api: openai-chat
            base_url: http://x/v1
            model: m
          - name: same
            api: openai-chat
            base_url: http://y/v1
            model: m
        """,
    )
    assert (err.line, err.field) == (6, "endpoints[1].name")
    assert "duplicate endpoint name 'same'" in err.message and "endpoints[0]" in err.message


@pytest.mark.parametrize(
    "url",
    ["ftp://x/v1", "api.openai.com/v1", "https://", "https://api.openai.com/v1/chat/completions"],
)
def test_yaml_bad_base_url(tmp_path: Path, url: str) -> None:
    err = yaml_error(
        tmp_path,
        f"""\
        endpoints:
          - name: a
            api: openai-chat
            model: m
            base_url: {url}
        """,
    )
    assert (err.line, err.field) == (5, "endpoints[0].base_url")
    assert "Value error" not in err.message


def test_yaml_negative_max_concurrency(tmp_path: Path) -> None:
    err = yaml_error(
        tmp_path,
        """\
        endpoints:
          - name: a
            api: openai-chat
            base_url: http://x/v1
            model: m
            max_concurrency: -4
        """,
    )
    assert (err.line, err.field) == (6, "endpoints[0].max_concurrency")
    assert "greater than or equal to 1" in err.message


def test_yaml_nested_bad_value(tmp_path: Path) -> None:
    err = yaml_error(
        tmp_path,
        """\
        endpoints:
          - name: a
            api: openai-chat
            base_url: http://x/v1
            model: m
            price:
              input: 1
              output: lots
        """,
    )
    assert (err.line, err.field) == (8, "endpoints[0].price.output")


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    err = yaml_error(
        tmp_path,
        """\
        endpoints:
          - name: a
            api: openai-chat
           base_url: [http://x/v1
            model: m
        """,
    )
    assert err.line is not None and 3 <= err.line <= 6
    assert "YAML syntax error" in str(err)
    assert str(err).startswith(f"{err.path}:{err.line}: ")


def test_yaml_duplicate_key(tmp_path: Path) -> None:
    err = yaml_error(
        tmp_path,
        """\
        endpoints:
          - name: a
            api: openai-chat
            base_url: http://x/v1
            model: m
            model: n
        """,
    )
    assert err.line == 6 and "duplicate key 'model'" in err.message


@pytest.mark.parametrize("text", ["", "# nothing\n", "- a\n- b\n"])
def test_yaml_not_a_mapping(tmp_path: Path, text: str) -> None:
    err = yaml_error(tmp_path, text)
    assert "endpoints" in err.message


def test_yaml_empty_endpoints(tmp_path: Path) -> None:
    err = yaml_error(tmp_path, "endpoints: []\n")
    assert (err.line, err.field) == (1, "endpoints")


def test_yaml_literal_key_gets_a_hint_without_the_value(tmp_path: Path) -> None:
    err = yaml_error(
        tmp_path,
        """\
        endpoints:
          - name: a
            api: openai-chat
            base_url: http://x/v1
            model: m
            api_key: sk-live-SECRET123
        """,
    )
    assert (err.line, err.field) == (6, "endpoints[0].api_key")
    assert "api_key_env" in err.message
    assert "SECRET123" not in str(err)
    assert err.__cause__ is None and err.__suppress_context__


def test_yaml_key_in_api_key_env_is_refused_without_echo(tmp_path: Path) -> None:
    err = yaml_error(
        tmp_path,
        """\
        endpoints:
          - name: a
            api: openai-chat
            base_url: http://x/v1
            model: m
            api_key_env: sk-live-SECRET123
        """,
    )
    assert (err.line, err.field) == (6, "endpoints[0].api_key_env")
    assert "NAME of an environment variable" in err.message
    assert "SECRET123" not in str(err)


def test_yaml_reports_all_problems(tmp_path: Path) -> None:
    err = yaml_error(
        tmp_path,
        """\
        endpoints:
          - name: a
            api: nope
            base_url: http://x/v1
            model: m
            max_concurrency: 0
        """,
    )
    assert [(p.line, p.field) for p in err.problems] == [
        (3, "endpoints[0].api"),
        (6, "endpoints[0].max_concurrency"),
    ]
    assert len(str(err).splitlines()) == 2


def test_both_key_sources_refused(tmp_path: Path) -> None:
    err = yaml_error(
        tmp_path,
        """\
        endpoints:
          - name: a
            api: openai-chat
            base_url: http://x/v1
            model: m
            api_key_env: K
            api_key_file: /k
        """,
    )
    assert (err.line, err.field) == (7, "endpoints[0].api_key_file")


# --- TOML errors -------------------------------------------------------------------------------


def test_toml_bad_api_value(tmp_path: Path) -> None:
    err = toml_error(
        tmp_path,
        """\
        [[endpoints]]
        name = "a"
        api = "openai-chat"
        base_url = "http://x/v1"
        model = "m"

        [[endpoints]]
        name = "b"
        api = "openai-chatt"
        base_url = "http://x/v1"
        model = "m"
        """,
    )
    assert (err.line, err.field) == (9, "endpoints[1].api")
    assert str(err).startswith(f"{err.path}:9: endpoints[1].api: Input should be 'openai-chat'")


def test_toml_missing_field_points_at_table_header(tmp_path: Path) -> None:
    err = toml_error(
        tmp_path,
        """\
        [[endpoints]]
        name = "a"
        api = "openai-chat"
        base_url = "http://x/v1"
        model = "m"

        [[endpoints]]
        name = "b"
        api = "openai-chat"
        base_url = "http://x/v1"
        """,
    )
    assert (err.line, err.field) == (7, "endpoints[1].model")


def test_toml_typo_and_subtable(tmp_path: Path) -> None:
    err = toml_error(
        tmp_path,
        """\
        [[endpoints]]
        name = "a"
        api = "openai-chat"
        base_url = "http://x/v1"
        model = "m"
        max_concurrency = -1

        [endpoints.timeouts]
        connect_s = 5
        idle = 3
        """,
    )
    lines = {p.field: p.line for p in err.problems}
    assert lines == {"endpoints[0].max_concurrency": 6, "endpoints[0].timeouts.idle": 10}


def test_toml_duplicate_name(tmp_path: Path) -> None:
    err = toml_error(
        tmp_path,
        """\
        [[endpoints]]
        name = "a"
        api = "openai-chat"
        base_url = "http://x/v1"
        model = "m"

        [[endpoints]]
        model = "m"
        name = "a"
        api = "openai-chat"
        base_url = "http://y/v1"
        """,
    )
    assert (err.line, err.field) == (9, "endpoints[1].name")


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    err = toml_error(
        tmp_path,
        """\
        [[endpoints]]
        name = "a"
        api = openai-chat
        """,
    )
    assert err.line == 3
    assert "TOML syntax error" in str(err) and str(err).startswith(f"{err.path}:3: ")


def test_toml_unknown_top_level_table(tmp_path: Path) -> None:
    err = toml_error(
        tmp_path,
        """\
        [[endpoints]]
        name = "a"
        api = "openai-chat"
        base_url = "http://x/v1"
        model = "m"

        [[endpoint]]
        name = "b"
        """,
    )
    assert (err.line, err.field) == (7, "endpoint")
    assert "endpoints" in err.message


# --- missing file and discovery ----------------------------------------------------------------


def test_missing_file_suggests_example(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    err = info.value
    assert err.path == str(missing) and err.line is None
    assert "not found" in str(err) and "tokenrace.example.yaml" in str(err)


def test_find_config_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENRACE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert find_config(None) is None
    (tmp_path / "tokenrace.toml").write_text("")
    assert find_config(None) == tmp_path / "tokenrace.toml"
    (tmp_path / "tokenrace.yml").write_text("")
    assert find_config(None) == tmp_path / "tokenrace.yml"
    (tmp_path / "tokenrace.yaml").write_text("")
    assert find_config(None) == tmp_path / "tokenrace.yaml"
    monkeypatch.setenv("TOKENRACE_CONFIG", "/etc/from-env.yaml")
    assert find_config(None) == Path("/etc/from-env.yaml")
    assert find_config("explicit.toml") == Path("explicit.toml")


def test_find_config_cwd_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENRACE_CONFIG", raising=False)
    (tmp_path / "tokenrace.yaml").write_text("")
    assert find_config(None, cwd=tmp_path) == tmp_path / "tokenrace.yaml"


# --- secrets -----------------------------------------------------------------------------------

SECRET = "sk-test-9f8e7d6c5b4a-NEVER-PRINT-ME"


def endpoint(**kw: object) -> EndpointConfig:
    base: dict[str, object] = {"name": "e", "api": "openai-chat", "base_url": "https://x/v1", "model": "m"}
    return EndpointConfig.model_validate({**base, **kw})


def test_api_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TR_TEST_KEY", f"  {SECRET}\n")
    assert endpoint(api_key_env="TR_TEST_KEY").api_key() == SECRET
    assert endpoint(api_key_env="OTHER").api_key({"OTHER": "v"}) == "v"


def test_api_key_from_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "k.key").write_text(SECRET + "\n")
    assert endpoint(api_key_file="~/k.key").api_key() == SECRET


def test_no_key_configured_is_none() -> None:
    assert endpoint().api_key() is None


def test_missing_env_secret_names_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TR_TEST_MISSING", raising=False)
    with pytest.raises(MissingSecretError) as info:
        endpoint(api_key_env="TR_TEST_MISSING").api_key()
    err = info.value
    assert isinstance(err, ConfigError)
    assert "TR_TEST_MISSING" in str(err) and "not set" in str(err)
    assert err.source == "TR_TEST_MISSING" and err.field == "api_key_env"


def test_empty_env_secret_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TR_TEST_EMPTY", "  ")
    with pytest.raises(MissingSecretError, match="TR_TEST_EMPTY is empty"):
        endpoint(api_key_env="TR_TEST_EMPTY").api_key()


def test_missing_and_empty_key_file(tmp_path: Path) -> None:
    missing = tmp_path / "none.key"
    with pytest.raises(MissingSecretError, match="does not exist") as info:
        endpoint(api_key_file=str(missing)).api_key()
    assert str(missing) in str(info.value)
    empty = tmp_path / "empty.key"
    empty.write_text("\n")
    with pytest.raises(MissingSecretError, match="is empty"):
        endpoint(api_key_file=str(empty)).api_key()


def test_secret_never_in_public_dict_or_repr(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TR_TEST_KEY", SECRET)
    ep = endpoint(
        api_key_env="TR_TEST_KEY",
        base_url=f"https://user:{SECRET}@x.example/v1?api-key={SECRET}&deployment=d",
        headers={"Authorization": f"Bearer {SECRET}", "x-api-key": SECRET, "X-Team": "infra"},
        price={"input": 1, "output": 2},
    )
    assert ep.api_key() == SECRET
    public = ep.public_dict()
    cfg = Config(endpoints=[ep])
    for text in (str(public), repr(ep), str(ep), repr(cfg), str(cfg)):
        assert SECRET not in text
    assert public["api_key_env"] == "TR_TEST_KEY"
    assert public["headers"]["X-Team"] == "infra"
    assert "deployment=d" in public["base_url"] and "x.example" in public["base_url"]
    assert public["price"] == {"input": 1.0, "output": 2.0, "cached_input": None, "reasoning": None}
    # The real values are still there for the client to send.
    assert ep.headers["Authorization"] == f"Bearer {SECRET}"


def test_missing_secret_message_has_no_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TR_TEST_EMPTYISH", "")
    with pytest.raises(MissingSecretError) as info:
        endpoint(api_key_env="TR_TEST_EMPTYISH").api_key()
    assert "TR_TEST_EMPTYISH" in str(info.value)


# --- ad hoc endpoints --------------------------------------------------------------------------


def test_adhoc_endpoint() -> None:
    ep = EndpointConfig.adhoc("http://127.0.0.1:8765/v1/", "openai-chat", "emulator")
    assert ep.name == "emulator@127.0.0.1:8765"
    assert ep.base_url == "http://127.0.0.1:8765/v1"
    assert ep.timeouts == Timeouts() and ep.api_key() is None
    named = EndpointConfig.adhoc("https://api.anthropic.com/v1", "anthropic-messages", "claude", name="c")
    assert named.name == "c"


def test_adhoc_invalid_raises_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        EndpointConfig.adhoc("localhost:8000", "openai-chat", "m")
    assert info.value.field == "base_url" and info.value.path is None
    with pytest.raises(ConfigError, match="api: Input should be"):
        EndpointConfig.adhoc("http://localhost:8000/v1", "openai", "m")


def test_models_are_strict() -> None:
    with pytest.raises(ValueError):
        Price.model_validate({"input": 1, "output": 1, "cache": 1})
    with pytest.raises(ValueError):
        Timeouts(connect_s=0)


def test_local_engine_endpoint_needs_no_url_and_costs_nothing_per_token(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "tokenrace.yaml",
        """\
        endpoints:
          - name: small
            engine: local
            model: smollm2-135m
            price_per_hour: 0.35
            local: {parallel: 2, context: 4096}
        """,
    )
    endpoint = load_config(p).endpoint("small")
    assert endpoint.is_local and endpoint.api == "openai-chat"
    assert (endpoint.price.input, endpoint.price.output) == (0.0, 0.0) and endpoint.price_per_hour == 0.35
    assert (endpoint.local.parallel, endpoint.local.context) == (2, 4096)
    assert endpoint.with_base_url("http://127.0.0.1:5555/v1").base_url == "http://127.0.0.1:5555/v1"


def test_local_engine_with_a_base_url_or_anthropic_api_is_an_error(tmp_path: Path) -> None:
    err = yaml_error(
        tmp_path,
        """\
        endpoints:
          - name: a
            engine: local
            model: smollm2-135m
            base_url: http://127.0.0.1:8000/v1
        """,
    )
    assert err.field == "endpoints[0].base_url" and "engine sets it" in err.message
    err = yaml_error(
        tmp_path,
        """\
        endpoints:
          - name: a
            engine: local
            api: anthropic-messages
            model: smollm2-135m
        """,
    )
    assert err.field == "endpoints[0].api" and err.line == 4


def test_remote_endpoint_still_requires_base_url(tmp_path: Path) -> None:
    err = yaml_error(tmp_path, "endpoints:\n  - {name: a, api: openai-chat, model: m}\n")
    assert err.field == "endpoints[0].base_url"
