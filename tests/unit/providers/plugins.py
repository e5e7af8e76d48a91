"""Objects the registry tests expose through fake entry points."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers.base import Provider
from providers.declaration import ProviderSpec
from providers.errors import ProviderUnavailable
from providers.response import ProviderReply

SPEC = ProviderSpec.model_validate(
    {"name": "plain", "base_url": "https://plain.test", "operations": {"ping": {"path": "/"}}}
)


class ShoutingProvider(Provider):
    """A code-defined provider: 200 answers that say "maintenance" are retriable."""

    default_spec = ProviderSpec.model_validate(
        {
            "name": "shouting",
            "base_url": "https://shout.test",
            "operations": {"ping": {"path": "/ping"}},
        }
    )

    def classify(
        self, status: int, headers: Mapping[str, str], body: bytes, *, operation: str,
        now: float | None = None, latency_s: float = 0.0, sends: int = 1,
    ) -> ProviderReply:  # fmt: skip
        if body == b"maintenance":
            raise ProviderUnavailable("maintenance", http_status=status)
        return super().classify(status, headers, body, operation=operation, now=now,
                                latency_s=latency_s, sends=sends)  # fmt: skip


def make_spec() -> ProviderSpec:
    return SPEC.with_overrides({"name": "made"})


def make_broken() -> Any:
    raise RuntimeError("plugin exploded")


NOT_A_PROVIDER = 42
