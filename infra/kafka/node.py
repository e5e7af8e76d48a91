"""One Apache Kafka JVM: its files under the data dir, its command lines, its process."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from infra.errors import BrokerStartError, InfraError, ToolMissing
from infra.kafka.properties import NodeAddress, render, server_properties
from infra.kafka.security import ScramUsers, secure_properties
from infra.process import quote_logs

logger = logging.getLogger(__name__)

LOG4J_CONFIG = Path(__file__).with_name("log4j2.xml")
# StorageTool only writes a few files; a full broker heap would just slow its start.
_TOOL_HEAP = "64m"


def find_java() -> str:
    """`$JAVA_HOME/bin/java` when set, else `java` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    on_path = shutil.which("java")
    if on_path is not None:
        return on_path
    raise ToolMissing(
        "`java` is not on PATH and JAVA_HOME is not set.",
        operator_action="install a Java 17+ runtime (`apt-get install openjdk-17-jre-headless`) "
        "or point JAVA_HOME at one.",
    )


class PortInUse(InfraError):
    """A port a broker must listen on is taken: the broker would die on bind while whatever
    holds the port answers in its place."""

    operator_action = "stop what listens there, or choose another port (--port)"


def ensure_port_free(host: str, port: int) -> None:
    """Raises:
    PortInUse: something already listens on ``host:port`` (another broker, most likely).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the brokers' own listeners: a port in TIME_WAIT is free to them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortInUse(f"port {port} on {host} is already in use.") from None


class KafkaNode:
    """A combined broker+controller living in `home`: config, data, logs and its JVM."""

    def __init__(
        self,
        address: NodeAddress,
        *,
        home: Path,
        java: str,
        lib: Path,
        heap: str,
        sasl: ScramUsers | None = None,
    ) -> None:
        self.address = address
        self.home = home
        self._java = java
        self._lib = lib
        self._heap = heap
        self._sasl = sasl
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.home / "server.properties"

    @property
    def data_path(self) -> Path:
        return self.home / "data"

    @property
    def logs_path(self) -> Path:
        return self.home / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs_path / "server.log"

    @property
    def console_log(self) -> Path:
        """The JVM's stdout and stderr: OutOfMemoryError and class-path errors land here."""
        return self.logs_path / "console.log"

    @property
    def formatted(self) -> bool:
        return (self.data_path / "meta.properties").is_file()

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def write_config(
        self, cluster: Sequence[NodeAddress], overrides: Mapping[str, str] | None
    ) -> None:
        self.logs_path.mkdir(parents=True, exist_ok=True)
        if self._sasl is not None:  # the caller's overrides still come last
            overrides = {**secure_properties(self.address, self._sasl), **(overrides or {})}
        props = server_properties(
            self.address, cluster, log_dir=self.data_path, overrides=overrides
        )
        self.config_path.write_text(render(props), encoding="utf-8")

    def _java_command(self, heap: str, main_class: str, *args: str) -> list[str]:
        return [
            self._java,
            f"-Xmx{heap}",
            f"-Xms{heap}",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            # log4j's own hook would stop logging before Kafka's shutdown lines are written.
            "-Dlog4j2.shutdownHookEnabled=false",
            f"-Dkafka.logs.dir={self.logs_path}",
            "-cp",
            f"{self._lib}/*",
            main_class,
            *args,
        ]

    def format_command(self, cluster_id: str) -> list[str]:
        """StorageTool `format`; `--ignore-formatted` once the node has been formatted before.

        A node formatted with another cluster id still fails, which is why the id is kept
        beside the data. A secured node's SCRAM users are created here, in the metadata log
        (only on the first format: later runs keep the users they find).
        """
        args = ["format", "-t", cluster_id, "-c", str(self.config_path)]
        if self._sasl is not None:
            args += self._sasl.format_args()
        if self.formatted:
            args.append("--ignore-formatted")
        return self._java_command(_TOOL_HEAP, "kafka.tools.StorageTool", *args)

    def launch(self) -> None:
        """Start the broker JVM in the background, its console output appended to a log file.

        Raises:
            PortInUse: a port of the node is taken (the JVM would exit on bind, unnoticed
                while another broker answers on it).
        """
        for port in (self.address.port, self.address.controller_port, self.address.probe_port):
            if port is not None:
                ensure_port_free(self.address.host, port)
        command = self._java_command(self._heap, "kafka.Kafka", str(self.config_path))
        with self.console_log.open("ab") as console:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT
            )
        logger.debug(
            "Kafka node %s launched as pid %s: %s", self.address.node_id, self.process.pid, command
        )

    def check_alive(self) -> None:
        """Raise `BrokerStartError` with the log tails if the JVM has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise self.start_error(f"exited with status {self.process.returncode} while starting")

    def start_error(self, what: str) -> BrokerStartError:
        return BrokerStartError(
            f"Kafka node {self.address.node_id} ({self.address.bootstrap}) {what}; "
            f"log: {self.server_log}.",
            # The console gets only ERROR lines, so the cause comes first.
            log_tail=quote_logs([self.console_log, self.server_log]),
        )
