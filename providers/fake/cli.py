"""``python -m providers.fake``: run the fake provider as its own process; prints its URL."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import ValidationError

from providers.fake.config import FakeProviderConfig, FlavorName
from providers.fake.server import FakeProviderServer

_MIX_NAMES = {
    "500": "status_500",
    "503": "status_503",
    "404": "status_404",
    "400": "status_400",
    "429": "status_429",
    "timeout": "timeout",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m providers.fake",
        description="A fake third-party API for tests and benchmarks. Prints its URL when ready. "
        "Secrets may be given as env:NAME or file:/path.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument("--config", type=Path, help="FakeProviderConfig as a JSON or YAML file")
    p.add_argument("--config-json", help="FakeProviderConfig as JSON; flags below override it")
    p.add_argument("--flavor", choices=get_args(FlavorName))
    p.add_argument("--latency-ms", type=float)
    p.add_argument("--jitter-ms", type=float)
    p.add_argument("--error-mix", help="e.g. 500=0.01,503=0.02,404=0,400=0,429=0,timeout=0.001")
    p.add_argument("--retry-after-s", type=int, help="Retry-After of the error mix's 429s")
    p.add_argument("--seed", type=int)
    p.add_argument("--rate", type=float, help="rate limit, requests per second")
    p.add_argument("--burst", type=int, help="rate limit bucket size (default 1)")
    p.add_argument("--timeout-sleep-s", type=float, help="how long an injected timeout hangs")
    p.add_argument("--no-idempotency", action="store_true", help="never replay POSTs")
    p.add_argument("--tokens-per-min", type=int, help="OpenAI flavor token budget")
    auth = p.add_argument_group("auth (at most one)")
    auth.add_argument("--api-key", help="demand this key (header X-API-Key unless told)")
    auth.add_argument("--api-key-header", default="X-API-Key")
    auth.add_argument("--api-key-query", metavar="NAME", help="take the key from ?NAME=")
    auth.add_argument("--bearer", metavar="TOKEN")
    auth.add_argument("--basic", metavar="USER:PASSWORD")
    auth.add_argument("--hmac", metavar="KEY_ID:SECRET")
    auth.add_argument("--oauth2", metavar="CLIENT_ID:SECRET", help="serve /oauth/token")
    auth.add_argument("--token-expires-in", type=float, help="OAuth2 token lifetime, seconds")
    auth.add_argument("--auth-json", help="the server's auth config as JSON")
    tls = p.add_argument_group("TLS")
    tls.add_argument("--tls-cert", type=Path)
    tls.add_argument("--tls-key", type=Path)
    tls.add_argument("--tls-client-ca", type=Path, help="require client certificates")
    p.add_argument("--cpu", type=int, help="pin to this CPU (keep it off the worker's core)")
    p.add_argument(
        "--event-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="uvloop (default) costs about half the CPU per request of the standard loop",
    )
    return p


def config_from_args(args: argparse.Namespace) -> FakeProviderConfig:
    """Merge --config, --config-json and the flags (flags win).

    Raises:
        ValueError: a malformed flag or an invalid config (pydantic's ValidationError).
    """
    data: dict[str, Any] = {}
    if args.config is not None:
        text = args.config.read_text()
        loaded = json.loads(text) if args.config.suffix == ".json" else yaml.safe_load(text)
        data.update(loaded or {})
    if args.config_json:
        data.update(json.loads(args.config_json))
    flags = {
        "flavor": args.flavor,
        "latency_ms": args.latency_ms,
        "jitter_ms": args.jitter_ms,
        "seed": args.seed,
        "timeout_sleep_s": args.timeout_sleep_s,
        "tokens_per_min": args.tokens_per_min,
    }
    data.update({key: value for key, value in flags.items() if value is not None})
    if args.no_idempotency:
        data["idempotency"] = False
    if args.error_mix:
        data["error_mix"] = _error_mix(args.error_mix)
    if args.retry_after_s is not None:
        data["error_mix"] = {**data.get("error_mix", {}), "retry_after_s": args.retry_after_s}
    if args.rate is not None:
        data["rate_limit"] = {"rate_per_s": args.rate, "burst": args.burst or 1}
    if (auth := _auth(args)) is not None:
        data["auth"] = auth
    if args.tls_cert or args.tls_key:
        data["tls"] = {
            "cert_file": args.tls_cert,
            "key_file": args.tls_key,
            "client_ca_file": args.tls_client_ca,
        }
    return FakeProviderConfig.model_validate(data)


def _error_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in filter(None, text.split(",")):
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in _MIX_NAMES:
            raise ValueError(f"--error-mix: {part!r} is not one of {', '.join(_MIX_NAMES)}=P")
        mix[_MIX_NAMES[name.strip()]] = float(value)
    return mix


def _pair(flag: str, value: str) -> tuple[str, str]:
    first, sep, second = value.partition(":")
    if not sep or not first:
        raise ValueError(f"{flag} expects FIRST:SECOND")  # never echo the value: it is secret
    return first, second


def _auth(args: argparse.Namespace) -> dict[str, Any] | None:
    chosen = [
        f for f in ("api_key", "bearer", "basic", "hmac", "oauth2", "auth_json") if getattr(args, f)
    ]
    if len(chosen) > 1:
        raise ValueError(f"choose one auth flag, got {', '.join(chosen)}")
    if args.auth_json:
        auth: dict[str, Any] = json.loads(args.auth_json)
        return auth
    if args.api_key:
        if args.api_key_query:
            return {
                "type": "api_key",
                "in": "query",
                "name": args.api_key_query,
                "key": args.api_key,
            }
        return {"type": "api_key", "in": "header", "name": args.api_key_header, "key": args.api_key}
    if args.bearer:
        return {"type": "bearer", "token": args.bearer}
    if args.basic:
        user, password = _pair("--basic", args.basic)
        return {"type": "basic", "username": user, "password": password}
    if args.hmac:
        key_id, secret = _pair("--hmac", args.hmac)
        return {"type": "hmac", "key_id": key_id, "secret": secret}
    if args.oauth2:
        client_id, secret = _pair("--oauth2", args.oauth2)
        auth = {
            "type": "oauth2_client_credentials",
            "client_id": client_id,
            "client_secret": secret,
        }
        if args.token_expires_in is not None:
            auth["token_expires_in_s"] = args.token_expires_in
        return auth
    return None


async def serve(config: FakeProviderConfig, *, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT; print the URL on stdout once listening."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with FakeProviderServer(config, host=host, port=port) as server:
        print(server.url, flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValidationError as error:
        parser.error(f"invalid config: {error}")
    except (ValueError, OSError) as error:
        parser.error(str(error))
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    loop_factory = None
    if args.event_loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(config, host=args.host, port=args.port))
    except OSError as error:  # e.g. the port is taken
        print(f"fake provider: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    return 0
