"""Fixtures for the auth tests: TLS material and a scripted token endpoint."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from providers.auth.oauth2_flow import TokenResponse
from providers.auth.request import PreparedRequest
from tests.unit.providers.auth.certs import TlsMaterial, make_tls_material


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return make_tls_material(tmp_path_factory.mktemp("tls"))


class ScriptedTokenEndpoint:
    """A fetch function that records token requests and answers from a script."""

    def __init__(self, *, expires_in: float | None = 3600, delay_s: float = 0.0) -> None:
        self.requests: list[PreparedRequest] = []
        self.expires_in = expires_in
        self.delay_s = delay_s
        self.next_status = 200
        self.next_body: bytes | None = None

    async def __call__(self, request: PreparedRequest) -> TokenResponse:
        self.requests.append(request)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.next_body is not None or self.next_status != 200:
            return TokenResponse(self.next_status, self.next_body or b"{}")
        payload: dict[str, object] = {
            "access_token": f"tok-{len(self.requests)}",
            "token_type": "Bearer",
        }
        if self.expires_in is not None:
            payload["expires_in"] = self.expires_in
        return TokenResponse(200, json.dumps(payload).encode())


@pytest.fixture
def token_endpoint() -> ScriptedTokenEndpoint:
    return ScriptedTokenEndpoint()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text("from-a-file\n")
    return path
