"""The fake provider: a real aiohttp server imitating a third-party API, in-process or as a child.

    async with FakeProviderServer(FakeProviderConfig(latency_ms=50)) as server:
        ...  # call server.url; assert on server.stats

Per request, in this order: count the arrival, strict token bucket (429), credentials (401),
count the call by key, directives and latency, replay of an idempotent POST, injected error
(directive, then the random ``error_mix``), the operation. No per-request logging.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from typing import Any

from aiohttp import web

from providers.fake.auth_check import Check, build_check
from providers.fake.bucket import TokenBucket, whole_seconds
from providers.fake.config import FakeOAuth2Auth, FakeProviderConfig, FakeTls
from providers.fake.directives import DirectiveError, Directives, Outcome, read_directives
from providers.fake.flavors import flavor_for
from providers.fake.flavors.base import Flavor, Handler, RateState, Route, dumps, respond
from providers.fake.idempotency import IdempotencyStore, StoredResponse
from providers.fake.stats import FakeStats
from providers.fake.tokens import TokenIssuer

_IMMUTABLE_WHEN_RUNNING = ("flavor", "tls")
_BODYLESS = frozenset({204, 304})


class _Runtime:
    """What a config turns into; rebuilt on ``update`` (stats and the flavor survive)."""

    __slots__ = (
        "bucket",
        "check",
        "config",
        "fail_counts",
        "flavor",
        "idempotency",
        "issuer",
        "jitter_s",
        "latency_s",
        "outcomes",
        "rng",
    )

    def __init__(self, config: FakeProviderConfig, flavor: Flavor, now: float) -> None:
        self.config = config
        self.flavor = flavor
        limit = config.rate_limit
        self.bucket = (
            TokenBucket(rate_per_s=limit.rate_per_s, burst=limit.burst, now=now) if limit else None
        )
        auth = config.auth
        self.issuer = TokenIssuer(auth) if isinstance(auth, FakeOAuth2Auth) else None
        self.check: Check | None = build_check(
            auth, issuer=self.issuer, basic_for_bearer=flavor.basic_for_bearer
        )
        self.rng = random.Random(config.seed)
        self.latency_s = config.latency_ms / 1000
        self.jitter_s = config.jitter_ms / 1000
        self.outcomes = config.error_mix.outcomes()
        self.idempotency = IdempotencyStore() if config.idempotency else None
        # Calls per target for fake_fail_first on requests without a key.
        self.fail_counts: dict[str, int] = {}

    def rate_state(self, now: float, wait_s: float = 0.0) -> RateState:
        bucket = self.bucket
        assert bucket is not None
        return RateState(
            limit=bucket.burst,
            remaining=bucket.remaining(),
            reset_s=bucket.seconds_until_full(now),
            retry_after_s=whole_seconds(wait_s) if wait_s > 0 else 0,
        )

    def draw(self) -> Outcome | None:
        """The random error_mix outcome of one request, None for success."""
        if not self.outcomes:
            return None
        roll = self.rng.random()
        for edge, outcome in self.outcomes:
            if roll < edge:
                return outcome
        return None


class FakeProviderServer:
    """A fake third-party API on 127.0.0.1 (HTTPS when ``config.tls`` is set)."""

    def __init__(
        self, config: FakeProviderConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._config = config or FakeProviderConfig()
        self._host = host
        self._port = port
        self.stats = FakeStats()
        flavor = flavor_for(self._config)
        self._rt = _Runtime(self._config, flavor, time.monotonic())
        self.app = self._build_app(flavor)
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        # handler_cancellation: a client giving up cancels the handler's (timeout) sleep.
        runner = web.AppRunner(
            self.app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        ssl_context = _server_ssl(self._config.tls) if self._config.tls else None
        site = web.TCPSite(runner, self._host, self._port, ssl_context=ssl_context, backlog=1024)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        scheme = "https" if ssl_context else "http"
        self._url = f"{scheme}://{self._host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeProviderServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- accessors and controls -----------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (no trailing slash)."""
        if self._url is None:
            raise RuntimeError("the fake provider is not started")
        return self._url

    @property
    def token_url(self) -> str:
        return f"{self.url}/oauth/token"

    @property
    def config(self) -> FakeProviderConfig:
        return self._config

    @property
    def flavor(self) -> Flavor:
        return self._rt.flavor

    def reset(self) -> None:
        """Forget stats, stored responses and tokens; refill the bucket; reseed."""
        self.stats = FakeStats()
        self._rt = _Runtime(self._config, self._rt.flavor, time.monotonic())

    def update(self, **changes: Any) -> FakeProviderConfig:
        """Change the config of a running server (not ``flavor`` or ``tls``); stats remain.

        Returns:
            The new config.
        """
        if fixed := [name for name in _IMMUTABLE_WHEN_RUNNING if name in changes]:
            raise ValueError(f"cannot change {', '.join(fixed)} of a built server")
        config = self._config.with_changes(changes)
        old = self._rt
        self._config = config
        old.flavor.configure(config)
        runtime = _Runtime(config, old.flavor, time.monotonic())
        # Keep what the clients built up: issued tokens, stored responses, the bucket's level.
        if old.issuer is not None and runtime.issuer is not None:
            runtime.issuer.adopt(old.issuer)
        if old.idempotency is not None and runtime.idempotency is not None:
            runtime.idempotency = old.idempotency
        if config.rate_limit == old.config.rate_limit:
            runtime.bucket = old.bucket
        runtime.fail_counts = old.fail_counts
        self._rt = runtime
        return config

    def revoke_tokens(self) -> None:
        """Make every issued OAuth2 token invalid (the next call with one gets a 401)."""
        if self._rt.issuer is not None:
            self._rt.issuer.revoke_all()

    # -- the app --------------------------------------------------------------------------

    def _build_app(self, flavor: Flavor) -> web.Application:
        app = web.Application()
        router = app.router
        router.add_get("/_fake/stats", self._stats_endpoint)
        router.add_post("/_fake/reset", self._reset_endpoint)
        router.add_get("/_fake/config", self._config_endpoint)
        router.add_post("/_fake/config", self._config_endpoint)
        router.add_post("/_fake/tokens/revoke", self._revoke_endpoint)
        router.add_post("/oauth/token", self._token_endpoint)
        for route in flavor.routes():
            router.add_route(route.method, route.path, self._guard(route))
        router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    def _guard(self, route: Route) -> Handler:
        operation, limited = route.handler, route.limited

        async def handle(request: web.Request) -> web.Response:
            rt = self._rt
            stats = self.stats
            now = time.monotonic()
            bucket = rt.bucket if limited else None
            if limited:
                stats.arrival(now)
            if bucket is not None:
                wait_s = bucket.take(now)
                if wait_s > 0.0:
                    stats.rate_limited += 1
                    state = rt.rate_state(now, wait_s)
                    return self._done(
                        rt.flavor.rate_limited(state, retry_after_s=state.retry_after_s)
                    )
            if rt.check is not None:
                verdict = await rt.check(request)
                if verdict is not None:
                    stats.auth_failures += 1
                    return self._done(self._with_rate(rt, rt.flavor.unauthorized(verdict), now))
            headers = request.headers
            idempotency_key = headers.get("Idempotency-Key")
            count = stats.call(idempotency_key or headers.get("X-Request-Id"))
            try:
                directives = read_directives(request)
            except DirectiveError as error:
                return self._done(respond(400, dumps({"fake_directive_error": str(error)})))
            delay_s = rt.latency_s + (rt.rng.random() * rt.jitter_s if rt.jitter_s else 0.0)
            if directives is not None and directives.delay_s is not None:
                delay_s = directives.delay_s
            store = rt.idempotency if request.method == "POST" else None
            if store is not None and idempotency_key is not None:
                response = await self._idempotent(
                    rt, store, idempotency_key, operation, request, directives, count, delay_s
                )
            else:
                response = await self._respond(rt, operation, request, directives, count, delay_s)
            return self._done(self._with_rate(rt, response, now))

        return handle

    async def _idempotent(
        self,
        rt: _Runtime,
        store: IdempotencyStore,
        key: str,
        operation: Handler,
        request: web.Request,
        directives: Directives | None,
        count: int,
        delay_s: float,
    ) -> web.Response:
        """Replay a stored response for ``key``, or respond and store a 2xx (Stripe-like)."""
        early = await self._replay(rt, store, key, request)
        if early is not None:
            if delay_s > 0.0:
                await asyncio.sleep(delay_s)
            return early
        store.in_flight.add(key)  # from arrival on: a repeat meanwhile gets 409
        try:
            response = await self._respond(rt, operation, request, directives, count, delay_s)
        finally:
            store.in_flight.discard(key)
        if 200 <= response.status < 300 and isinstance(response.body, bytes):
            fingerprint = _fingerprint(request, await request.read())
            store.responses[key] = StoredResponse(
                fingerprint, response.status, response.body, response.content_type
            )
        return response

    async def _respond(
        self,
        rt: _Runtime,
        operation: Handler,
        request: web.Request,
        directives: Directives | None,
        count: int,
        delay_s: float,
    ) -> web.Response:
        """Wait the latency, then answer the injected outcome or run the operation."""
        if delay_s > 0.0:
            await asyncio.sleep(delay_s)
        outcome = self._outcome(rt, directives, count, request)
        if outcome is not None:
            return await self._inject(rt, outcome, directives)
        return await operation(request)

    async def _replay(
        self, rt: _Runtime, store: IdempotencyStore, key: str, request: web.Request
    ) -> web.Response | None:
        stored = store.responses.get(key)
        if stored is None:
            # Stripe answers 409 while the first request with a key is still running.
            return rt.flavor.error(409) if key in store.in_flight else None
        if stored.fingerprint != _fingerprint(request, await request.read()):
            return rt.flavor.idempotency_conflict()
        self.stats.idempotent_replays += 1
        return web.Response(
            status=stored.status,
            body=stored.body,
            headers={"Content-Type": stored.content_type, **rt.flavor.replay_headers()},
        )

    def _outcome(
        self, rt: _Runtime, directives: Directives | None, count: int, request: web.Request
    ) -> Outcome | None:
        if directives is None or directives.status is None:
            return rt.draw()
        if directives.fail_first is not None:
            if count == 0:  # no key: count calls per request target instead
                target = request.raw_path
                count = rt.fail_counts[target] = rt.fail_counts.get(target, 0) + 1
            if count > directives.fail_first:
                return rt.draw()
        return directives.status

    async def _inject(
        self, rt: _Runtime, outcome: Outcome, directives: Directives | None
    ) -> web.Response:
        retry_after_s = directives.retry_after_s if directives is not None else None
        if outcome == "timeout":
            self.stats.timeouts += 1
            await asyncio.sleep(rt.config.timeout_sleep_s)
            return rt.flavor.error(504)
        if outcome == 429:
            # An injected 429 is not the bucket's: no state (bucket headers come from _with_rate).
            wait_s = retry_after_s or rt.config.error_mix.retry_after_s
            return rt.flavor.rate_limited(None, retry_after_s=wait_s)
        if outcome < 400:
            size = directives.body_bytes if directives is not None else None
            return respond(outcome, b'"' + b"x" * (size - 2) + b'"' if size else b"{}")
        return rt.flavor.error(outcome, retry_after_s=retry_after_s)

    def _with_rate(self, rt: _Runtime, response: web.Response, now: float) -> web.Response:
        if rt.bucket is not None:
            for name, value in rt.flavor.rate_headers(rt.rate_state(now)).items():
                response.headers.setdefault(name, value)
        return response

    def _done(self, response: web.Response) -> web.Response:
        status = response.status
        body = response.body
        # aiohttp sends no body with a 204 or 304 (RFC 9110 6.4.1), whatever was set on it.
        size = len(body) if isinstance(body, bytes) and status not in _BODYLESS else 0
        self.stats.status(status, size)
        return response

    async def _unknown(self, request: web.Request) -> web.Response:
        return self._rt.flavor.error(404)

    # -- control endpoints ----------------------------------------------------------------

    async def _stats_endpoint(self, request: web.Request) -> web.Response:
        with_keys = request.query.get("keys") in {"1", "true"}
        snapshot = self.stats.snapshot(with_keys=with_keys)
        issuer = self._rt.issuer
        snapshot["tokens_issued"] = issuer.issued if issuer is not None else 0
        return web.json_response(snapshot)

    async def _reset_endpoint(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})

    async def _config_endpoint(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            changes = await request.json()
            if not isinstance(changes, dict):
                return respond(400, dumps({"error": "expected a JSON object"}))
            try:
                self.update(**changes)
            except ValueError as error:  # pydantic's ValidationError is a ValueError
                return respond(400, dumps({"error": str(error).splitlines()[0]}))
        # Secrets stay masked: the JSON of a SecretStr is "**********".
        return web.Response(body=self._config.model_dump_json(), content_type="application/json")

    async def _revoke_endpoint(self, request: web.Request) -> web.Response:
        self.revoke_tokens()
        return web.json_response({"revoked": True})

    async def _token_endpoint(self, request: web.Request) -> web.Response:
        self.stats.token_requests += 1
        issuer = self._rt.issuer
        if issuer is None:
            return respond(404, dumps({"error": "this fake provider does not use OAuth2"}))
        return await issuer.handle(request)


def _fingerprint(request: web.Request, body: bytes) -> int:
    return hash((request.method, request.raw_path, body))


def _server_ssl(tls: FakeTls) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file is not None:
        context.load_verify_locations(cafile=tls.client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
