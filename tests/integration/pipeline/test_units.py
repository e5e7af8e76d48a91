"""Units limits (issue 22): a token-limited chat provider, its arrivals and token counts replayed
from the Azure LLM inference trace (2023, conversations), is used to its tokens-per-minute limit
while backlogged, and refuses no call for tokens once the worker has warmed up.

The provider is the fake's OpenAI flavor behind a provider file ``llm``: requests per minute and
tokens per minute, both declared as the fake enforces them (the real limits). The fake counts a
call's tokens exactly (prompt from the message's length, completion = ``max_tokens``) and
charges them on arrival; a completion takes time in proportion to its tokens. Its token bucket
is drained just before the load, as if another client (or the key's previous owner) had just
spent it: the worker starts its own bucket empty for that reason, and with no slack at the
provider, every token the worker sends beyond the limit is refused.

In the second test another client of the same API key spends most of the fake's tokens
directly over HTTP while the worker's own bucket, idle, has filled: the worker hears of it only
through the fake's ``x-ratelimit-remaining-tokens`` / ``-reset-tokens`` on its next answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas.models import RequestEvent, ResultEvent
from streams.cli.dev.llm_trace import AZURE_CONV_TRACE, TraceRow, read_llm_trace
from streams.cli.dev.processes import Child
from streams.sdk import CallstreamClient
from streams.settings import ProviderSettings, Settings
from tests.integration.conftest import API_KEY
from tests.integration.limits.test_no_stall import sample
from tests.integration.pipeline.outcomes import collect
from tests.integration.pipeline.test_breaker import fake_stats, metrics_of

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not AZURE_CONV_TRACE.exists(), reason="needs ../shared/traces"),
]

LLM = "llm"
OPERATION = "create_chat_completion"
TOKENS_PER_MIN = 120_000  # 2,000 tokens a second, declared and enforced
TOKENS_PER_S = TOKENS_PER_MIN / 60
REQUESTS_PER_S = 10  # declared; the fake allows 600 a minute (OpenAI's RPM bucket)
# The trace's first ROWS rows, token counts divided by SCALE (mean ~580 tokens a call, ~3.4
# calls a second at the limit: the requests limit never binds) and arrivals compressed SPEEDUP
# times: 48,630 tokens offered within 5.3 s, about 24 s of the limit.
ROWS, SCALE, SPEEDUP = 100, 2, 8.0
# Spend the fake's token bucket before the load (False: it starts full, a minute's tokens of
# slack that no shortfall of an estimate can exhaust within the test).
DRAIN_FIRST = True
UNITS_ESTIMATE = 1000  # the declared estimate of the first calls, until answers teach it
FAKE_LATENCY_MS, GENERATION_MS_PER_TOKEN = 20, 4  # a completion of 100 tokens: 0.4 s
WARMUP_S = 5.0  # after the first publish: 429s before this are the warm-up's
# Backlogged: requests published and not yet charged by the fake hold at least this many tokens.
BACKLOG_TOKENS = 2 * TOKENS_PER_S
POLL_S = 0.25

SPEC = f"""
name = "{LLM}"
base_url = "{{url}}/v1"
capability = "llm_chat"
rate_limit_style = "openai"
auth = {{{{ type = "api_key", in = "header", name = "X-API-Key", key = "env:LLM_KEY" }}}}

[limits]
rate_per_s = {REQUESTS_PER_S}
burst = {REQUESTS_PER_S}

[limits.units]
name = "tokens"
per_minute = {TOKENS_PER_MIN}

[rate_limit_headers.requests]
window_s = 60

[rate_limit_headers.tokens]
window_s = 60

[error_shape]
code_field = "error.code"
message_field = "error.message"

[error_shape.codes]
rate_limit_exceeded = "rate_limited"

[operations.{OPERATION}]
method = "POST"
path = "/chat/completions"
body = {{{{ content_types = ["application/json"], required = true }}}}
units_estimate = {UNITS_ESTIMATE}
units_from = "usage.total_tokens"
units_from_request = "max_tokens"
units_unbounded_from = "usage.prompt_tokens"
"""


@dataclass(frozen=True)
class Call:
    """One trace row as a chat request: its scaled token counts and when it is due."""

    request: RequestEvent
    offset_s: float
    prompt_tokens: int
    completion_tokens: int

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Run:
    """What one run saw: publish times, outcomes, the fake's counts over time."""

    calls: list[Call]
    published_at: dict[str, float] = field(default_factory=dict)  # request id -> epoch s
    started_at: float = 0.0  # the first publish, epoch s
    # (epoch s, token 429s so far): the fake's 429s less its request bucket's.
    token_429s: list[tuple[float, int]] = field(default_factory=list)
    results: list[ResultEvent] = field(default_factory=list)
    dead_letters: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    metrics: str = ""


