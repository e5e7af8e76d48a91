"""`callstream breakers`: every circuit breaker's last published state (issue 21)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from streams.cli.common import BootstrapOption, ConfigOption, run, settings_from
from streams.cli.results_cmd import printable
from streams.errors import CallstreamError
from streams.settings import KafkaSettings

# The breakers topic and its decoding come from streams.composition, imported by the command:
# it loads the worker's dependencies, and only the breakers module may decode a breaker state
# (streams may not import agents: `lint-imports`).

# A read that gets no record for this long while some are due stops with an error.
STALL_TIMEOUT_S = 10.0
_POLL_MS = 200
# `callstream breakers` exits with this when the breakers topic does not exist.
NO_TOPIC_EXIT = 1

Report = Mapping[str, Any]  # streams.composition.breaker_report: a snapshot and opened_at


class BreakersReadStalled(CallstreamError):
    """The breakers topic stopped answering before its end. Operator action: check the broker."""


def breakers(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    config: ConfigOption = None,
    bootstrap: BootstrapOption = None,
) -> None:
    """Show every circuit breaker's last published state.

    Give the workers' settings: the wait until half-open follows their breaker policy.
    """
    from streams.composition import breaker_report, breakers_topic
    from streams.state.topic import changelog_partitions

    settings = settings_from(config, bootstrap)
    topic = breakers_topic(settings)
    partitions = run(changelog_partitions(settings.kafka, topic))
    if partitions is None:
        typer.echo(
            f"callstream: error: no breakers topic {topic}: no worker with circuit breakers "
            f"has started for app id {settings.app_id}. Operator action: check "
            "CALLSTREAM_APP_ID and the bootstrap servers, or start a worker.",
            err=True,
        )
        raise typer.Exit(NO_TOPIC_EXIT)
    values = run(last_values(settings.kafka, topic, partitions))
    now = time.time()
    reports: dict[str, Report] = {}
    for key, raw in values.items():
        provider = key.decode(errors="replace")
        try:
            reports[provider] = breaker_report(settings, raw, now=now)
        except ValueError as exc:
            typer.echo(
                f"callstream: warning: {topic}: the state of {printable(provider)} is "
                f"unreadable, skipped: {exc}",
                err=True,
            )
    shown = rows(reports)
    if as_json:
        typer.echo(json.dumps({"breakers": shown}))
    elif not shown:
        typer.echo(f"no breaker has changed mode yet ({topic} is empty)")
    else:
        print_table(shown)


async def last_values(
    kafka: KafkaSettings, topic: str, partitions: int, *, stall_timeout_s: float = STALL_TIMEOUT_S
) -> dict[bytes, bytes]:
    """The last value of each key of ``topic``, read from its start up to the end offsets it
    had when the read began (a tombstone removes its key).

    Raises:
        BrokerUnavailable: no broker answers at the bootstrap servers.
        BreakersReadStalled: no record arrived for ``stall_timeout_s`` while some were due.
    """
    from aiokafka import TopicPartition

    from streams.kafka import reader

    tps = [TopicPartition(topic, partition) for partition in range(partitions)]
    values: dict[bytes, bytes] = {}
    async with reader(kafka) as consumer:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        due = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        progress_at = time.monotonic()
        while due:
            batches = await consumer.getmany(*due, timeout_ms=_POLL_MS)
            for tp, records in batches.items():
                for record in records:
                    if record.key is not None and record.offset < ends[tp]:
                        _keep(values, record.key, record.value)
            # Compaction leaves gaps in the offsets: compare the position, not the last offset.
            due = {tp for tp in due if await consumer.position(tp) < ends[tp]}
            if batches:
                progress_at = time.monotonic()
            elif due and time.monotonic() - progress_at > stall_timeout_s:
                raise BreakersReadStalled(
                    f"reading {topic} got no record for {stall_timeout_s:.0f} s before its end"
                )
    return values


def _keep(values: dict[bytes, bytes], key: bytes, value: bytes | None) -> None:
    if value is None:
        values.pop(key, None)
    else:
        values[key] = value


def rows(reports: Mapping[str, Report]) -> list[dict[str, Any]]:
    """One JSON-ready row per breaker, by provider name.

    Args:
        reports: ``streams.composition.breaker_report`` of each provider's last value.

    Returns:
        Rows of ``provider``, ``mode``, ``opened_at`` (UTC ISO 8601, None: never opened),
        ``seconds_until_half_open`` (open only), ``probes_in_flight`` and ``probes_reported``
        (half-open only, else 0).
    """
    shown = []
    for provider in sorted(reports):
        report = reports[provider]
        until = report["seconds_until_half_open"]
        half_open = report["mode"] == "half_open"
        shown.append(
            {
                "provider": provider,
                "mode": report["mode"],
                "opened_at": iso_utc(report["opened_at"]),
                "seconds_until_half_open": None if until is None else round(until, 3),
                "probes_in_flight": report["probes_in_flight"] if half_open else 0,
                "probes_reported": report["calls"] if half_open else 0,
            }
        )
    return shown


def iso_utc(epoch_s: float) -> str | None:
    """``epoch_s`` as UTC ISO 8601 to the millisecond (``...Z``); None for -inf (never)."""
    if not math.isfinite(epoch_s):
        return None
    moment = datetime.fromtimestamp(epoch_s, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cells(row: Mapping[str, Any]) -> tuple[str, str, str, str, str]:
    """A row as the table shows it: provider, mode, opened at, half-open in, probes."""
    until = row["seconds_until_half_open"]
    probes = "-"
    if row["mode"] == "half_open":
        probes = f"{row['probes_in_flight']} out, {row['probes_reported']} reported"
    return (
        printable(row["provider"]),
        row["mode"].replace("_", "-"),
        row["opened_at"] or "never",
        "-" if until is None else _seconds(until),
        probes,
    )


def _seconds(until: float) -> str:
    return "due" if until <= 0 else f"{until:.1f} s"


def print_table(shown: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False)
    for title in ("provider", "mode", "opened at (UTC)", "half-open in", "probes"):
        table.add_column(title, justify="right" if title == "half-open in" else "left")
    for row in shown:
        table.add_row(*(Text(cell) for cell in cells(row)))  # Text: no markup from a key
    Console().print(table)
