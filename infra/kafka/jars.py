"""Fetching the Apache Kafka jars from Maven Central once, into a per-user cache."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from infra.errors import JarResolutionError, ToolMissing

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.4.0"
POM = Path(__file__).with_name("pom.xml")
CACHE_ENV = "CALLSTREAM_CACHE_DIR"
_MARKER = "lib.sha256"
# A cold ~/.m2 took 14-23 s here; the limit only catches a Maven that hangs on a dead mirror.
_MAVEN_TIMEOUT_S = 900


def cache_dir() -> Path:
    """Jar cache for this Kafka version: in `$CALLSTREAM_CACHE_DIR` or ~/.cache/callstream."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "callstream"
    return Path(root) / f"kafka-{KAFKA_VERSION}"


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def require_tool(name: str, *, install_hint: str) -> str:
    """Return the path of executable `name` on PATH, or raise `ToolMissing` saying how to get it."""
    found = shutil.which(name)
    if found is None:
        raise ToolMissing(f"`{name}` is not on PATH.", operator_action=install_hint)
    return found


def _run_maven(mvn: str, out_dir: Path) -> None:
    command = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={out_dir}",
        "-DincludeScope=runtime",
        "-f",
        str(POM),
    ]
    logger.info("Resolving Kafka %s jars with Maven into %s", KAFKA_VERSION, out_dir)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_MAVEN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise JarResolutionError(f"Maven did not finish within {_MAVEN_TIMEOUT_S} s.") from exc
    if done.returncode != 0:
        output = done.stdout + done.stderr
        logger.error("Maven output:\n%s", output)
        errors = [line for line in output.splitlines() if line.startswith("[ERROR]")]
        first = errors[0] if errors else f"exit status {done.returncode}"
        raise JarResolutionError(f"Maven could not copy the Kafka jars: {first}")


def resolve_jars(cache: Path | None = None) -> Path:
    """Return a directory holding the Kafka broker's runtime jars, fetching them on first use.

    The first call runs Maven on infra/kafka/pom.xml; later calls only read a marker holding
    the pom's digest, so they need neither Maven nor the network. A lock file keeps parallel
    test sessions from resolving into the same directory at once.

    Args:
        cache: the cache directory; `cache_dir()` when omitted.

    Returns:
        The `lib` directory, for a `-cp lib/*` class path.

    Raises:
        ToolMissing: `mvn` is needed and not installed.
        JarResolutionError: Maven failed.
    """
    root = cache or cache_dir()
    lib, marker = root / "lib", root / _MARKER
    digest = _pom_digest()
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text().strip() == digest and lib.is_dir():
            return lib
        mvn = require_tool("mvn", install_hint="install Maven 3.8+ (`apt-get install maven`).")
        require_tool(
            "java",
            install_hint="install a Java 17+ runtime (`apt-get install openjdk-17-jre-headless`).",
        )
        started = time.monotonic()
        staging = root / f"lib.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            _run_maven(mvn, staging)
            # Replacing the whole directory drops jars a previous pom needed and this one does not.
            shutil.rmtree(lib, ignore_errors=True)
            staging.rename(lib)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        marker.write_text(digest + "\n")
        logger.info("Kafka jars ready in %s after %.1f s", lib, time.monotonic() - started)
        return lib
