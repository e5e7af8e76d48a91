"""Bad flags, values and settings end as one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import pytest

from streams.__main__ import main


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["publish", "--bogus"], {}, "No such option: --bogus"),
        (["publish", "--provider", "p", "--operation", "o", "--priority", "42"], {}, "--priority"),
        (["publish", "--provider", "p"], {}, "give --provider and --operation"),
        (
            ["publish", "--provider", "p", "--operation", "o", "--param", "novalue"],
            {},
            "NAME=VALUE",
        ),
        (
            ["publish", "--provider", "p", "--operation", "o"],
            {"CALLSTREAM_KAFKA__SESSION_TIMEOUT_S": "soon"},
            "kafka.session_timeout_s",
        ),
        (["worker", "--config", "/nonexistent.toml"], {}, "config file not found"),
        (["broker", "start", "--kind", "zookeeper"], {}, "--kind"),
    ],
)
def test_errors_are_one_line(argv, env, expected, monkeypatch, capsys):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("callstream: error: ")
    assert expected in err
    assert err.count("\n") == 1, err
