"""`providers show` shows references, never secrets; YAML errors never quote the bad line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from providers.spec_file import SpecError, load_spec_file, yaml_problem
from streams.cli.providers_cmd import providers_app, redacted

runner = CliRunner()

# The review's pdir/beta.toml (finding 16), plus references.
BETA = """name = "beta"
base_url = "https://api.beta.test"
auth = { type = "basic", username = "sk_live_USERNAME_IS_SECRET", password = "" }
[headers]
X-Api-Token = "STATIC_HEADER_SECRET_777"
X-Team = "env:BETA_TEAM"
X-Pinned = "literal:PINNED_SECRET_1"
Accept = "application/json"
[operations.get]
path = "/meta-data/{x}"
"""
# The review's pdir/acme.yaml: a YAML error on the line of a literal secret.
ACME = """name: acme
base_url: https://api.acme.example
auth:
  type: bearer
  token: YAML_LITERAL_SECRET_q1w2e3 : oops
operations:
  get: {path: /x}
"""


@pytest.fixture
def pdir(tmp_path: Path) -> Path:
    (tmp_path / "beta.toml").write_text(BETA)
    (tmp_path / "acme.yaml").write_text(ACME)
    return tmp_path


def test_show_redacts_the_basic_username_and_static_header_secrets(pdir: Path) -> None:
    result = runner.invoke(providers_app, ["show", "beta", "--spec-dir", str(pdir)])
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["auth"]["username"] == "<literal>"
    assert shown["headers"] == {
        "X-Api-Token": "<literal>",  # a credential-like name
        "X-Team": "env:BETA_TEAM",  # a reference is shown as itself
        "X-Pinned": "<literal>",
        "Accept": "application/json",  # plain configuration stays readable
    }
    for secret in ("USERNAME_IS_SECRET", "STATIC_HEADER_SECRET", "PINNED_SECRET"):
        assert secret not in result.stdout


def test_show_names_a_username_reference(pdir: Path) -> None:
    spec = load_spec_file(pdir / "beta.toml").with_overrides(
        {"auth": {"type": "basic", "username": "env:STRIPE_SECRET_KEY"}}
    )
    assert redacted(spec)["auth"] == {
        "type": "basic", "username": "env:STRIPE_SECRET_KEY", "password": "<literal>",
    }  # fmt: skip


def test_yaml_error_names_the_problem_and_place_not_the_line(pdir: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec_file(pdir / "acme.yaml")
    assert str(caught.value) == (
        "acme.yaml: invalid YAML: mapping values are not allowed here (line 5, column 37)"
    )


@pytest.mark.parametrize(
    "command", [["validate", "{dir}/acme.yaml"], ["list", "--spec-dir", "{dir}"]]
)
def test_cli_never_echoes_the_yaml_line(pdir: Path, command: list[str]) -> None:
    result = runner.invoke(providers_app, [part.format(dir=pdir) for part in command])
    output = result.stdout + result.stderr
    assert "acme.yaml: invalid YAML: mapping values are not allowed here" in output
    assert "YAML_LITERAL_SECRET" not in output


def test_yaml_problem_without_a_mark() -> None:
    import yaml

    assert yaml_problem(yaml.YAMLError("whole text with SECRET")) == "YAMLError"
