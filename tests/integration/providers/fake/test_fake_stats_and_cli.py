"""Stats over HTTP from a child process, and the command line's own contract."""

from __future__ import annotations

import subprocess
import sys

import pytest

from providers.auth.request import PreparedRequest
from providers.fake.process import FakeProviderProcess, FakeProviderStartError
from tests.integration.providers.fake.conftest import send

pytestmark = pytest.mark.integration


async def test_stats_count_calls_and_duplicates(fake_process_factory, session):
    fake = fake_process_factory(latency_ms=1)
    for index in range(10):
        request = PreparedRequest(
            "GET", f"{fake.url}/v1/items/{index}", {"X-Request-Id": f"r-{index}"}
        )
        assert (await send(session, request)).status == 200
    for key in ("r-3", "r-3", "r-7"):  # redeliveries: two keys called again
        await send(session, PreparedRequest("GET", f"{fake.url}/v1/items/x", {"X-Request-Id": key}))
    await send(
        session,
        PreparedRequest(
            "POST", f"{fake.url}/v1/echo", {"Idempotency-Key": "r-1", "X-Request-Id": "other"}, b"x"
        ),
    )
    stats = await fake.astats(with_keys=True)
    assert stats["calls_total"] == 14
    assert stats["duplicates"] == 3
    assert stats["duplicate_calls"] == 4
    assert stats["duplicate_keys"] == {"r-1": 2, "r-3": 3, "r-7": 2}
    assert stats["unique_keys"] == 10
    assert stats["status_counts"] == {"200": 14}
    fake.reset()
    assert (await fake.astats())["calls_total"] == 0


async def test_runtime_config_change(fake_process_factory, session):
    fake = fake_process_factory()
    fake.update(error_mix={"status_503": 1.0})
    assert (await send(session, PreparedRequest("GET", f"{fake.url}/v1/items/1", {}))).status == 503
    fake.update(error_mix={})
    assert (await send(session, PreparedRequest("GET", f"{fake.url}/v1/items/1", {}))).status == 200


def test_cli_prints_url_and_stops_on_sigterm():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "providers.fake",
            "--latency-ms",
            "1",
            "--flavor",
            "slack",
            "--bearer",
            "xoxb-1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = process.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:")
    finally:
        process.terminate()
        process.wait(10)
    assert process.returncode == 0
    assert process.stderr.read() == ""  # type: ignore[union-attr]
    process.stdout.close()  # type: ignore[union-attr]
    process.stderr.close()  # type: ignore[union-attr]


def test_cli_rejects_bad_flags_with_a_reason():
    result = subprocess.run(
        [sys.executable, "-m", "providers.fake", "--error-mix", "500=0.9,503=0.9"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "more than 1" in result.stderr


def test_process_start_failure_reports_stderr():
    fake = FakeProviderProcess(extra_args=["--flavor", "nope"])
    with pytest.raises(FakeProviderStartError, match="invalid choice"):
        fake.start()
