"""Errors raised by the broker launchers, each naming what the operator should do.

```
InfraError (operator_action)
 ├─ ToolMissing          java, mvn or the Tansu binary cannot be found
 ├─ JarResolutionError   Maven could not fetch the Kafka jars
 └─ BrokerStartError     a broker exited or never answered; carries the tail of its log
```
"""

from __future__ import annotations


class InfraError(Exception):
    """A launcher failure, shown as one line ending in an "Operator action" hint."""

    operator_action: str = "see the log lines above"

    def __init__(self, message: str, *, operator_action: str | None = None) -> None:
        self.message = message
        if operator_action is not None:
            self.operator_action = operator_action
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message} Operator action: {self.operator_action}"


class ToolMissing(InfraError):
    """An executable the launcher needs is not installed or not on PATH."""


class JarResolutionError(InfraError):
    """Maven failed to copy the Kafka runtime jars into the cache."""

    operator_action = (
        "check network access to Maven Central (or ~/.m2/settings.xml mirrors) and rerun; "
        "the full Maven output is in the log"
    )


class BrokerStartError(InfraError):
    """A broker process exited early or did not answer Kafka requests in time."""

    operator_action = (
        "read the broker log named above; the usual causes are a port already in use, "
        "a heap under 256m, or a data dir formatted for another cluster"
    )

    def __init__(
        self, message: str, *, log_tail: str = "", operator_action: str | None = None
    ) -> None:
        super().__init__(message, operator_action=operator_action)
        self.log_tail = log_tail

    def __str__(self) -> str:
        # The summary stays on one line; the tail follows so a CI failure explains itself.
        head = super().__str__()
        return f"{head}\n{self.log_tail}" if self.log_tail else head
