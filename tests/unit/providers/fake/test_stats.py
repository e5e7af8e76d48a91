"""FakeStats: calls per key, duplicates, the busiest one-second window, the JSON snapshot."""

from __future__ import annotations

from providers.fake.stats import FakeStats


def test_calls_and_duplicates():
    stats = FakeStats()
    assert [stats.call("a"), stats.call("b"), stats.call("a"), stats.call(None)] == [1, 1, 2, 0]
    assert (stats.calls_total, stats.unkeyed_calls, stats.calls_for("a")) == (4, 1, 2)
    assert (stats.duplicates, stats.duplicate_calls, stats.duplicate_keys) == (1, 1, {"a": 2})


def test_max_rate_over_any_one_second_window():
    stats = FakeStats()
    for t in (0.0, 0.1, 0.2, 1.05, 1.1, 1.15, 1.19, 3.0):
        stats.arrival(t)
    # The window (0.19, 1.19] holds 0.2 and the four arrivals after 1.0.
    assert stats.max_rate_1s == 5
    assert stats.arrivals == 8


def test_snapshot_is_json_ready():
    stats = FakeStats()
    stats.call("k")
    stats.call("k")
    stats.status(200)
    stats.status(200)
    snapshot = stats.snapshot(with_keys=True)
    assert snapshot["calls_total"] == 2
    assert snapshot["duplicates"] == 1
    assert snapshot["status_counts"] == {"200": 2}
    assert snapshot["calls_by_key"] == {"k": 2}
    assert "calls_by_key" not in stats.snapshot()


def test_not_modified_and_body_bytes():
    stats = FakeStats()
    stats.status(200, 120)
    stats.status(304)
    stats.status(404, 40)
    assert (stats.not_modified, stats.body_bytes) == (1, 160)
    snapshot = stats.snapshot()
    assert (snapshot["not_modified"], snapshot["body_bytes"]) == (1, 160)
    assert snapshot["status_counts"] == {"200": 1, "304": 1, "404": 1}