def chat_call(row: TraceRow) -> Call:
    """A chat request whose prompt counts the row's context tokens (the fake's rule: 3, 4 for
    the message, a token per four characters) and whose max_tokens is its generated tokens."""
    prompt = max(8, round(row.context_tokens / SCALE))
    completion = max(1, round(row.generated_tokens / SCALE))
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "x" * (4 * (prompt - 7))}],
        "max_tokens": completion,
    }
    request = RequestEvent(
        provider=LLM,
        operation=OPERATION,
        body=json.dumps(body).encode(),
        content_type="application/json",
    )
    return Call(request, row.offset_s, prompt, completion)


def token_429s(stats: dict[str, Any]) -> int:
    """The fake's 429s for tokens: all its 429s but its request bucket's (no error mix)."""
    return int(stats["status_counts"].get("429", 0)) - int(stats["rate_limited"])


async def drain_tokens(http: httpx.AsyncClient, fake_url: str) -> int:
    """Spend the fake's whole token bucket in one call; return what it held."""
    response = await http.get(f"{fake_url}/v1/models")
    held = int(response.headers["x-ratelimit-remaining-tokens"])
    response = await http.post(
        f"{fake_url}/v1/chat/completions",
        headers={"X-Fake-Prompt-Tokens": str(held - 1)},
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "-"}],
            "max_tokens": 1,
        },
    )
    assert response.status_code == 200, response.text
    assert int(response.headers["x-ratelimit-remaining-tokens"]) < TOKENS_PER_S / 10
    return held


