"""Jar resolution: Maven once, then only the marker; clear one-line errors otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.errors import JarResolutionError, ToolMissing
from infra.kafka import jars


def _tool(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    # The fakes still need coreutils, which the PATH under test leaves out.
    path.write_text("#!/bin/sh\nPATH=/usr/bin:/bin\n" + script)
    path.chmod(0o755)


COPYING_MVN = """
for arg in "$@"; do
  case "$arg" in -DoutputDirectory=*) out="${arg#-DoutputDirectory=}";; esac
done
mkdir -p "$out" && touch "$out/kafka_2.13-4.4.0.jar"
echo called >> "$(dirname "$0")/calls"
"""


@pytest.fixture
def only_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An otherwise empty PATH holding only the fake tools a test writes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(jars.CACHE_ENV, str(tmp_path))
    assert jars.cache_dir() == tmp_path / "kafka-4.4.0"


def test_first_call_runs_maven_and_the_second_needs_no_maven(
    tmp_path: Path, only_path: Path
) -> None:
    _tool(only_path, "mvn", COPYING_MVN)
    _tool(only_path, "java", "exit 0\n")
    cache = tmp_path / "cache"

    lib = jars.resolve_jars(cache)
    assert (lib / "kafka_2.13-4.4.0.jar").is_file()

    (only_path / "mvn").unlink()
    assert jars.resolve_jars(cache) == lib
    assert (only_path / "calls").read_text().count("called") == 1


def test_a_changed_pom_resolves_again(tmp_path: Path, only_path: Path) -> None:
    _tool(only_path, "mvn", COPYING_MVN)
    _tool(only_path, "java", "exit 0\n")
    cache = tmp_path / "cache"
    jars.resolve_jars(cache)
    (cache / "lib.sha256").write_text("digest of an older pom\n")

    jars.resolve_jars(cache)
    assert (only_path / "calls").read_text().count("called") == 2


def test_missing_maven_is_one_line_with_an_operator_action(tmp_path: Path, only_path: Path) -> None:
    with pytest.raises(ToolMissing) as caught:
        jars.resolve_jars(tmp_path / "cache")
    message = str(caught.value)
    assert "`mvn`" in message
    assert "Operator action: install Maven" in message
    assert "\n" not in message


def test_missing_java_is_reported_before_maven_runs(tmp_path: Path, only_path: Path) -> None:
    _tool(only_path, "mvn", COPYING_MVN)
    with pytest.raises(ToolMissing, match="`java`"):
        jars.resolve_jars(tmp_path / "cache")
    assert not (only_path / "calls").exists()


def test_maven_failure_quotes_its_first_error_on_one_line(tmp_path: Path, only_path: Path) -> None:
    _tool(
        only_path,
        "mvn",
        'echo "[INFO] Scanning"\necho "[ERROR] Could not transfer artifact"\n'
        'echo "[ERROR] more detail"\nexit 1\n',
    )
    _tool(only_path, "java", "exit 0\n")
    cache = tmp_path / "cache"

    with pytest.raises(JarResolutionError) as caught:
        jars.resolve_jars(cache)
    message = str(caught.value)
    assert "[ERROR] Could not transfer artifact" in message
    assert "Operator action:" in message
    assert "\n" not in message
    assert not (cache / "lib").exists()
    assert not (cache / "lib.sha256").exists()
