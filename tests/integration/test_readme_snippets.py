"""The README's Python snippets run as written, against a real broker, a worker and the fake
provider (issue 19: the SDK snippet did not run)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streams.cli.dev.processes import start_fake_provider

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def snippet_env(settings, fake_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "CALLSTREAM_APP_ID": settings.app_id,
        "CALLSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "CALLSTREAM_TOPICS__REQUESTS": settings.topics.requests,
        "CALLSTREAM_TOPICS__RESULTS": settings.topics.results,
        "CALLSTREAM_TOPICS__DEAD_LETTERS": settings.topics.dead_letters,
        "CALLSTREAM_TOPICS__PARTITIONS": str(settings.topics.partitions),
    }


def test_the_readme_has_the_snippets() -> None:
    assert any("client.call(" in snippet for snippet in SNIPPETS)
    assert any("replay_dead_letters" in snippet for snippet in SNIPPETS)


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_readme_snippet_runs(snippet: str, settings, worker_factory, tmp_path):
    # open_meteo (no auth) served by the fake provider's Open-Meteo flavor on loopback.
    fake = start_fake_provider(tmp_path, "--flavor", "open_meteo", "--latency-ms", "1")
    try:
        worker_factory(fake.url, CALLSTREAM_PROVIDERS__OPEN_METEO__BASE_URL=fake.url)
        done = subprocess.run(
            [sys.executable, "-c", snippet],
            capture_output=True,
            text=True,
            timeout=120,
            env=snippet_env(settings, fake.url),
            check=False,
        )
    finally:
        fake.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    if "client.call(" in snippet:
        assert done.stdout.startswith("ok 200"), done.stdout + done.stderr