async def replay(
    settings: Settings,
    fake_url: str,
    worker_url: str,
    calls: list[Call],
    *,
    drain: bool = DRAIN_FIRST,
) -> Run:
    run = Run(calls)
    ids = {c.request.request_id for c in calls}
    last_s = calls[-1].offset_s
    reader = asyncio.create_task(collect(settings, until_ids=ids, timeout_s=last_s + 90))
    stop = asyncio.Event()

    async def watch(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            run.token_429s.append((time.time(), token_429s(await fake_stats(http, fake_url))))
            await asyncio.sleep(POLL_S)

    async with (
        httpx.AsyncClient(timeout=10, headers={"X-API-Key": API_KEY}) as http,
        CallstreamClient(settings) as client,
    ):
        if drain:
            await drain_tokens(http, fake_url)
        watcher = asyncio.create_task(watch(http))
        start = time.monotonic()
        run.started_at = time.time()
        pending = list(calls)
        while pending:
            due = [c for c in pending if c.offset_s <= time.monotonic() - start]
            pending = pending[len(due) :]
            if due:
                await client.publish_many([c.request for c in due])
                now = time.time()
                run.published_at.update({c.request.request_id: now for c in due})
            if pending:
                await asyncio.sleep(max(0.0, pending[0].offset_s - (time.monotonic() - start)))
        outcomes = await reader
        stop.set()
        await watcher
        run.token_429s.append((time.time(), token_429s(await fake_stats(http, fake_url))))
        run.stats = await fake_stats(http, fake_url)
        run.metrics = await metrics_of(http, worker_url)
    run.results = outcomes.results
    run.dead_letters = len(outcomes.dead_letters)
    return run


def charged_at(result: ResultEvent) -> float:
    """When the fake charged the call's tokens (epoch s): on arrival, after its latency, i.e.
    the call's generation time before the worker had its answer."""
    return (result.completed_at_ms - result.latency_ms + FAKE_LATENCY_MS) / 1000


def usage(result: ResultEvent) -> int:
    assert result.body is not None
    return int(json.loads(result.body)["usage"]["total_tokens"])


@dataclass
class Figures:
    ok: int
    not_ok: int
    # (prompt, completion tokens) of the calls refused at least once (answered on a retry)
    retried: list[tuple[int, int]]
    # Seconds after the first publish at which the fake's token 429s were seen (poll times)
    token_429s_at: list[float]
    token_429s_warmup: int
    token_429s_after: int
    backlog_from: float  # seconds after the first publish
    backlog_to: float
    backlog_tokens_at_start: int
    tokens_in_backlog: int
    utilization: float
    mean_accepted_per_s: float
    estimate: float
    waits: float
    reserved: float
    spent: float


def figures(run: Run) -> Figures:
    by_id = {c.request.request_id: c for c in run.calls}
    ok = [r for r in run.results if r.status == "ok"]
    charges = sorted((charged_at(r), usage(r)) for r in ok)
    t0 = run.started_at + WARMUP_S

    def outstanding(at: float) -> int:
        """Tokens published by ``at`` and not yet charged."""
        done = {r.request_id for r in ok if charged_at(r) <= at}
        return sum(
            by_id[rid].tokens
            for rid, published in run.published_at.items()
            if published <= at and rid not in done
        )

    # The backlog ends when fewer than BACKLOG_TOKENS wait; checked at each charge after t0.
    t_end = t0
    for at, _ in charges:
        if at <= t0:
            continue
        if outstanding(at) < BACKLOG_TOKENS:
            break
        t_end = at
    in_span = sum(tokens for at, tokens in charges if t0 < at <= t_end)
    span_s = t_end - t0
    before = max((n for at, n in run.token_429s if at <= t0), default=0)
    total_429s = run.token_429s[-1][1]
    return Figures(
        ok=len(ok),
        not_ok=len(run.results) - len(ok) + run.dead_letters,
        retried=[
            (by_id[r.request_id].prompt_tokens, by_id[r.request_id].completion_tokens)
            for r in ok
            if r.attempts > 1
        ],
        token_429s_at=[
            round(at - run.started_at, 1)
            for (at, n), (_, previous) in zip(run.token_429s[1:], run.token_429s, strict=False)
            for _ in range(n - previous)
        ],
        token_429s_warmup=before,
        token_429s_after=total_429s - before,
        backlog_from=WARMUP_S,
        backlog_to=t_end - run.started_at,
        backlog_tokens_at_start=outstanding(t0),
        tokens_in_backlog=in_span,
        utilization=in_span / (TOKENS_PER_S * span_s) if span_s > 0 else 0.0,
        mean_accepted_per_s=in_span / span_s if span_s > 0 else 0.0,
        estimate=sample(run.metrics, "callstream_units_estimate", operation=f"{LLM}.{OPERATION}"),
        waits=sample(run.metrics, "callstream_units_waits_total", limit_key=LLM),
        reserved=sample(run.metrics, "callstream_units_reserved_total", limit_key=LLM),
        spent=sample(run.metrics, "callstream_units_spent_total", limit_key=LLM),
    )


def start_llm(
    settings: Settings, fake_provider_factory, worker_factory, tmp_path: Path
) -> tuple[Settings, Child, Child]:
    """The fake OpenAI enforcing its limits, and a worker calling it as provider ``llm``."""
    fake = fake_provider_factory(
        "--flavor",
        "openai",
        "--tokens-per-min",
        str(TOKENS_PER_MIN),
        "--rate",
        str(REQUESTS_PER_S),
        "--burst",
        str(REQUESTS_PER_S * 60),
        "--latency-ms",
        str(FAKE_LATENCY_MS),
        "--config-json",
        json.dumps({"completion_ms_per_token": GENERATION_MS_PER_TOKEN}),
    )
    spec_dir = tmp_path / "provider_files"
    spec_dir.mkdir()
    (spec_dir / f"{LLM}.toml").write_text(SPEC.format(url=fake.url))
    settings = settings.model_copy(
        update={"providers": {**settings.providers, LLM: ProviderSettings()}}
    )
    worker = worker_factory(
        fake.url,
        CALLSTREAM_PROVIDER_DIRS=f'["{spec_dir}"]',
        CALLSTREAM_PROVIDERS__LLM__ENABLED="true",
        LLM_KEY=API_KEY,
    )
    return settings, fake, worker


def test_a_token_limited_chat_provider_replayed_from_the_azure_trace(
    settings, fake_provider_factory, worker_factory, tmp_path: Path
):
    began = time.monotonic()
    calls = [chat_call(row) for row in read_llm_trace(speedup=SPEEDUP, limit=ROWS)]
    settings, fake, worker = start_llm(settings, fake_provider_factory, worker_factory, tmp_path)
    run = asyncio.run(replay(settings, fake.url, worker.url, calls))
    f = figures(run)
    offered = sum(c.tokens for c in calls)
    print(
        f"\n{len(calls)} calls, {offered} tokens offered in {calls[-1].offset_s:.1f} s against "
        f"{TOKENS_PER_MIN} TPM: {f.ok} ok, {f.not_ok} not ok; token 429s "
        f"{f.token_429s_warmup} in the first {WARMUP_S:g} s, {f.token_429s_after} after (at "
        f"{f.token_429s_at} s; calls answered on a retry, prompt and completion tokens: "
        f"{f.retried}); "
        f"backlogged {f.backlog_from:g}-{f.backlog_to:.1f} s ({f.backlog_tokens_at_start} tokens "
        f"waiting at its start): {f.tokens_in_backlog} tokens accepted, "
        f"{f.mean_accepted_per_s:.0f}/s, {f.utilization:.1%} of the limit; learned estimate "
        f"{f.estimate:.0f} tokens a call, {f.waits:g} calls waited for tokens, "
        f"{f.reserved:.0f} reserved, {f.spent:.0f} spent; fake: "
        f"{run.stats['calls_total']} calls, status {run.stats['status_counts']}, request 429s "
        f"{run.stats['rate_limited']}; test took {time.monotonic() - began:.0f} s"
    )
    # Every request ended ok, each with the tokens its trace row says.
    assert f.not_ok == 0
    assert sorted(r.request_id for r in run.results) == sorted(c.request.request_id for c in calls)
    tokens = {c.request.request_id: c.tokens for c in calls}
    assert all(usage(r) == tokens[r.request_id] for r in run.results)
    # The key was backlogged long enough to measure, and used >= 90% of the limit meanwhile.
    assert f.backlog_tokens_at_start >= 5 * TOKENS_PER_S
    assert f.backlog_to - f.backlog_from >= 10
    assert f.utilization >= 0.9
    # Warmed up, the fake refused no call for tokens.
    assert f.token_429s_after == 0, f"token 429s at {f.token_429s_at} s, calls {f.retried}"


# Before the load, the worker's units bucket fills for IDLE_S (~12,000 tokens), as the fake's does;
# then another client leaves the fake LEFT_BY_OTHER tokens. The worker learns it from a small
# call's answer (a chat of PROBE_TOKENS), and only then does the load come: SHARED_ROWS rows of
# the trace (~14,600 tokens, ~2,600 at most in one call).
IDLE_S = 6.0
LEFT_BY_OTHER = 500
PROBE_TOKENS = (200, 100)  # prompt, completion
SHARED_ROWS = 30


def probe() -> Call:
    prompt, completion = PROBE_TOKENS
    return chat_call(TraceRow(0.0, prompt * SCALE, completion * SCALE))


async def answered(settings: Settings, client: CallstreamClient, call: Call) -> ResultEvent:
    """Publish one call and wait for its result."""
    await client.publish_many([call.request])
    outcomes = await collect(settings, until_ids={call.request.request_id}, settle_s=0.0)
    [result] = [r for r in outcomes.results if r.request_id == call.request.request_id]
    assert result.status == "ok", result
    return result


async def spend_all_but(http: httpx.AsyncClient, fake_url: str, left: int) -> int:
    """Another client of the same key: spend the fake's tokens but ``left``; return how many."""
    response = await http.get(f"{fake_url}/v1/models")
    spent = int(response.headers["x-ratelimit-remaining-tokens"]) - left
    response = await http.post(
        f"{fake_url}/v1/chat/completions",
        headers={"X-Fake-Prompt-Tokens": str(spent - 1)},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "-"}],
              "max_tokens": 1},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    return spent


