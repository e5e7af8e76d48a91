"""resolve_secret: env, file, secrets directory and literal references; errors without values."""

from __future__ import annotations

import pytest

from providers.auth.errors import AuthConfigError, SecretResolutionError
from providers.auth.secrets import SECRETS_DIR_ENV, describe_ref, resolve_secret


def test_literal_and_escaped_literal():
    assert resolve_secret("plain-value").get_secret_value() == "plain-value"
    assert resolve_secret("sk:has-colon").get_secret_value() == "sk:has-colon"
    assert resolve_secret("literal:env:NOT_A_REF").get_secret_value() == "env:NOT_A_REF"


def test_env(monkeypatch):
    monkeypatch.setenv("FAKE_TOKEN_VAR", "t0ken")
    assert resolve_secret("env:FAKE_TOKEN_VAR").get_secret_value() == "t0ken"


def test_file_drops_one_trailing_newline(secret_file):
    assert resolve_secret(f"file:{secret_file}").get_secret_value() == "from-a-file"


def test_secrets_dir(monkeypatch, tmp_path):
    (tmp_path / "stripe_key").write_text("sk_test_1\r\n")
    monkeypatch.setenv(SECRETS_DIR_ENV, str(tmp_path))
    assert resolve_secret("dir:stripe_key").get_secret_value() == "sk_test_1"


@pytest.mark.parametrize(
    ("ref", "named"),
    [
        ("env:NO_SUCH_VARIABLE_XYZ", "environment variable NO_SUCH_VARIABLE_XYZ is not set"),
        ("file:/no/such/file", "file /no/such/file not found"),
        ("dir:key", f"{SECRETS_DIR_ENV} is not set"),
    ],
)
def test_missing_reference_names_what_is_missing(ref, named):
    with pytest.raises(SecretResolutionError) as info:
        resolve_secret(ref)
    message = str(info.value)
    assert named in message
    assert "\n" not in message
    assert isinstance(info.value, AuthConfigError)


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "..", ""])
def test_secrets_dir_rejects_paths(monkeypatch, tmp_path, name):
    monkeypatch.setenv(SECRETS_DIR_ENV, str(tmp_path))
    with pytest.raises(SecretResolutionError, match="not a plain file name"):
        resolve_secret(f"dir:{name}")


def test_repr_hides_the_value(monkeypatch):
    monkeypatch.setenv("FAKE_TOKEN_VAR", "t0ken")
    assert "t0ken" not in repr(resolve_secret("env:FAKE_TOKEN_VAR"))


def test_describe_ref_never_shows_literals():
    assert describe_ref("env:X") == "env:X"
    assert describe_ref("sk_live_123") == "<literal>"
