"""``FAKE_PROVIDER``: the declaration of the fake provider's generic API (entry point ``fake``)."""

from __future__ import annotations

from pydantic import SecretStr

from providers.auth.config import ApiKeyAuth
from providers.declaration import (
    BodySpec,
    CacheSpec,
    CheckSpec,
    ErrorShape,
    LimitsSpec,
    OperationSpec,
    ParamSpec,
    ProviderSpec,
    RateLimitHeaders,
)

# The per-request directives (providers/fake/directives.py) a workload may pass.
_DIRECTIVE_PARAMS = {
    "fake_status": ParamSpec(pattern=r"[2-5][0-9][0-9]|timeout"),
    "fake_delay_ms": ParamSpec(pattern=r"[0-9]{1,7}(\.[0-9]+)?"),
    "fake_fail_first": ParamSpec(pattern=r"[0-9]{1,6}"),
    "fake_retry_after_s": ParamSpec(pattern=r"[0-9]{1,6}"),
    "fake_body_bytes": ParamSpec(pattern=r"[0-9]{1,7}"),
    "fake_cache_control": ParamSpec(pattern=r"[a-z0-9=, -]{1,100}"),
}
_DIRECTIVE_HEADERS = (
    "X-Fake-Status",
    "X-Fake-Delay-Ms",
    "X-Fake-Fail-First",
    "X-Fake-Retry-After-S",
)
_ITEM_ID = {"item_id": ParamSpec(pattern=r"[A-Za-z0-9._~-]{1,128}")}

FAKE_PROVIDER = ProviderSpec(
    name="fake",
    description="The fake provider (python -m providers.fake): generic items and echo API",
    # Point it at a running fake: CALLSTREAM_PROVIDERS__FAKE__BASE_URL=http://127.0.0.1:PORT
    base_url="http://127.0.0.1:8080",
    # `python -m providers.fake --api-key K` demands this header; without it the header is
    # ignored. The key is a test credential; settings replace it (CALLSTREAM_..._SECRET).
    auth=ApiKeyAuth(in_="header", name="X-API-Key", key=SecretStr("fake-api-key")),
    operations={
        # Not cached: the throughput benchmark calls it (and echo) to reach the provider.
        "get_item": OperationSpec(
            method="GET",
            path="/v1/items/{item_id}",
            path_params=_ITEM_ID,
            query_params=_DIRECTIVE_PARAMS,
            allowed_headers=_DIRECTIVE_HEADERS,
        ),
        # The same item, cached per tenant and revalidated with its ETag (issue 23).
        "get_cached_item": OperationSpec(
            method="GET",
            path="/v1/items/{item_id}",
            path_params=_ITEM_ID,
            query_params=_DIRECTIVE_PARAMS,
            allowed_headers=_DIRECTIVE_HEADERS,
            cache=CacheSpec(ttl_s=60, stale_while_revalidate_s=30, stale_if_error_s=300),
        ),
        # The same item as public data: one cache entry for every tenant.
        "get_public_item": OperationSpec(
            method="GET",
            path="/v1/items/{item_id}",
            path_params=_ITEM_ID,
            query_params=_DIRECTIVE_PARAMS,
            allowed_headers=_DIRECTIVE_HEADERS,
            cache=CacheSpec(
                ttl_s=60, shared=True, stale_while_revalidate_s=30, stale_if_error_s=300
            ),
        ),
        "echo": OperationSpec(
            method="POST",
            path="/v1/echo",
            query_params=_DIRECTIVE_PARAMS,
            body=BodySpec(
                content_types=("application/json", "application/octet-stream", "text/plain")
            ),
            allowed_headers=_DIRECTIVE_HEADERS,
        ),
    },
    # The server is unlimited unless started with --rate: the default must not be what
    # throttles a throughput benchmark. Tests that exercise limits override both figures.
    limits=LimitsSpec(rate_per_s=50_000, burst=5_000),
    idempotency_header="Idempotency-Key",
    request_id_header="X-Request-Id",
    rate_limit_headers={
        "requests": RateLimitHeaders(
            limit="X-RateLimit-Limit",
            remaining="X-RateLimit-Remaining",
            reset="X-RateLimit-Reset",
            reset_kind="delta_s",
        )
    },
    error_shape=ErrorShape(message_field="error.message"),
    check=CheckSpec(operation="get_item", params={"item_id": "check"}),
)
