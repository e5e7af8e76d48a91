"""server.properties for KRaft nodes that are both broker and controller, as plain data."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.ports import LOOPBACK


@dataclass(frozen=True)
class NodeAddress:
    """Where one combined node listens: clients on `port`, the KRaft quorum on `controller_port`,
    and, on a secured node, the readiness probe on its own PLAINTEXT `probe_port`."""

    node_id: int
    port: int
    controller_port: int
    host: str = LOOPBACK
    probe_port: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def probe(self) -> tuple[str, int]:
        """Where a plain Metadata request gets an answer: the probe port, else the client port."""
        return self.host, self.probe_port if self.probe_port is not None else self.port


def quorum_voters(nodes: Sequence[NodeAddress]) -> str:
    """The static `controller.quorum.voters` value, e.g. `1@127.0.0.1:9093,2@...`."""
    return ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in nodes)


def server_properties(
    node: NodeAddress,
    cluster: Sequence[NodeAddress],
    *,
    log_dir: Path,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The configuration of `node` within `cluster` (which includes `node`).

    A static voter list, rather than `--standalone`'s dynamic quorum, lets a restart on the same
    data dir pick new ports: the voters come from this file, not from the metadata log.

    Args:
        node: the node to configure.
        cluster: every node of the cluster, in node id order.
        log_dir: where this node keeps its partitions and metadata log.
        overrides: keys to add or replace, applied last.
    """
    size = len(cluster)
    replicas = str(min(3, size))
    min_isr = str(min(2, size))
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": quorum_voters(cluster),
        "listeners": f"PLAINTEXT://{node.host}:{node.port},CONTROLLER://{node.host}:"
        f"{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{node.host}:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        # Internal topics cannot have more replicas than there are brokers.
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        "default.replication.factor": replicas,
        # Tests start consumer groups constantly; the 3 s default delay would stall each one.
        "group.initial.rebalance.delay.ms": "0",
    }
    if size > 1:
        # Fence a dead node in ~3 s instead of 9 s so partition leadership moves on quickly.
        props["broker.session.timeout.ms"] = "3000"
        props["broker.heartbeat.interval.ms"] = "500"
    props.update(overrides or {})
    return props


def _escape(value: str) -> str:
    # java.util.Properties treats a backslash as an escape and newlines as record ends.
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def render(props: Mapping[str, str]) -> str:
    """Write `props` in java.util.Properties form, one `key=value` per line."""
    lines = ["# Written by callstream infra/kafka; rewritten on every start."]
    lines += [f"{key}={_escape(value)}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def new_cluster_id() -> str:
    """A random Kafka cluster id: 16 bytes in unpadded URL-safe base64, as StorageTool makes.

    Kafka's own generator skips ids starting with "-" so they cannot be mistaken for a CLI flag.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id
