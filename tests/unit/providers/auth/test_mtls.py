"""mTLS: the client SSLContext built from files, and errors that name files, not passwords."""

from __future__ import annotations

import ssl

import pytest
from pydantic import SecretStr

from providers.auth.config import MtlsAuth
from providers.auth.errors import AuthConfigError
from providers.auth.factory import build_signer, ssl_context_for
from providers.auth.mtls import MtlsSigner, build_ssl_context
from providers.auth.request import PreparedRequest
from tests.unit.providers.auth.certs import KEY_PASSWORD


def test_context_verifies_servers_and_carries_the_certificate(tls_material):
    config = MtlsAuth(
        cert_file=tls_material.client_cert,
        key_file=tls_material.client_key,
        ca_file=tls_material.ca,
    )
    context = build_ssl_context(config)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert len(context.get_ca_certs()) == 1


async def test_signer_passes_requests_through_and_exposes_context(tls_material):
    config = MtlsAuth(cert_file=tls_material.client_cert, key_file=tls_material.client_key)
    signer = build_signer(config)
    assert isinstance(signer, MtlsSigner)
    request = PreparedRequest("GET", "https://api.test/", {})
    assert await signer.sign(request, now=0) is request
    assert isinstance(signer.ssl_context, ssl.SSLContext)


def test_encrypted_key_with_password_reference(tls_material, monkeypatch):
    monkeypatch.setenv("FAKE_KEY_PASSWORD", KEY_PASSWORD)
    config = MtlsAuth(
        cert_file=tls_material.client_cert,
        key_file=tls_material.client_key_encrypted,
        key_password=SecretStr("env:FAKE_KEY_PASSWORD"),
    )
    assert ssl_context_for(config) is not None


def test_wrong_password_error_hides_it(tls_material):
    config = MtlsAuth(
        cert_file=tls_material.client_cert,
        key_file=tls_material.client_key_encrypted,
        key_password=SecretStr("not-the-password"),
    )
    with pytest.raises(AuthConfigError) as info:
        ssl_context_for(config)
    assert "not-the-password" not in str(info.value)
    assert str(tls_material.client_key_encrypted) in str(info.value)


def test_mismatched_key(tls_material):
    config = MtlsAuth(cert_file=tls_material.client_cert, key_file=tls_material.rogue_key)
    with pytest.raises(AuthConfigError, match="cannot load"):
        build_ssl_context(config)


@pytest.mark.parametrize("field", ["cert_file", "key_file", "ca_file"])
def test_missing_file_is_named(tls_material, tmp_path, field):
    files = {
        "cert_file": tls_material.client_cert,
        "key_file": tls_material.client_key,
        "ca_file": tls_material.ca,
        field: tmp_path / "absent.pem",
    }
    with pytest.raises(AuthConfigError, match=f"{field} .*absent.pem not found"):
        build_ssl_context(MtlsAuth(**files))


def test_other_schemes_need_no_context():
    from providers.auth.config import NoAuth

    assert ssl_context_for(NoAuth()) is None
