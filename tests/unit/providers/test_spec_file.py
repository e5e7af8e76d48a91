"""Declaration files: TOML and YAML load; every mistake is one line naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers.spec_file import SpecError, load_spec_file

GOOD_TOML = """
name = "acme"
base_url = "https://api.acme.test"
[operations.get_thing]
path = "/things/{id}"
query_params = ["page"]
"""
GOOD_YAML = """
name: acme
base_url: https://api.acme.test
auth: {type: bearer, token: "env:ACME_TOKEN"}
operations:
  get_thing: {path: "/things/{id}", query_params: {page: {default: "1"}}}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("name", "text"), [("acme.toml", GOOD_TOML), ("acme.yaml", GOOD_YAML)])
def test_loads_both_formats(tmp_path: Path, name: str, text: str) -> None:
    spec = load_spec_file(write(tmp_path, name, text))
    assert spec.name == "acme"
    assert spec.operations["get_thing"].placeholders == ("id",)
    assert "page" in spec.operations["get_thing"].query_params


def toml_with(extra: str) -> str:
    return GOOD_TOML + extra


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("github.toml", GOOD_TOML.replace('path = "/things/{id}"',
                                          'method = "FETCH"\npath = "/things/{id}"'),
         "github.toml: operations.get_thing.method: Input should be 'GET', 'POST', 'PUT', "
         "'PATCH' or 'DELETE'"),
        ("a.toml", GOOD_TOML.replace("https://api.acme.test", "ftp://x"),
         "a.toml: base_url: must be an http:// or https:// URL with a host"),
        ("a.toml", GOOD_TOML.replace("https://api.acme.test", "https://u:p@x.test"),
         "a.toml: base_url: must not carry a query, fragment or credentials"),
        ("a.toml", GOOD_TOML.replace('"/things/{id}"', '"things"'),
         "a.toml: operations.get_thing.path: must start with '/'"),
        ("a.toml", GOOD_TOML.replace('"/things/{id}"', '"/things/{id!r}"'),
         "a.toml: operations.get_thing.path: placeholder {id} must be a plain identifier"),
        ("a.toml", toml_with("allowed_headers = ['Authorization']"),
         "a.toml: operations.get_thing.allowed_headers: header 'Authorization' cannot be allowed"),
        ("a.toml", toml_with("path_params.other = {}"),
         "a.toml: operations.get_thing: path_params not in path: other"),
        ("a.toml", toml_with("timeout = 3"),
         "a.toml: operations.get_thing.timeout: Extra inputs are not permitted"),
        ("a.toml", toml_with("[auth]\ntype = 'kerberos'"), "a.toml: auth: Input tag 'kerberos'"),
        ("a.toml", toml_with("[auth]\ntype = 'bearer'"),
         "a.toml: auth.bearer.token: Field required"),
        ("a.toml", toml_with("[limits]\nrate_per_s = 0"),
         "a.toml: limits.rate_per_s: Input should be greater than 0"),
        ("a.toml", toml_with("[check]\noperation = 'nope'"),
         "a.toml: check.operation: 'nope' is not an operation"),
        ("a.toml", 'name = "Bad Name"\nbase_url = "https://x.test"\n[operations.x]\npath="/"',
         "a.toml: name: String should match pattern"),
        ("a.toml", 'name = "x"\nbase_url = "https://x.test"', "a.toml: operations: Field required"),
        ("a.toml", "name = ", "a.toml: invalid TOML:"),
        ("a.yaml", "name: [unclosed\n  x: y", "a.yaml: invalid YAML:"),
        ("a.yaml", "- just\n- a list", "a.yaml: expected a table of provider fields"),
        ("a.json", "{}", "a.json: not a provider file"),
    ],
)  # fmt: skip
def test_errors_are_one_line_naming_file_and_field(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    with pytest.raises(SpecError) as info:
        load_spec_file(write(tmp_path, name, text))
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_more_errors_are_counted(tmp_path: Path) -> None:
    text = 'name = "x"\nbase_url = "ftp://x"\n'
    with pytest.raises(SpecError, match=r"\(\+1 more\)$"):
        load_spec_file(write(tmp_path, "x.toml", text))


def test_literal_secrets_never_appear_in_errors(tmp_path: Path) -> None:
    text = toml_with("[auth]\ntype = 'bearer'\ntoken = 'sk-live-SECRET'\nextra = 1")
    with pytest.raises(SpecError) as info:
        load_spec_file(write(tmp_path, "a.toml", text))
    assert "SECRET" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"^nope.toml: cannot read"):
        load_spec_file(tmp_path / "nope.toml")
