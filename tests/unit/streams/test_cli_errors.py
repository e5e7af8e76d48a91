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
        (["worker"], {"CALLSTREAM_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}, "cannot reach Kafka"),
        (
            [
                "publish",
                "--provider",
                "p",
                "--operation",
                "o",
                "--no-validate",
                "-b",
                "127.0.0.1:1",
            ],
            {},
            "cannot reach Kafka at 127.0.0.1:1",
        ),
        (["results", "tail", "--bootstrap", "127.0.0.1:1"], {}, "cannot reach Kafka"),
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


def test_providers_validate_names_the_broken_field(tmp_path, capsys):
    broken = tmp_path / "acme.toml"
    broken.write_text(
        'name = "acme"\nbase_url = "https://api.acme.example"\n'
        '[operations.get]\nmethod = "FETCH"\npath = "/a"\n'
    )
    assert main(["providers", "validate", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "acme.toml" in err
    assert "operations.get.method" in err
    assert err.count("\n") == 1, err


def test_providers_validate_accepts_every_catalog_file(capsys):
    from pathlib import Path

    import providers.catalog

    for path in sorted(Path(providers.catalog.__file__).parent.glob("*.toml")):
        assert main(["providers", "validate", str(path)]) == 0, path
    assert capsys.readouterr().out.count("ok: ") >= 6
