"""Issue 19: each user mistake is one line on stderr, exit code 2, and nothing sent or moved."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib import import_module
from typing import Any

import pytest

import streams.sdk
from streams.__main__ import COMMANDS, main


class RecordingClient:
    """Stands in for CallstreamClient: records what would have been published."""

    published: list[Any] = []

    def __init__(self, settings: Any, *args: Any, **kwargs: Any) -> None:
        pass

    async def __aenter__(self) -> RecordingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def publish_many(self, requests: list[Any]) -> list[str]:
        RecordingClient.published.extend(requests)
        return [request.request_id for request in requests]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    RecordingClient.published = []
    monkeypatch.setattr(streams.sdk, "CallstreamClient", RecordingClient)
    return RecordingClient.published


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("callstream: error: "), err
    assert err.count("\n") == 1, err
    return err


PUBLISH = ["publish", "--provider"]


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([*PUBLISH, "nope", "--operation", "x"], {}, "unknown provider 'nope'; known: github"),
        ([*PUBLISH, "open_meteo", "--operation", "nope"], {}, "no operation 'nope'"),
        (
            [*PUBLISH, "open_meteo", "--operation", "get_forecast"],
            {},
            "missing query parameter 'latitude'",
        ),
        (
            [
                *PUBLISH,
                "open_meteo",
                "--operation",
                "get_forecast",
                "-p",
                "latitude=north",
                "-p",
                "longitude=1",
            ],
            {},
            "'latitude' does not match its pattern",
        ),
        (
            [
                *PUBLISH,
                "open_meteo",
                "--operation",
                "get_forecast",
                "-p",
                "latitude=1",
                "-p",
                "longitude=1",
            ],
            {"CALLSTREAM_PROVIDERS__GITHUB__RATE_PER_S": "1"},
            "provider 'open_meteo' is not configured (active in these settings: github)",
        ),
        ([*PUBLISH, "fake", "--operation", "get_item", "-p", "item_id=1"], {}, "unknown provider"),
    ],
)
def test_publish_checks_requests_against_the_catalog_before_sending(
    argv: list[str],
    env: dict[str, str],
    expected: str,
    sent: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2
    assert expected in one_error_line(capsys)
    assert sent == []


def test_publish_checks_a_provider_whose_secret_does_not_resolve(
    sent: list[Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    argv = [*PUBLISH, "github", "--operation", "get_repo", "-p", "owner=a", "-p", "repo=b"]
    assert main(argv) == 0, capsys.readouterr().err
    assert [r.operation for r in sent] == ["get_repo"]


def test_publish_accepts_the_fake_provider_when_settings_name_it(
    sent: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLSTREAM_PROVIDERS__FAKE__SHARDS", "2")
    assert main([*PUBLISH, "fake", "--operation", "get_item", "-p", "item_id=1"]) == 0
    assert len(sent) == 1


def test_no_validate_skips_the_check(sent: list[Any]) -> None:
    assert main([*PUBLISH, "nope", "--operation", "x", "--no-validate"]) == 0
    assert [r.provider for r in sent] == ["nope"]


def test_a_bad_file_line_is_named_and_nothing_is_sent(
    tmp_path: Any, sent: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    lines = tmp_path / "requests.jsonl"
    lines.write_text(
        '{"provider": "open_meteo", "operation": "get_forecast", '
        '"params": {"latitude": "1", "longitude": "2"}}\n'
        '{"provider": "open_meteo", "operation": "nope"}\n'
    )
    assert main(["publish", "--file", str(lines)]) == 2
    assert "requests.jsonl:2: unknown_operation" in one_error_line(capsys)
    assert sent == []


# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CALLSTREAM_CONFIG": "/nonexistent/callstream.toml"}, "config file not found"),
        (
            {"CALLSTREAM_PROVIDERS": "{"},
            'invalid setting: error parsing value for field "providers"',
        ),
        ({"CALLSTREAM_KAFKA__SESSION_TIMEOUT_S": "hunter2"}, "kafka.session_timeout_s"),
    ],
)
def test_bad_settings_are_one_line_and_never_echo_the_value(
    env: dict[str, str],
    expected: str,
    sent: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["publish", "--provider", "p", "--operation", "o", "--no-validate"]) == 2
    err = one_error_line(capsys)
    assert expected in err
    assert "hunter2" not in err
    assert sent == []


# --- dlq replay ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--reason", "not_fuond"], "unknown --reason 'not_fuond' (known: auth_failed"),
        (["--reason", "not_found", "--stage", "call"], "unknown --stage 'call' (known: admission"),
    ],
)
def test_replay_refuses_values_no_letter_can_have(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The broker address is unreachable: the refusal comes before any connection.
    assert main(["dlq", "replay", *argv, "--bootstrap", "127.0.0.1:1"]) == 2
    err = one_error_line(capsys)
    assert expected in err
    assert "cannot reach Kafka" not in err


# --- broker and worker ports ---------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("kind", ["embedded", "kafka"])
def test_broker_start_on_a_port_in_use_says_so(
    kind: str, taken_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["broker", "start", "--kind", kind, "--port", str(taken_port)]) == 2
    err = one_error_line(capsys)
    assert f"port {taken_port} on 127.0.0.1 is already in use" in err
    assert "ready" not in capsys.readouterr().out


def test_a_second_worker_on_the_web_port_names_the_setting(
    taken_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CALLSTREAM_WEB__PORT", str(taken_port))
    monkeypatch.setenv("CALLSTREAM_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    assert main(["worker"]) == 2
    err = one_error_line(capsys)
    assert f"web.port: binding 127.0.0.1:{taken_port} is already in use" in err
    assert "CALLSTREAM_WEB__PORT" in err


# --- help ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_help_line_of_each_command_is_its_own(name: str) -> None:
    entry = COMMANDS[name]
    target = getattr(import_module(entry.module), entry.attribute)
    own = target.info.help if entry.group else (target.__doc__ or "").strip().splitlines()[0]
    assert own == entry.help


def test_help_imports_no_command() -> None:
    code = (
        "import sys\nfrom streams.__main__ import main\nmain(['--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('streams.cli', 'aiokafka', "
        "'providers', 'pydantic_settings'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"
