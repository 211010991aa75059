"""Config mistakes as a new user makes them: one line naming the key, the file, the line and the closest name."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.settings_file import ConfigError, find_line, load_settings, unknown_env_warnings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tether.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "line", "key", "closest"),
    [
        ('[providers.local]\nkind = "chat-completions"\napi_key_evn = "K"\n', 3, "api_key_evn", "api_key_env"),
        (
            '[[routes]]\nmodel = "a"\nprovider = "scripted"\n\n[[routes]]\nmodel = "b"\nprovider = "scripted"\n'
            'upstream_modle = "x"\n',
            8,
            "upstream_modle",
            "upstream_model",
        ),
        ('[[routes]]\nmodel = "a"\nprovider = "scripted"\nfallback = ["scripted"]\n', 4, "fallback", "fallbacks"),
        ("prot = 9000\n", 1, "prot", "port"),
        ("[websocket]\nmax_inflight = 3\n", 2, "max_inflight", "max_in_flight"),
        ('providers.local = {kind = "anthropic", api_key_evn = "K"}\n', 1, "api_key_evn", "api_key_env"),
    ],
)
def test_unknown_key_is_an_error_naming_file_line_and_closest_name(
    tmp_path: Path, text: str, line: int, key: str, closest: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_settings(path, {})
    message = str(raised.value)
    assert message.startswith(f"{path}:{line}: unknown key '{key}'")
    assert f"did you mean '{closest}'?" in message
    assert "\n" not in message


def test_a_valid_file_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'port = 9001\n[providers.up]\nkind = "chat-completions"\n[[routes]]\nmodel = "x-*"\n'
        'provider = "up"\nfallbacks = ["scripted"]\n',
    )
    settings = load_settings(path, {})
    assert settings.port == 9001
    assert settings.routes[0].fallbacks == ["scripted"]


def test_toml_syntax_error_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "port = [\n")
    with pytest.raises(ConfigError, match=r"TOML syntax error") as raised:
        load_settings(path, {})
    assert str(path) in str(raised.value)


def test_invalid_value_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'host = "127.0.0.1"\nport = 99999\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(path, {})
    assert str(raised.value).startswith(f"{path}:2: port: ")


def test_unknown_provider_kind_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[providers.x]\nkind = "openai"\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(path, {})
    assert str(raised.value).startswith(f"{path}:2: providers.x.kind: ")


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_settings(tmp_path / "absent.toml", {})


def test_unknown_env_variables_warn_with_the_closest_setting() -> None:
    environ = {
        "TETHER_PORTT": "1",
        "TETHER_WEBSOCKET__MAX_INFLIGHT": "3",
        "TETHER_PORT": "8000",
        "TETHER_SCRIPTED__TTFT_S": "0.1",
        "TETHER_PROVIDERS": "{}",
        "TETHER_TEST_UPSTREAM_KEY": "x",
        "HOME": "/root",
    }
    warnings = unknown_env_warnings(environ)
    assert warnings == [
        "environment variable TETHER_PORTT names no tether setting (did you mean TETHER_PORT?)",
        "environment variable TETHER_TEST_UPSTREAM_KEY names no tether setting",
        "environment variable TETHER_WEBSOCKET__MAX_INFLIGHT names no tether setting "
        "(did you mean TETHER_WEBSOCKET__MAX_IN_FLIGHT?)",
    ]


def test_find_line_follows_array_tables() -> None:
    text = '[[routes]]\nmodel = "a"\n[[routes]]\nmodel = "b"\n[websocket]\nping_interval_s = 1\n'
    assert find_line(text, ("routes", 1, "model")) == 4
    assert find_line(text, ("websocket", "ping_interval_s")) == 6
    assert find_line(text, ("absent",)) is None


@pytest.mark.parametrize("variable", ["TETHER_API_KEYS", "TETHER_WEBSOCKET", "TETHER_ROUTES"])
def test_an_environment_variable_that_is_not_json_is_one_line(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A table or list setting from the environment must be JSON; pydantic-settings raised its own error, which
    reached the user as a traceback."""
    monkeypatch.setenv(variable, "{bad")
    with pytest.raises(ConfigError) as raised:
        load_settings(None, {variable: "{bad"})
    message = str(raised.value)
    assert message.startswith(f"environment variable {variable} is not valid JSON")
    assert "\n" not in message


@pytest.mark.parametrize("base_url", ["not a url", "ftp://127.0.0.1/v1", "127.0.0.1:8001/v1", "http://", "ws://h/v1"])
def test_a_provider_base_url_that_is_not_http_is_one_line_naming_its_line(tmp_path: Path, base_url: str) -> None:
    """It used to start, and then fail every turn (with transport = "websocket", as a 500 and a crash in the log)."""
    path = write(tmp_path, f'[providers.x]\nkind = "openai-responses"\nbase_url = "{base_url}"\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(path, {})
    message = str(raised.value)
    assert message.startswith(f"{path}:3: providers.x.base_url: ")
    assert "is not an http:// or https:// URL" in message


@pytest.mark.parametrize(
    ("kind", "key", "value", "wanted"),
    [
        ("anthropic", "transport", '"websocket"', "openai-responses"),
        ("chat-completions", "stateful", "false", "openai-responses"),
        ("anthropic", "steer_answer_grace_s", "2.0", "openai-responses"),
        ("chat-completions", "max_connection_age_s", "60.0", "openai-responses"),
        ("openai-responses", "prompt_caching", "false", "anthropic"),
        ("chat-completions", "thinking_budget_tokens", "4096", "anthropic"),
    ],
)
def test_a_key_of_another_kind_of_provider_is_one_line_naming_its_line(
    tmp_path: Path, kind: str, key: str, value: str, wanted: str
) -> None:
    """Such a key was accepted and did nothing: prompt_caching = false on openai-responses, a websocket transport on
    anthropic (which still spoke HTTP)."""
    path = write(tmp_path, f'[providers.x]\nkind = "{kind}"\nbase_url = "http://127.0.0.1:9/v1"\n{key} = {value}\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(path, {})
    message = str(raised.value)
    assert message.startswith(f"{path}:4: providers.x.{key}: ")
    assert f"applies to {wanted} providers only, and this one is {kind}: remove it" in message
    assert "\n" not in message


def test_the_keys_of_its_own_kind_are_taken(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[providers.a]\nkind = "anthropic"\nprompt_caching = false\nthinking_budget_tokens = 2048\n'
        '[providers.o]\nkind = "openai-responses"\ntransport = "websocket"\nstateful = false\n'
        "steer_answer_grace_s = 2.5\nmax_connection_age_s = 60.0\n",
    )
    settings = load_settings(path, {})
    assert settings.providers["a"].prompt_caching is False
    assert settings.providers["a"].thinking_budget_tokens == 2048
    assert settings.providers["o"].transport == "websocket"
    assert settings.providers["o"].steer_answer_grace_s == 2.5


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        ('{"" = "t"}', "an API key is empty"),
        ('{" " = "t"}', "an API key is empty"),
        ('{" sk-a" = "t"}', "starts or ends with white space"),
        ('{"sk-a" = ""}', "tenant is empty"),
    ],
)
def test_an_api_key_that_cannot_work_is_one_line(tmp_path: Path, keys: str, says: str) -> None:
    """An empty key let in any request with a blank x-api-key header; a padded one could never match."""
    path = write(tmp_path, f"api_keys = {keys}\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(path, {})
    message = str(raised.value)
    assert message.startswith(f"{path}:1: api_keys: ")
    assert says in message
    assert "sk-a" not in message  # a key is never printed
    assert "\n" not in message
