"""Child processes the demo and the benchmarks run: the fake provider and workers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from streams.errors import CallstreamError


class ChildStartError(CallstreamError):
    """A child process did not start or answer in time."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Child:
    """A started child process with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 15.0, sig: int = signal.SIGTERM) -> int:
        """Signal the process and wait; SIGKILL when it does not exit in time."""
        if self.alive():
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def kill(self) -> None:
        self.stop(timeout_s=5, sig=signal.SIGKILL)


def spawn(name: str, argv: list[str], env: Mapping[str, str] | None, log_dir: Path) -> Child:
    log_path = log_dir / f"{name}.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        argv,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        start_new_session=True,  # Ctrl-C in the parent's terminal goes to the parent only
    )
    log_file.close()
    return Child(name, process, log_path)


def wait_http(child: Child, url: str, timeout_s: float) -> None:
    """Poll ``url`` until it answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise ChildStartError(
                f"{child.name} exited with {child.process.returncode}; last lines of "
                f"{child.log_path}:\n{child.log_tail()}"
            )
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(url, timeout=1.0)
            if response.status_code == 200:
                return
        time.sleep(0.1)
    raise ChildStartError(
        f"{child.name} did not answer at {url} within {timeout_s:.0f} s; see {child.log_path}"
    )


def start_fake_provider(log_dir: Path, *args: str) -> Child:
    """The fake provider as its own process (off the worker's core), on a free port."""
    port = free_port()
    child = spawn(
        "fake-provider",
        [sys.executable, "-m", "providers.fake", "--host", "127.0.0.1", "--port", str(port), *args],
        None,
        log_dir,
    )
    child.url = f"http://127.0.0.1:{port}"
    wait_http(child, f"{child.url}/_fake/stats", timeout_s=20)
    return child


def start_worker(log_dir: Path, env: Mapping[str, str], name: str = "worker") -> Child:
    """A `callstream worker` process; ready when its caller owns partitions."""
    port = free_port()
    child = spawn(
        name,
        [sys.executable, "-m", "streams", "worker"],
        {**env, "CALLSTREAM_WEB__PORT": str(port), "CALLSTREAM_WEB__HOST": "127.0.0.1"},
        log_dir,
    )
    child.url = f"http://127.0.0.1:{port}"
    return child


def wait_worker_ready(child: Child, timeout_s: float = 60.0) -> None:
    # /healthz answers 503 until the caller has joined its group and got its partitions.
    wait_http(child, f"{child.url}/healthz", timeout_s)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as path:
        yield Path(path)
