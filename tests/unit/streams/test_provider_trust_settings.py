"""The provider trust settings: defaults, the environment, and the start-up warning."""

from __future__ import annotations

import logging

import pytest

from providers.auth.signer import NoAuthSigner
from providers.base import Provider
from providers.declaration import ProviderSpec
from streams.composition import warn_exposure
from streams.settings import Settings


def test_defaults_restrict_nothing() -> None:
    settings = Settings()
    assert settings.provider_secret_refs == []
    assert settings.deny_private_networks is False


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLSTREAM_PROVIDER_SECRET_REFS", '["dir:*", "env:CALLSTREAM_SECRET_*"]')
    monkeypatch.setenv("CALLSTREAM_DENY_PRIVATE_NETWORKS", "true")
    settings = Settings()
    assert settings.provider_secret_refs == ["dir:*", "env:CALLSTREAM_SECRET_*"]
    assert settings.deny_private_networks is True


def provider(name: str, base_url: str) -> Provider:
    spec = ProviderSpec.model_validate(
        {"name": name, "base_url": base_url, "operations": {"get": {"path": "/"}}}
    )
    return Provider(spec, signer=NoAuthSigner())


@pytest.mark.parametrize(("deny", "then"), [(False, "calls allowed"), (True, "refused")])
def test_start_up_warning(caplog: pytest.LogCaptureFixture, deny: bool, then: str) -> None:
    providers = {
        "meta": provider("meta", "http://169.254.169.254"),
        "ok": provider("ok", "https://api.ok.test"),
    }
    with caplog.at_level(logging.WARNING, logger="streams.composition"):
        warn_exposure(providers, deny_private_networks=deny)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith(f"providers pointing at private addresses ({then}")
    assert lines[0].endswith("meta (169.254.169.254: link-local)")
    assert lines[1] == "providers over plain http:// (no TLS): meta"


def test_no_warning_for_public_https(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="streams.composition"):
        warn_exposure({"ok": provider("ok", "https://api.ok.test")}, deny_private_networks=False)
    assert caplog.records == []
