"""`callstream dlq`: count the dead letters, and replay them once their cause is fixed."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from streams.cli.common import BootstrapOption, ConfigOption, run, settings_from

if TYPE_CHECKING:
    from streams.composition_dlq import DeadLetterStats, ReadProgress, ReplaySummary

# rich and the replay stage are imported by the commands that use them: this module is
# imported by every `callstream` invocation, and they would add ~80 ms to each (measured).

dlq_app = typer.Typer(help="Inspect and replay dead letters.", no_args_is_help=True)

# Without a terminal (CI, logs), one progress line per this many records read.
PROGRESS_EVERY = 10_000
# Epoch milliseconds below this are before 1973: almost surely epoch seconds given by mistake.
_MIN_EPOCH_MS = 10**11
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def parse_since(text: str) -> int:
    """Epoch milliseconds from ISO 8601 (UTC unless it has an offset) or epoch milliseconds.

    Raises:
        typer.BadParameter: neither form, or a number that looks like epoch seconds (which
            would silently select every dead letter since January 1970).
    """
    text = text.strip()
    if text.isdigit():
        value = int(text)
        if value < _MIN_EPOCH_MS:
            raise typer.BadParameter(
                f"{text} looks like epoch seconds; give epoch milliseconds or an ISO 8601 time"
            )
        return value
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither an ISO 8601 time (like 2026-05-01T12:00:00Z) "
            "nor epoch milliseconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


@dlq_app.command("replay")
def replay(
    reason: Annotated[
        list[str] | None,
        typer.Option("--reason", "-r", help="Only letters with this reason; repeatable."),
    ] = None,
    stage: Annotated[
        list[str] | None,
        typer.Option(
            "--stage", help="Only letters from this stage (decode, admission, caller, retry)."
        ),
    ] = None,
    request_id: Annotated[
        list[str] | None, typer.Option("--request-id", help="Only this request; repeatable.")
    ] = None,
    since: Annotated[
        int | None,
        typer.Option(
            parser=parse_since,
            metavar="TIME",
            help="Only letters that last failed at or after TIME: ISO 8601 (UTC unless it "
            "has an offset) or epoch milliseconds.",
        ),
    ] = None,
    include_undecodable: Annotated[
        bool,
        typer.Option(
            "--include-undecodable",
            help="Also republish the raw bytes of requests that could not be decoded.",
        ),
    ] = False,
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            "-g",
            help="Consumer group remembering what was replayed (default: <app_id>.dlq-replay).",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Replay at most N letters.")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Count what would be replayed; publish and commit nothing."),
    ] = False,
    commit_empty: Annotated[
        bool,
        typer.Option(
            "--commit-empty",
            help="Move the group past what was read even when nothing matched (by default a "
            "run that replays nothing moves nothing).",
        ),
    ] = False,
    as_json: JsonFlag = False,
    config: ConfigOption = None,
    bootstrap: BootstrapOption = None,
) -> None:
    """Republish matching dead letters as new attempts; each is replayed once per group."""
    from streams import composition_dlq

    composition_dlq.check_filter(reason or (), stage or ())
    settings = settings_from(config, bootstrap)
    group_id = group or f"{settings.app_id}.dlq-replay"
    with progress_reporter("dlq replay") as show:
        summary = run(
            composition_dlq.replay(
                settings,
                reasons=reason or (),
                stages=stage or (),
                request_ids=request_id or (),
                since_ms=since,
                include_undecodable=include_undecodable,
                group_id=group_id,
                dry_run=dry_run,
                limit=limit,
                progress=show,
                commit_empty=commit_empty,
            )
        )
    if as_json:
        typer.echo(json.dumps({"topic": settings.topics.requests, **dataclasses.asdict(summary)}))
    else:
        topics = settings.topics
        for line in summary_lines(summary, topics.requests, limit, topics.dead_letters):
            typer.echo(line)


@dlq_app.command("stats")
def stats(
    as_json: JsonFlag = False,
    config: ConfigOption = None,
    bootstrap: BootstrapOption = None,
) -> None:
    """Count the dead letters by reason and stage (reads the whole topic, moves nothing)."""
    from streams.composition_dlq import dead_letter_stats

    settings = settings_from(config, bootstrap)
    with progress_reporter("dlq stats") as show:
        counts = run(dead_letter_stats(settings, progress=show))
    topic = settings.topics.dead_letters
    if as_json:
        typer.echo(json.dumps({"topic": topic, **dataclasses.asdict(counts)}))
    else:
        print_stats(counts, topic)


def summary_lines(
    summary: ReplaySummary,
    topic: str,
    limit: int | None,
    dead_letters: str = "the dead-letter topic",
) -> list[str]:
    """The replay summary as plain lines, one count each, reasons most frequent first."""
    verb = "would replay" if summary.dry_run else "replayed"
    lines = [
        f"{verb} {summary.replayed} of {summary.read} records read, to {topic} "
        f"(group {summary.group_id})",
        f"  skipped     {summary.skipped:>8}  not matching the filter",
        f"  duplicates  {summary.duplicates:>8}  repeats of a letter replayed in this run",
        f"  conflicting {summary.conflicting:>8}  a replayed letter's request id, other request",
        f"  unreadable  {summary.unreadable:>8}  not dead-letter events (or with no next attempt)",
    ]
    for name, count in sorted(summary.by_reason.items(), key=lambda item: (-item[1], item[0])):
        lines.append(f"  reason {name}: {count}")
    if summary.conflicting:
        lines.append(conflict_warning(summary.conflicting, dead_letters))
    if not summary.complete:
        lines.append(f"stopped at --limit {limit}: run again with this group for the rest")
    if summary.dry_run:
        lines.append("dry run: nothing was published and the group's position did not move")
    elif summary.replayed == 0 and summary.read and not summary.committed:
        lines.append(
            "nothing matched: the group's position did not move "
            "(--commit-empty moves it past what was read)"
        )
    return lines


def conflict_warning(conflicting: int, dead_letters: str) -> str:
    """What conflicting letters mean, and what the operator should do about them."""
    return (
        f"warning: {conflicting} conflicting letters: the request id of a letter read before, "
        "but another request (the first one read is the one replayed; the log names both "
        f"letters' positions). Operator action: check who can write {dead_letters}; only "
        "workers should."
    )


def print_stats(counts: DeadLetterStats, topic: str) -> None:
    from rich.console import Console
    from rich.table import Table

    typer.echo(
        f"{counts.letters} dead letters in {topic} for {counts.requests} requests "
        f"({counts.failed_again} replayed and failed again; {counts.retriable} retriable, "
        f"{counts.undecodable} undecodable); {counts.duplicates} duplicates (the same "
        f"attempt written twice), {counts.conflicting} conflicting (another request under a "
        f"letter's request id), {counts.unreadable} unreadable records"
    )
    if counts.conflicting:
        typer.echo(conflict_warning(counts.conflicting, topic))
    console = Console()
    for title, by in (("reason", counts.by_reason), ("stage", counts.by_stage)):
        if not by:
            continue
        table = Table(title=None, box=None, pad_edge=False)
        table.add_column(title)
        table.add_column("letters", justify="right")
        for name, count in sorted(by.items(), key=lambda item: (-item[1], item[0])):
            table.add_row(name, str(count))
        console.print(table)


@contextlib.contextmanager
def progress_reporter(label: str) -> Iterator[Callable[[ReadProgress], None]]:
    """A progress callback on stderr: a live bar on a terminal, else a line every N records.

    Stderr keeps stdout to the summary alone (one JSON object with --json).
    """
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = (
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(label, total=None, detail="")

            def update(progress: ReadProgress) -> None:
                bar.update(
                    task, completed=progress.read, total=progress.total, detail=_detail(progress)
                )

            yield update
        return
    next_line = PROGRESS_EVERY

    def print_line(progress: ReadProgress) -> None:
        nonlocal next_line
        if progress.read >= next_line:
            typer.echo(
                f"{label}: read {progress.read} of {progress.total}{_detail(progress)}", err=True
            )
            next_line = (progress.read // PROGRESS_EVERY + 1) * PROGRESS_EVERY

    yield print_line


def _detail(progress: ReadProgress) -> str:
    from streams.composition_dlq import ReplayProgress

    if isinstance(progress, ReplayProgress):
        return f", replayed {progress.replayed}"
    return ""
