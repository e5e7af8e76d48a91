"""The fake provider as a child process (off the caller's core), for tests and benchmarks."""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from providers.fake.config import FakeProviderConfig

# The directory holding the ``providers`` package, so the child imports the same code.
_SOURCE_ROOT = str(Path(__file__).resolve().parents[2])


class FakeProviderStartError(RuntimeError):
    """The child did not print its URL in time; the message carries its stderr tail."""


class FakeProviderProcess:
    """``python -m providers.fake`` started with a config; sync and async context manager.

    with FakeProviderProcess(FakeProviderConfig(latency_ms=50), cpu=1) as fake:
        fake.url; fake.stats()
    """

    def __init__(
        self,
        config: FakeProviderConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cpu: int | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout_s: float = 20.0,
    ) -> None:
        self.config = config or FakeProviderConfig()
        self._argv = [
            sys.executable,
            "-m",
            "providers.fake",
            "--host",
            host,
            "--port",
            str(port),
            "--config-json",
            self.config.to_json_with_secrets(),
            *(["--cpu", str(cpu)] if cpu is not None else []),
            *extra_args,
        ]
        self._startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the fake provider process is not started")
        return self._url

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the fake provider process is not started")
        return self._process.pid

    def start(self) -> str:
        """Start the child and wait for its URL line.

        Raises:
            FakeProviderStartError: it exited or stayed silent past the startup timeout.
        """
        # Closed in stop(): it outlives this call, holding the child's stderr for diagnostics.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [_SOURCE_ROOT, os.environ.get("PYTHONPATH")])
            ),
        }
        self._process = subprocess.Popen(
            self._argv,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        try:
            self._url = self._read_url()
        except BaseException:
            self.stop()
            raise
        return self._url

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if process.stdout is not None:
            process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        return process.returncode

    def stats(self, *, with_keys: bool = False) -> dict[str, Any]:
        """``GET /_fake/stats`` (blocking; use ``astats`` inside an event loop)."""
        return self._control("GET", f"/_fake/stats{'?keys=1' if with_keys else ''}")

    async def astats(self, *, with_keys: bool = False) -> dict[str, Any]:
        return await asyncio.to_thread(self.stats, with_keys=with_keys)

    def reset(self) -> None:
        self._control("POST", "/_fake/reset")

    def update(self, **changes: Any) -> dict[str, Any]:
        """``POST /_fake/config``: change latency, error mix, limits... of the running child."""
        return self._control("POST", "/_fake/config", changes)

    def __enter__(self) -> FakeProviderProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeProviderProcess:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)

    def _read_url(self) -> str:
        process = self._process
        assert process is not None
        assert process.stdout is not None
        fd = process.stdout.fileno()
        deadline = time.monotonic() + self._startup_timeout_s
        buffer = b""
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FakeProviderStartError(self._failure("printed no URL in time"))
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    process.wait(5)
                    raise FakeProviderStartError(self._failure(f"exited with {process.returncode}"))
                buffer += chunk
        return buffer.split(b"\n", 1)[0].decode().strip()

    def _failure(self, what: str) -> str:
        tail = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            tail = self._stderr.read().decode(errors="replace")[-2000:]
        return f"fake provider {what}; stderr:\n{tail}"

    def _control(self, method: str, path: str, payload: object = None) -> dict[str, Any]:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(  # noqa: S310 (our own child on loopback, http only)
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            result: dict[str, Any] = json.loads(response.read())
            return result
