"""The command line as a user runs it: publish, tail, and the demo on the embedded broker."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def callstream(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        env={**os.environ, **(env or {})},
        check=False,
    )


def topic_env(settings) -> dict[str, str]:
    return {
        "CALLSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "CALLSTREAM_TOPICS__REQUESTS": settings.topics.requests,
        "CALLSTREAM_TOPICS__RESULTS": settings.topics.results,
        "CALLSTREAM_TOPICS__DEAD_LETTERS": settings.topics.dead_letters,
        # Publishers check requests against the providers these settings activate (issue 19).
        "CALLSTREAM_PROVIDERS__FAKE__SHARDS": str(settings.providers["fake"].shards),
    }


def test_publish_then_tail_results(settings, fake_provider_factory, worker_factory, tmp_path):
    fake = fake_provider_factory("--latency-ms", "1")
    worker_factory(fake.url)
    env = topic_env(settings)

    one = callstream(
        "publish",
        "--provider",
        "fake",
        "--operation",
        "get_item",
        "--param",
        "item_id=abc",
        env=env,
    )
    assert one.returncode == 0, one.stderr
    lines = tmp_path / "requests.jsonl"
    lines.write_text(
        "\n".join(
            json.dumps(
                {"provider": "fake", "operation": "get_item", "params": {"item_id": f"n{i}"}}
            )
            for i in range(5)
        )
    )
    many = callstream("publish", "--file", str(lines), env=env)
    assert many.returncode == 0, many.stderr
    published = one.stdout.split() + many.stdout.split()
    assert len(published) == 6

    tail = callstream("results", "tail", "--json", "--count", "6", "--follow", env=env)
    assert tail.returncode == 0, tail.stderr
    results = [json.loads(line) for line in tail.stdout.splitlines()]
    assert sorted(r["request_id"] for r in results) == sorted(published)
    assert {r["status"] for r in results} == {"ok"}


def test_publish_rejects_a_bad_file_line_before_sending_anything(settings, tmp_path):
    lines = tmp_path / "bad.jsonl"
    lines.write_text('{"provider": "fake", "operation": "get_item"}\n{"provider": "fake"}\n')
    result = callstream("publish", "--file", str(lines), env=topic_env(settings))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, "one line"
    assert "bad.jsonl:2" in result.stderr and "operation" in result.stderr


@pytest.mark.embedded
@pytest.mark.slow
def test_dev_demo_runs_on_the_embedded_broker():
    result = callstream("dev", "--requests", "200", "--latency-ms", "5", timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "203 outcomes for 203 events" in result.stdout
    assert "dead letter (undecodable)" in result.stdout
    assert "expired (deadline_passed)" in result.stdout
    assert "ok after retries" in result.stdout  # transient 500s, retried from the timer table
    assert "cached" in result.stdout  # popular items, answered from the response cache


@pytest.mark.slow
def test_bench_throughput_prints_figures(kafka_bootstrap):
    result = callstream(
        "bench",
        "throughput",
        "--requests",
        "500",
        "--rounds",
        "1",
        "--latency-ms",
        "50",
        "--workers",
        "2",
        "--in-flight",
        "40",
        "--bootstrap",
        kafka_bootstrap,
        "--json",
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])["throughput"][0]
    assert figures["latency_ms"] == 50
    assert figures["direct_req_s"] > 0 and figures["pipeline_req_s"] > 0
    assert figures["ratio"] == pytest.approx(
        figures["pipeline_req_s"] / figures["direct_req_s"], rel=0.01
    )
    assert figures["workers"] == 2
    assert figures["concurrency"] == 40
    for variant in ("direct", "pipeline"):
        assert 0.0 < figures[f"{variant}_machine_busy"] <= 1.0
    cpu = figures["cpu_ms_per_request"]
    assert cpu["pipeline"]["worker"] > 0 and cpu["direct"]["worker"] is None
    for variant in ("direct", "pipeline"):
        assert cpu[variant]["provider"] > 0 and cpu[variant]["client"] > 0
        # A broker given with --bootstrap is not ours: its CPU is not measured.
        assert cpu[variant]["broker"] is None
        parts = cpu[variant]["provider"] + cpu[variant]["client"]
        assert cpu[variant]["total"] >= parts - 0.002  # each figure is rounded to 3 decimals


def test_publish_before_any_worker_creates_the_topics_with_their_partitions(settings):
    """Without this, the broker would auto-create the requests topic on the first publish with
    its own default partition count, and every worker after would be stuck with it."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    env = {**topic_env(settings), "CALLSTREAM_TOPICS__PARTITIONS": "5"}
    published = callstream(
        "publish", "--provider", "fake", "--operation", "get_item", "-p", "item_id=1", env=env
    )
    assert published.returncode == 0, published.stderr

    async def partitions() -> dict[str, int]:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
        await producer.start()
        try:
            topics = settings.topics
            names = (topics.requests, topics.results, topics.dead_letters)
            return {name: len(await producer.partitions_for(name)) for name in names}
        finally:
            await producer.stop()

    counts = asyncio.run(partitions())
    assert counts == dict.fromkeys(counts, 5), counts
