"""A local Apache Kafka cluster of 1 or 3 combined KRaft nodes, for tests and local runs."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from infra.errors import BrokerStartError
from infra.kafka.jars import resolve_jars
from infra.kafka.node import KafkaNode, find_java
from infra.kafka.properties import NodeAddress, new_cluster_id
from infra.kafka.security import ScramUsers
from infra.ports import free_port
from infra.probe import ClusterView, wait_for
from infra.process import STOP_GRACE_S, forget_at_exit, stop_at_exit, terminate_all

logger = logging.getLogger(__name__)

CLUSTER_ID_FILE = "cluster.id"
# Signals after which kill_node waits for the process to go; SIGSTOP and friends only pause it.
_TERMINATING = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT})
_FORMAT_TIMEOUT_S = 120.0


class KafkaCluster:
    """Apache Kafka 4.4 nodes on 127.0.0.1, each both broker and controller.

    Example:
        with KafkaCluster(nodes=3) as cluster:
            use(cluster.bootstrap_servers)
            cluster.kill_node(0)

    Args:
        nodes: how many nodes; 1 and 3 are the measured shapes (a 3-node cluster survives one
            node's loss).
        port: the client port of the first node; free ephemeral ports when omitted, and for
            every other listener.
        data_dir: where configs, data and logs live, reused by a later cluster given the same
            path; a temporary directory, removed by `stop()`, when omitted.
        heap: the JVM heap per node (`-Xmx`/`-Xms`); 256m works, 128m does not.
        overrides: server.properties keys to add or replace on every node.
        start_timeout_s: how long `start()` waits for every node to answer.
        sasl: secure the cluster (`infra.kafka.security`): clients must authenticate with
            SCRAM-SHA-256 as one of these users, and ACLs decide what each may do. None (the
            default) is a PLAINTEXT cluster that lets anyone do anything.
    """

    def __init__(
        self,
        nodes: int = 1,
        port: int | None = None,
        data_dir: Path | str | None = None,
        heap: str = "256m",
        *,
        overrides: Mapping[str, str] | None = None,
        start_timeout_s: float = 90.0,
        sasl: ScramUsers | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError(f"a cluster needs at least one node, not {nodes}")
        self._size = nodes
        self._port = port
        self._requested_dir = Path(data_dir) if data_dir is not None else None
        self._heap = heap
        self._overrides = dict(overrides or {})
        self._start_timeout_s = start_timeout_s
        self._sasl = sasl
        self._data_dir: Path | None = None
        self._owns_data_dir = False
        self._nodes: list[KafkaNode] = []
        # The ports of the last successful start, reused by the next start of this object.
        self._addresses_in_use: list[NodeAddress] | None = None

    def __repr__(self) -> str:
        running = sum(node.is_running() for node in self._nodes)
        return f"<KafkaCluster nodes={self._size} running={running} data_dir={self._data_dir}>"

    @property
    def nodes(self) -> Sequence[KafkaNode]:
        """The nodes, index i holding node id i + 1; after a failed start, kept for their logs."""
        return tuple(self._nodes)

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise RuntimeError("the cluster has not been started")
        return self._data_dir

    @property
    def bootstrap_servers(self) -> str:
        """Every node's client address, comma-separated, as Kafka clients expect."""
        if not self._nodes:
            raise RuntimeError("the cluster has not been started")
        return ",".join(node.address.bootstrap for node in self._nodes)

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(node.process.pid for node in self._nodes if node.process and node.is_running())

    def start(self) -> Self:
        """Write configs, format storage, launch every node and wait until all of them answer.

        Raises:
            ToolMissing: `java` or `mvn` (on the first run) is missing.
            JarResolutionError: Maven could not fetch the jars.
            BrokerStartError: a node exited or did not answer in time; carries its log tail.
        """
        if any(node.is_running() for node in self._nodes):
            raise RuntimeError(f"{self!r} is already running")
        started = time.monotonic()
        java, lib = find_java(), resolve_jars()
        data_dir = self._prepare_data_dir()
        addresses = self._addresses()
        self._nodes = [
            KafkaNode(
                address,
                home=data_dir / f"node-{address.node_id}",
                java=java,
                lib=lib,
                heap=self._heap,
                sasl=self._sasl,
            )
            for address in addresses
        ]
        try:
            for node in self._nodes:
                node.write_config(addresses, self._overrides)
            self._format(self._cluster_id(data_dir))
            logger.debug("Kafka storage formatted after %.1f s", time.monotonic() - started)
            for node in self._nodes:
                node.launch()
            stop_at_exit(self)
            self._wait_ready(self._nodes)
        except BaseException:
            self._abort()
            raise
        self._addresses_in_use = addresses
        logger.info(
            "Kafka cluster of %s ready at %s in %.1f s (logs: %s/node-*/logs)",
            self._size,
            self.bootstrap_servers,
            time.monotonic() - started,
            data_dir,
        )
        return self

    def stop(self) -> None:
        """Stop every node together (SIGTERM, then SIGKILL after 10 s); drop a temporary dir."""
        terminate_all(node.process for node in self._nodes if node.process is not None)
        forget_at_exit(self)
        if self._owns_data_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir, self._owns_data_dir = None, False
            self._nodes, self._addresses_in_use = [], None

    def kill_node(self, index: int, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` to node `index` (0-based); for SIGKILL, SIGTERM and SIGINT, wait for it to go.

        Raises:
            TimeoutError: the node was still running 10 s after a terminating signal (the last
                node of a quorum ignores SIGTERM).
        """
        process = self._running_process(index)
        process.send_signal(sig)
        if sig in _TERMINATING:
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired as exc:
                raise TimeoutError(
                    f"Kafka node {index} ignored {sig.name} for {STOP_GRACE_S:.0f} s"
                ) from exc
        logger.info("Sent %s to Kafka node %s (pid %s)", sig.name, index, process.pid)

    def start_node(self, index: int) -> None:
        """Relaunch node `index` (0-based) on its old ports and wait until it is back in service."""
        node = self._nodes[index]
        if node.is_running():
            raise RuntimeError(f"Kafka node {index} is already running")
        node.launch()
        self._wait_ready([node])
        logger.info("Kafka node %s is back at %s", index, node.address.bootstrap)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _running_process(self, index: int) -> subprocess.Popen[bytes]:
        process = self._nodes[index].process
        if process is None or process.poll() is not None:
            raise RuntimeError(f"Kafka node {index} is not running")
        return process

    def _prepare_data_dir(self) -> Path:
        if self._data_dir is None:
            if self._requested_dir is None:
                self._data_dir = Path(tempfile.mkdtemp(prefix="callstream-kafka-"))
                self._owns_data_dir = True
            else:
                self._data_dir = self._requested_dir
        self._data_dir.mkdir(parents=True, exist_ok=True)
        return self._data_dir

    def _addresses(self) -> list[NodeAddress]:
        # A restart of this object keeps its ports, so clients holding the old bootstrap still work.
        if self._addresses_in_use is not None:
            return self._addresses_in_use
        ports = [self._port or free_port()] + [free_port() for _ in range(self._size - 1)]
        return [
            NodeAddress(
                node_id=i + 1,
                port=port,
                controller_port=free_port(),
                probe_port=free_port() if self._sasl is not None else None,
            )
            for i, port in enumerate(ports)
        ]

    @staticmethod
    def _cluster_id(data_dir: Path) -> str:
        # Reformatting a node with a different id fails with "Invalid cluster.id", so the id
        # stays with the data it belongs to.
        path = data_dir / CLUSTER_ID_FILE
        if path.is_file():
            return path.read_text(encoding="utf-8").strip()
        cluster_id = new_cluster_id()
        path.write_text(cluster_id + "\n", encoding="utf-8")
        return cluster_id

    def _format(self, cluster_id: str) -> None:
        # One JVM per node, run side by side: each takes about a second to start.
        runs = [
            (
                node,
                subprocess.Popen(
                    node.format_command(cluster_id),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                ),
            )
            for node in self._nodes
        ]
        for node, proc in runs:
            output, _ = proc.communicate(timeout=_FORMAT_TIMEOUT_S)
            if proc.returncode != 0:
                text = output.decode("utf-8", errors="replace").strip()
                raise BrokerStartError(
                    f"formatting Kafka node {node.address.node_id} in {node.data_path} failed "
                    f"(exit {proc.returncode}): {text.splitlines()[-1] if text else 'no output'}",
                    log_tail=text,
                    operator_action="if the data dir belongs to another cluster, remove it or "
                    "pass a fresh data_dir",
                )

    def _wait_ready(self, waiting: Sequence[KafkaNode]) -> None:
        # A broker lists only unfenced brokers in Metadata, so a node that names every running
        # node, itself included, has caught up with the quorum and accepts clients.
        expected = frozenset(n.address.node_id for n in self._nodes if n.is_running())

        def complete(view: ClusterView) -> bool:
            return expected <= view.broker_ids

        def check_alive() -> None:
            for node in waiting:
                node.check_alive()

        deadline = time.monotonic() + self._start_timeout_s
        for node in waiting:
            try:
                wait_for(
                    *node.address.probe,
                    ready=complete,
                    timeout_s=max(0.0, deadline - time.monotonic()),
                    check_alive=check_alive,
                )
            except TimeoutError as exc:
                raise node.start_error(
                    f"did not list brokers {sorted(expected)} within {self._start_timeout_s:.0f} s"
                ) from exc

    def _abort(self) -> None:
        terminate_all(node.process for node in self._nodes if node.process is not None)
        forget_at_exit(self)
        logger.error(
            "Kafka cluster failed to start; configs and logs kept in %s/node-*/", self._data_dir
        )
        # The caller never got a running cluster, so nothing else will call stop(); the
        # temporary dir is left for reading and the next start() makes a fresh one.
        self._data_dir, self._owns_data_dir, self._addresses_in_use = None, False, None
