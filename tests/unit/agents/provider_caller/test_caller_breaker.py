"""Caller with circuit breakers: an open breaker costs no call, no token and no quota; the
request waits durably for the breaker or ends circuit_open; probes decide the way back."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from agents.breaker.board import BreakerBoard
from agents.breaker.state import BreakerPolicy
from agents.provider_caller.caller import Caller
from agents.provider_caller.fallbacks import Fallbacks
from agents.retry.planner import RetryPlanner
from providers.declaration import AlternateCall, FallbackSpec, StaticAnswer
from providers.errors import BadRequest, ProviderUnavailable, RateLimited
from schemas.codec import Codecs
from schemas.models import DeadLetterEvent, ResultEvent
from streams.metrics import Metrics
from streams.settings import RetrySettings
from streams.stage.records import Delay, Forward, Outcome, SourceRecord

from .test_caller import NOW_MS, JsonDecoder
from .test_caller_retries import PROVIDERS, Clock, SequenceGateway, ok, record

CODECS = Codecs()
POLICY = BreakerPolicy(window="count", window_size=4, minimum_calls=4, wait_in_open_s=10.0)


def build(
    gateway: SequenceGateway,
    clock: Clock,
    declared: dict[tuple[str, str], tuple[FallbackSpec, ...]] | None = None,
    **options: object,
) -> tuple[Caller, Metrics]:
    metrics = Metrics.create(CollectorRegistry())
    if declared is not None:
        options["fallbacks"] = fallbacks_of(declared, gateway, clock)
    board = BreakerBoard(lambda _key: POLICY, metrics, clock=lambda: clock.ms / 1000)
    caller = Caller(
        gateway,
        JsonDecoder(),
        clock_ms=clock,
        delays=CODECS.delayed,
        encode_request=CODECS.request.encode,
        breakers=board,
        max_wait_s=60.0,
        **options,  # type: ignore[arg-type]
    )
    return caller, metrics


def fallbacks_of(
    declared: dict[tuple[str, str], tuple[FallbackSpec, ...]],
    gateway: SequenceGateway,
    clock: Clock,
) -> Fallbacks:
    return Fallbacks(
        lambda p, op: declared.get((p, op), ()),
        check=gateway.build,
        limit_key=lambda request: request.provider,
        encode=CODECS.request.encode,
        clock_ms=clock,
    )


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def trip(caller: Caller, count: int = 4) -> None:
    """Send ``count`` requests; the gateway answers each as it was told."""
    for n in range(count):
        await caller.handle(record(request_id=f"t{n}"))


async def test_failures_open_the_breaker_and_the_next_request_waits_for_it_uncalled() -> None:
    clock = Clock()
    gateway = SequenceGateway(ProviderUnavailable("HTTP 503", http_status=503))
    caller, metrics = build(gateway, clock)
    await trip(caller)
    assert sample(metrics, "callstream_breaker_state", breaker="fake") == 2  # open
    assert sample(metrics, "callstream_breaker_transitions_total", breaker="fake", to="open") == 1

    waiting = await caller.handle(record(request_id="w1"))
    assert isinstance(waiting, Delay) and waiting.kind == "breaker"
    assert NOW_MS + 10_000 <= waiting.due_ms < NOW_MS + 11_000, "when it half-opens, spread"
    assert len(gateway.calls) == 4, "no call while open"
    assert sample(metrics, "callstream_breaker_refusals_total", breaker="fake") == 1


async def test_a_request_whose_deadline_comes_first_ends_circuit_open() -> None:
    clock = Clock()
    caller, _ = build(SequenceGateway(ProviderUnavailable("HTTP 503", http_status=503)), clock)
    await trip(caller)
    outcome = await caller.handle(record(request_id="d1", deadline_at_ms=NOW_MS + 5_000))
    assert isinstance(outcome, Outcome) and isinstance(outcome.event, DeadLetterEvent)
    letter = outcome.event
    assert (letter.reason, letter.stage, letter.retriable) == ("circuit_open", "breaker", True)
    assert letter.error_type == "CircuitOpen" and "fake" in letter.error_message


async def test_after_the_wait_probes_close_it_and_the_waiting_request_goes() -> None:
    clock = Clock()
    gateway = SequenceGateway(ProviderUnavailable("HTTP 503", http_status=503))
    caller, metrics = build(gateway, clock)
    await trip(caller)
    waiting = await caller.handle(record(request_id="w1"))
    assert isinstance(waiting, Delay)

    gateway.answers = [ok()]  # the provider is back
    clock.ms = waiting.due_ms
    outcomes = [await caller.resume(3, waiting.payload)]
    outcomes += [await caller.handle(record(request_id=f"p{n}")) for n in range(3)]
    assert all(isinstance(o, Outcome) and o.event.status == "ok" for o in outcomes)  # type: ignore[union-attr]
    assert sample(metrics, "callstream_breaker_state", breaker="fake") == 0  # closed
    transitions = [
        sample(metrics, "callstream_breaker_transitions_total", breaker="fake", to=mode)
        for mode in ("open", "half_open", "closed")
    ]
    assert transitions == [1, 1, 1]


async def test_half_open_lets_only_its_probes_through() -> None:
    clock = Clock()
    gateway = SequenceGateway(ProviderUnavailable("HTTP 503", http_status=503))
    caller, metrics = build(gateway, clock)
    await trip(caller)
    clock.ms += 10_000
    # Probes that never report (calls in flight) hold the half-open slots.
    board_permit = [caller._breakers.permit("fake") for _ in range(3)]  # type: ignore[union-attr]
    assert all(p.allowed for p in board_permit)
    refused = await caller.handle(record(request_id="late"))
    assert isinstance(refused, Delay) and refused.kind == "breaker"
    assert refused.due_ms >= clock.ms + 1000, "asks again a second later"
    assert sample(metrics, "callstream_breaker_refusals_total", breaker="fake") == 1


async def test_a_callers_4xx_and_the_providers_429_do_not_count() -> None:
    clock = Clock()
    for error in (BadRequest("bad", http_status=400), RateLimited("slow down")):
        gateway = SequenceGateway(error)
        caller, metrics = build(gateway, clock)
        await trip(caller, count=8)
        assert len(gateway.calls) == 8, f"{type(error).__name__} opened the breaker"
        assert sample(metrics, "callstream_breaker_state", breaker="fake") == 0


async def test_an_operation_with_a_fallback_is_answered_by_it_while_open() -> None:
    clock = Clock()
    gateway = SequenceGateway(ProviderUnavailable("HTTP 503", http_status=503))
    answer = StaticAnswer(body='{"temperature": null}')
    declared = {("fake", "get_item"): (FallbackSpec(static=answer),)}
    caller, _ = build(gateway, clock, declared)
    await trip(caller)
    outcome = await caller.handle(record(request_id="f1"))
    assert isinstance(outcome, Outcome) and isinstance(outcome.event, ResultEvent)
    event = outcome.event
    assert (event.status, event.provider_used, event.reason) == (
        "fallback",
        "static",
        "circuit_open",
    )
    assert (event.body, event.http_status, event.error_type) == (
        b'{"temperature": null}', 200, "CircuitOpen",
    )  # fmt: skip
    assert len(gateway.calls) == 4, "a fallback never calls the failing provider"


async def test_a_fallback_answers_when_the_retries_give_up() -> None:
    clock = Clock()
    metrics = Metrics.create(CollectorRegistry())
    planner = RetryPlanner(
        RetrySettings(max_attempts=1), PROVIDERS, metrics, clock=lambda: clock.ms / 1000
    )
    caller = Caller(
        SequenceGateway(ProviderUnavailable("HTTP 503", http_status=503)),
        JsonDecoder(),
        clock_ms=clock,
        retries=planner,
        delays=CODECS.delayed,
        fallbacks=fallbacks_of(
            {("fake", "get_item"): (FallbackSpec(static=StaticAnswer(body="{}")),)},
            SequenceGateway(ok()),
            clock,
        ),
    )
    outcome = await caller.handle(record(request_id="g1"))
    assert isinstance(outcome, Outcome) and isinstance(outcome.event, ResultEvent)
    assert (outcome.event.status, outcome.event.reason) == ("fallback", "retries_exhausted")
    assert outcome.event.error_type == "ProviderUnavailable"


class TwoNames(SequenceGateway):
    provider_names = frozenset({"fake", "meteo"})


async def test_an_alternate_provider_answers_in_the_primarys_name() -> None:
    clock = Clock()
    gateway = TwoNames(ProviderUnavailable("HTTP 503", http_status=503))
    alternate = AlternateCall(provider="meteo", operation="current", params={"id": "{item_id}"})
    declared = {("fake", "get_item"): (FallbackSpec(call=alternate),)}
    caller, _ = build(gateway, clock, declared)
    await trip(caller)
    forward = await caller.handle(record(request_id="a1"))
    assert isinstance(forward, Forward) and forward.key == b"meteo"
    moved = CODECS.request.decode(forward.value)
    assert (moved.provider, moved.operation, moved.params) == ("meteo", "current", {"id": "1"})
    assert (moved.fallback_of, moved.fallback_reason) == ("fake/get_item", "circuit_open")
    assert moved.request_id == "a1", "the same request, answered by another provider"

    gateway.answers = [ok()]  # the alternate's owner calls it
    # (this caller's decoder reads JSON; the worker's reads the Avro it forwarded)
    outcome = await caller.handle(SourceRecord("requests", 1, 7, moved.model_dump_json().encode()))
    assert isinstance(outcome, Outcome) and isinstance(outcome.event, ResultEvent)
    event = outcome.event
    assert (event.status, event.provider, event.operation) == ("fallback", "fake", "get_item")
    assert (event.provider_used, event.reason) == ("meteo", "circuit_open")
    assert gateway.calls[-1].provider == "meteo"


async def test_a_request_missing_a_parameter_of_the_alternate_skips_that_fallback() -> None:
    clock = Clock()
    gateway = TwoNames(ProviderUnavailable("HTTP 503", http_status=503))
    alternate = AlternateCall(provider="meteo", operation="current", params={"q": "{city}"})
    static = FallbackSpec(static=StaticAnswer(body="{}"))
    declared = {("fake", "get_item"): (FallbackSpec(call=alternate), static)}
    caller, _ = build(gateway, clock, declared)
    await trip(caller)
    outcome = await caller.handle(record(request_id="a2"))
    assert isinstance(outcome, Outcome) and outcome.event.status == "fallback"  # type: ignore[union-attr]
    assert outcome.event.provider_used == "static"  # type: ignore[union-attr]


async def test_an_operation_with_its_own_breaker_opens_alone() -> None:
    clock = Clock()
    metrics = Metrics.create(CollectorRegistry())
    board = BreakerBoard(
        lambda _key: POLICY,
        metrics,
        clock=lambda: clock.ms / 1000,
        separate=[("fake", "get_item")],
    )
    assert (board.key_for("fake", "get_item"), board.key_for("fake", "other")) == (
        "fake.get_item", "fake",
    )  # fmt: skip
    gateway = SequenceGateway(ProviderUnavailable("HTTP 503", http_status=503))
    caller = Caller(gateway, JsonDecoder(), clock_ms=clock, delays=CODECS.delayed, breakers=board)
    await trip(caller)
    assert sample(metrics, "callstream_breaker_state", breaker="fake.get_item") == 2
    assert board.is_open("fake") is None, "the provider's other operations are still called"
