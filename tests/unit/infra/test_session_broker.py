"""Which broker the integration session gets, decided without starting one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from infra import session_broker
from infra.broker import start_broker
from infra.errors import BrokerStartError


def test_external_bootstrap_wins_and_nothing_is_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(session_broker.BOOTSTRAP_ENV, "127.0.0.1:19092")

    def not_called() -> tuple[bool, str]:
        raise AssertionError("Docker must not be probed for an external cluster")

    monkeypatch.setattr(session_broker, "docker_engine_available", not_called)
    with session_broker.open_test_broker() as (bootstrap, description):
        assert bootstrap == "127.0.0.1:19092"
        assert session_broker.BOOTSTRAP_ENV in description


class _FakeCluster:
    bootstrap_servers = "127.0.0.1:1"
    data_dir = "/tmp/fake"

    def __init__(self, nodes: int, heap: str) -> None:
        assert (nodes, heap) == (1, "1g")

    def __enter__(self) -> _FakeCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


def test_without_docker_the_infra_cluster_is_used_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(session_broker.BOOTSTRAP_ENV, raising=False)
    monkeypatch.setattr(
        session_broker, "docker_engine_available", lambda: (False, "no engine here")
    )
    monkeypatch.setattr(session_broker, "KafkaCluster", _FakeCluster)
    with session_broker.open_test_broker() as (bootstrap, description):
        assert bootstrap == "127.0.0.1:1"
        assert "from infra" in description
        assert "no engine here" in description


def test_docker_without_testcontainers_falls_back_to_infra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(session_broker.BOOTSTRAP_ENV, raising=False)
    monkeypatch.setattr(session_broker, "docker_engine_available", lambda: (True, "engine 27"))
    monkeypatch.setattr(session_broker, "_testcontainers_installed", lambda: False)
    monkeypatch.setattr(session_broker, "KafkaCluster", _FakeCluster)
    with session_broker.open_test_broker() as (_, description):
        assert "testcontainers is not installed" in description


def test_docker_with_testcontainers_uses_the_container(monkeypatch: pytest.MonkeyPatch) -> None:
    @contextlib.contextmanager
    def container() -> Iterator[tuple[str, str]]:
        yield "localhost:32768", "container"

    monkeypatch.delenv(session_broker.BOOTSTRAP_ENV, raising=False)
    monkeypatch.setattr(session_broker, "docker_engine_available", lambda: (True, "engine 27"))
    monkeypatch.setattr(session_broker, "_testcontainers_installed", lambda: True)
    monkeypatch.setattr(session_broker, "_container_broker", container)
    with session_broker.open_test_broker() as broker:
        assert broker == ("localhost:32768", "container")


def test_docker_probes_always_give_a_reason() -> None:
    # Where no engine runs, this also proves the SDK's leaked socket does not fail the session.
    for available, reason in (
        session_broker.docker_engine_available(),
        session_broker._ping_with_sdk(),
    ):
        assert isinstance(available, bool)
        assert reason


def test_the_embedded_broker_has_one_node_and_no_data_dir() -> None:
    with pytest.raises(ValueError, match="single in-memory node"):
        start_broker("embedded", nodes=3)


def test_start_errors_keep_the_summary_on_the_first_line() -> None:
    error = BrokerStartError("node 1 exited.", log_tail="--- tail ---\nERROR boom")
    first, *rest = str(error).splitlines()
    assert first.startswith("node 1 exited. Operator action: ")
    assert rest == ["--- tail ---", "ERROR boom"]
