"""Choosing the broker an integration test session runs against: external, Docker, or infra."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator

from infra.kafka import KAFKA_VERSION, KafkaCluster

logger = logging.getLogger(__name__)

BOOTSTRAP_ENV = "CALLSTREAM_TEST_BOOTSTRAP"
# Confluent's image is the one testcontainers' KafkaContainer knows how to configure for KRaft.
CONTAINER_IMAGE = "confluentinc/cp-kafka:7.6.0"
_DOCKER_TIMEOUT_S = 5.0


def _ping_with_cli(docker_cli: str) -> tuple[bool, str]:
    try:
        done = subprocess.run(
            [docker_cli, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=_DOCKER_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"`docker info` did not finish within {_DOCKER_TIMEOUT_S:.0f} s"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return False, f"`docker info` failed: {lines[-1] if lines else done.returncode}"
    return True, f"`docker info` reports engine {done.stdout.strip()}"


def _ping_with_sdk() -> tuple[bool, str]:
    try:
        import docker  # optional: only the `docker` extra installs it
    except ImportError:
        return False, "neither the docker CLI nor the docker SDK is installed"
    # docker-py leaves its Unix socket open when the connect fails; under
    # filterwarnings=error that ResourceWarning would fail whichever test collects it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=int(_DOCKER_TIMEOUT_S))
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:  # the SDK raises several unrelated types for "no engine"
            reason = f"Docker engine did not answer the docker SDK: {exc}"
        else:
            reason = ""
        gc.collect()
    return (False, reason) if reason else (True, "Docker engine answered the docker SDK ping")


def docker_engine_available() -> tuple[bool, str]:
    """Whether a Docker engine answers here, and why or why not, in one line.

    A docker client alone is not enough (our CI has one and no engine), so this asks the
    engine: with `docker info`, or through the docker SDK where there is no CLI.
    """
    docker_cli = shutil.which("docker")
    return _ping_with_cli(docker_cli) if docker_cli else _ping_with_sdk()


@contextlib.contextmanager
def _container_broker() -> Iterator[tuple[str, str]]:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers before 4.14 kept it at the top level
        from testcontainers.kafka import KafkaContainer
    with KafkaContainer(CONTAINER_IMAGE).with_kraft() as container:
        bootstrap = container.get_bootstrap_server()
        yield bootstrap, f"testcontainers {CONTAINER_IMAGE} (KRaft)"


def _testcontainers_installed() -> bool:
    try:
        import testcontainers  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def open_test_broker() -> Iterator[tuple[str, str]]:
    """Yield `(bootstrap_servers, description)` of a broker for a test session, then clean up.

    The description names the kind of broker and why it was chosen, not its address.

    The first that applies wins:
    1. `$CALLSTREAM_TEST_BOOTSTRAP`: an external cluster; nothing is started or stopped.
    2. A testcontainers Kafka container, when testcontainers is installed and a Docker engine
       answers.
    3. A one-node Apache Kafka from `infra.kafka`, in a temporary data dir.

    Raises:
        InfraError: the infra broker could not start (no Java, no Maven jars, ...); the caller
            decides whether that skips or fails the session.
    """
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        yield external, f"external cluster (${BOOTSTRAP_ENV})"
        return
    docker_ok, docker_reason = docker_engine_available()
    if docker_ok and _testcontainers_installed():
        with _container_broker() as broker:
            yield broker
        return
    if docker_ok:
        docker_reason = "a Docker engine answers but testcontainers is not installed"
    logger.info("Not using Docker for the test broker: %s", docker_reason)
    # 1 GiB, not the launcher's 256 MiB: a whole suite creates a few thousand partitions, and
    # the session broker once went away late in a run (every later test: connection refused;
    # its log went with its data directory, so the heap is a guess, and a cheap one).
    with KafkaCluster(nodes=1, heap="1g") as cluster:
        yield (
            cluster.bootstrap_servers,
            f"Apache Kafka {KAFKA_VERSION} from infra (1 node, data in {cluster.data_dir}; "
            f"Docker skipped: {docker_reason})",
        )
