"""Errors of the pipeline's own plumbing.

```
CallstreamError
 ├─ ConfigurationError   bad settings, missing topic, unknown provider in settings: fatal,
 │   │                   the worker stops on purpose with one clear line
 │   └─ BrokerUnavailable  no Kafka answers at the configured bootstrap servers
 ├─ PublishError         an outcome could not be written to its topic (the offset is not
 │                       committed, so the request is processed again after a restart)
 └─ CallError            the SDK's ``CallstreamClient.call`` got no result for a request
     ├─ RequestDeadLettered  it became a dead letter (``reason``, ``letter``)
     └─ CallTimeout          no outcome arrived in time
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schemas.models import DeadLetterEvent


class CallstreamError(Exception):
    """Base class for errors that end with a clear message, not a traceback."""


class ConfigurationError(CallstreamError):
    """A setting, topic or provider declaration is wrong. Operator action: fix the config."""


class BrokerUnavailable(ConfigurationError):
    """No broker answers at the bootstrap servers. Operator action: start one or fix the
    address."""


class PublishError(CallstreamError):
    """An outcome could not be published."""


class CallError(CallstreamError):
    """``CallstreamClient.call`` ended without a result; ``request_id`` says for which request."""

    def __init__(self, message: str, *, request_id: str) -> None:
        super().__init__(message)
        self.request_id = request_id


class RequestDeadLettered(CallError):
    """The request became a dead letter: ``reason`` is the letter's (``not_found``...), and
    ``letter`` the whole DeadLetterEvent."""

    def __init__(
        self, message: str, *, request_id: str, reason: str, letter: DeadLetterEvent
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.reason = reason
        self.letter = letter


class CallTimeout(CallError):
    """No outcome arrived within the timeout (the request may still be waiting or running)."""