async def shared_key(settings: Settings, fake_url: str, worker_url: str) -> tuple[Run, int]:
    """Drained fake, a probe call, idle, the other client's spend, a second probe, the load."""
    async with (
        httpx.AsyncClient(timeout=10, headers={"X-API-Key": API_KEY}) as http,
        CallstreamClient(settings) as client,
    ):
        await drain_tokens(http, fake_url)
        await answered(settings, client, probe())  # the worker's units bucket starts
        await asyncio.sleep(IDLE_S)
        spent = await spend_all_but(http, fake_url, LEFT_BY_OTHER)
        await answered(settings, client, probe())  # its answer says what is left
    calls = [chat_call(row) for row in read_llm_trace(speedup=SPEEDUP, limit=SHARED_ROWS)]
    return await replay(settings, fake_url, worker_url, calls, drain=False), spent


def test_another_client_of_the_same_key_is_heard_through_the_token_headers(
    settings, fake_provider_factory, worker_factory, tmp_path: Path
):
    began = time.monotonic()
    settings, fake, worker = start_llm(settings, fake_provider_factory, worker_factory, tmp_path)
    run, spent = asyncio.run(shared_key(settings, fake.url, worker.url))
    ids = {c.request.request_id for c in run.calls}
    run.results = [r for r in run.results if r.request_id in ids]  # the probes aside
    f = figures(run)
    refused = token_429s(run.stats)  # the whole test's: drain, probes, other client, load
    print(
        f"\nanother client spent {spent} tokens after {IDLE_S:g} s idle, leaving "
        f"{LEFT_BY_OTHER}; then {len(run.calls)} calls ({sum(c.tokens for c in run.calls)} "
        f"tokens): {f.ok} ok, {f.not_ok} not ok; token 429s {refused} (calls answered on a "
        f"retry: {f.retried}); {f.waits:g} calls waited for tokens; fake: status "
        f"{run.stats['status_counts']}; test took {time.monotonic() - began:.0f} s"
    )
    assert f.not_ok == 0
    assert sorted(r.request_id for r in run.results) == sorted(ids)
    assert spent >= 0.8 * IDLE_S * TOKENS_PER_S  # the worker believed it had about as many
    # Informed only by the probe's headers, the worker sent no call the fake refused.
    assert refused == 0, f"token 429s at {f.token_429s_at} s, calls {f.retried}"
