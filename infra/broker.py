"""The `Broker` seam both launchers satisfy, and one function to start either."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self

from infra.embedded import EmbeddedBroker
from infra.kafka import KafkaCluster
from infra.kafka.node import ensure_port_free
from infra.ports import LOOPBACK

BrokerKind = Literal["embedded", "kafka"]


class Broker(Protocol):
    """A broker process (or cluster) this machine runs, reachable at `bootstrap_servers`."""

    @property
    def bootstrap_servers(self) -> str: ...

    @property
    def pids(self) -> tuple[int, ...]:
        """The process ids of the running broker processes (for CPU accounting)."""
        ...

    def start(self) -> Self: ...

    def stop(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def start_broker(
    kind: BrokerKind, nodes: int = 1, port: int | None = None, data_dir: Path | str | None = None
) -> Broker:
    """Start a broker of `kind` and return it running; call `stop()` or use it in `with`.

    Args:
        kind: "kafka" for Apache Kafka from Maven jars (needs Java), "embedded" for in-memory
            Tansu (no Java, but no transactions, idempotence or persistence).
        nodes: Kafka nodes (1 or 3); the embedded broker is always one node.
        port: the first node's client port; a free ephemeral port when omitted.
        data_dir: Kafka's data dir, kept for a later restart; the embedded broker has none.

    Raises:
        ValueError: `nodes` or `data_dir` asked of the embedded broker.
        PortInUse: `port` is taken: a broker started there would die on bind while whatever
            holds it answered in its place (checked before anything is created).
        InfraError: the broker could not be started (see `infra.errors`).
    """
    if port is not None:
        ensure_port_free(LOOPBACK, port)
    if kind == "embedded":
        if nodes != 1 or data_dir is not None:
            raise ValueError(
                "the embedded broker is a single in-memory node: "
                "it takes neither nodes nor data_dir"
            )
        return EmbeddedBroker(port=port).start()
    return KafkaCluster(nodes=nodes, port=port, data_dir=data_dir).start()
