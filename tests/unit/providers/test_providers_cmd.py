"""`callstream providers`: one-line errors, exit codes, no secrets shown, a real check call."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.cli.providers_cmd import providers_app

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(providers_app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_validate_ok() -> None:
    code, out, err = run("validate", "providers/catalog/github.toml")
    assert (code, out, err) == (0, "ok: github (8 operations)\n", "")


def test_validate_error_is_one_line_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "github.toml"
    path.write_text('name = "github"\nbase_url = "https://x.test"\n'
                    '[operations.get_repo]\nmethod = "FETCH"\npath = "/"\n')  # fmt: skip
    code, out, err = run("validate", str(path))
    assert code == 2
    assert out == ""
    assert err.startswith(
        "callstream: error: github.toml: operations.get_repo.method: Input should be 'GET'"
    )
    assert err.count("\n") == 1


def test_list_and_show(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLSTREAM_PROVIDERS__GITHUB__SECRET", "ghp_LITERALSECRET")
    code, out, _ = run("list")
    assert code == 0
    assert {line.split()[0] for line in out.splitlines()} >= {"github", "slack", "openai"}
    code, out, _ = run("show", "github")
    shown = json.loads(out)
    assert shown["auth"] == {"type": "bearer", "token": "<literal>"}
    assert "LITERALSECRET" not in out
    code, out, _ = run("show", "openweathermap")
    assert json.loads(out)["auth"]["key"] == "env:OPENWEATHERMAP_API_KEY"


def test_show_unknown_name() -> None:
    code, _, err = run("show", "gihtub")
    assert code == 2
    assert err.startswith("callstream: error: unknown provider 'gihtub'; known: ")


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.headers.get("Authorization") == "Bearer good"
        self.send_response(200 if ok else 401)
        self.send_header("X-RateLimit-Limit", "5000")
        self.send_header("X-RateLimit-Remaining", "4999")
        self.send_header("X-RateLimit-Reset", "9999999999")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}" if ok else b'{"message": "Bad credentials"}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def loopback() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("token", "code", "expected"),
    [("good", 0, "github.get_rate_limit: HTTP 200, auth accepted, "),
     ("bad", 1, "github.get_rate_limit: HTTP 401, auth REJECTED, ")],
)  # fmt: skip
def test_check(
    monkeypatch: pytest.MonkeyPatch, loopback: str, token: str, code: int, expected: str
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", token)
    exit_code, out, err = run("check", "github", "--base-url", loopback)
    assert exit_code == code
    line = out if code == 0 else err
    assert line.startswith(expected)
    if code == 0:
        assert "rate limit core 4999/5000" in line


def test_check_without_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    code, _, err = run("check", "github")
    assert code == 2
    assert err == (
        "callstream: error: github: secret env:GITHUB_TOKEN: "
        "environment variable GITHUB_TOKEN is not set\n"
    )


def test_check_bad_param(monkeypatch: pytest.MonkeyPatch, loopback: str) -> None:
    code, _, err = run("check", "open_meteo", "--param", "latitude", "--base-url", loopback)
    assert (code, err) == (2, "callstream: error: --param expects key=value, got 'latitude'\n")


def test_check_unknown_operation(loopback: str) -> None:
    code, _, err = run("check", "open_meteo", "--operation", "nope", "--base-url", loopback)
    assert (code, err) == (
        2,
        "callstream: error: open_meteo has no operation 'nope'; operations: get_forecast\n",
    )


def test_list_with_an_empty_configuration_lists_no_test_provider(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    empty = tmp_path / "callstream.toml"
    empty.write_text("")
    monkeypatch.setenv("CALLSTREAM_CONFIG", str(empty))
    code, out, _ = run("list")
    assert code == 0
    listed = {line.split()[0] for line in out.splitlines()}
    assert listed == {"github", "stripe", "openai", "open_meteo", "slack", "openweathermap"}
    code, out, _ = run("list", "--dev")
    assert code == 0
    assert {line.split()[0] for line in out.splitlines()} == {*listed, "fake"}
