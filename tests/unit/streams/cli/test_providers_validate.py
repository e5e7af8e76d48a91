"""`callstream providers validate` warns of what a worker warns of at start-up (finding 18)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.__main__ import main


def declared(tmp_path: Path, base_url: str) -> Path:
    path = tmp_path / "beta.toml"
    path.write_text(f'name = "beta"\nbase_url = "{base_url}"\n[operations.get]\npath = "/a"\n')
    return path


@pytest.mark.parametrize(
    ("base_url", "warnings"),
    [
        pytest.param("https://api.beta.test", [], id="public https"),
        pytest.param(
            "http://169.254.169.254",
            [
                "warning: providers pointing at private addresses (calls allowed): "
                "beta (169.254.169.254: link-local)",
                "warning: providers over plain http:// (no TLS): beta",
            ],
            id="metadata address over http",
        ),
        pytest.param(
            "https://127.0.0.1:8443",
            [
                "warning: providers pointing at private addresses (calls allowed): "
                "beta (127.0.0.1: loopback)"
            ],
            id="loopback",
        ),
    ],
)
def test_validate_prints_the_workers_warnings_on_stderr_and_still_succeeds(
    tmp_path: Path, base_url: str, warnings: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["providers", "validate", str(declared(tmp_path, base_url))]) == 0
    out, err = capsys.readouterr()
    assert out == "ok: beta (1 operations)\n"
    assert err.splitlines() == warnings


def test_validate_says_a_worker_would_refuse_private_addresses_when_configured_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLSTREAM_DENY_PRIVATE_NETWORKS", "true")
    assert main(["providers", "validate", str(declared(tmp_path, "https://10.0.0.5"))]) == 0
    assert capsys.readouterr().err == (
        "warning: providers pointing at private addresses (refused: deny_private_networks): "
        "beta (10.0.0.5: private)\n"
    )
