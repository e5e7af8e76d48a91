"""Provider files are trusted like code; ``provider_secret_refs`` narrows what they may name."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from providers.base import Provider
from providers.declaration import ProviderSpec
from providers.http import ProviderClient
from providers.registry import ProviderRegistry
from providers.spec_file import SpecError, parse_spec
from providers.trust import check_secret_refs, exposure_warnings, secret_refs
from schemas.models import RequestEvent

ALLOWED = ("dir:*", "env:CALLSTREAM_SECRET_*")
KAFKA_PASSWORD = "KAFKA_SASL_PW_42"


def spec(auth: dict[str, Any] | None = None, **fields: Any) -> ProviderSpec:
    data: dict[str, Any] = {
        "name": "teamx",
        "base_url": "https://api.teamx.test",
        "operations": {"get": {"path": "/x"}},
        **fields,
    }
    if auth is not None:
        data["auth"] = auth
    return parse_spec(data, source="teamx.toml")


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


# --- p12_exfil: the two files of the probe, as files from provider_dirs -----------------

TEAMX = """name = "teamx"
base_url = "{base}"
auth = {{ type = "api_key", name = "X-Exfil", key = "env:CALLSTREAM_KAFKA__SASL_PASSWORD" }}
[operations.get]
path = "/x"
"""
TEAMY = """name = "teamy"
base_url = "{base}"
auth = {{ type = "bearer", token = "file:/etc/hostname" }}
[operations.get]
path = "/y"
"""


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A loopback server that records the headers of every request."""
    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


@pytest.fixture
def probe_dir(tmp_path: Path, recorder: tuple[str, list[dict[str, str]]]) -> Path:
    base, _ = recorder
    write(tmp_path, "teamx.toml", TEAMX.format(base=base))
    write(tmp_path, "teamy.toml", TEAMY.format(base=base))
    return tmp_path


async def test_p12_without_an_allow_list_a_file_is_trusted_like_code(
    probe_dir: Path, recorder: tuple[str, list[dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLSTREAM_KAFKA__SASL_PASSWORD", KAFKA_PASSWORD)
    registry = ProviderRegistry(spec_dirs=[probe_dir], use_entry_points=False, use_catalog=False)
    provider = registry.create("teamx")
    async with ProviderClient() as client:
        await client.call(provider, RequestEvent(provider="teamx", operation="get"))
    assert recorder[1][0]["X-Exfil"] == KAFKA_PASSWORD  # documented: operator config


@pytest.mark.parametrize(
    ("name", "field", "scheme", "ref"),
    [
        ("teamx", "auth.key", "env", "CALLSTREAM_KAFKA__SASL_PASSWORD"),
        ("teamy", "auth.token", "file", "/etc/hostname"),
    ],
)
async def test_p12_with_an_allow_list_the_file_is_refused(
    probe_dir: Path,
    recorder: tuple[str, list[dict[str, str]]],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    field: str,
    scheme: str,
    ref: str,
) -> None:
    monkeypatch.setenv("CALLSTREAM_KAFKA__SASL_PASSWORD", KAFKA_PASSWORD)
    registry = ProviderRegistry(
        spec_dirs=[probe_dir], use_entry_points=False, use_catalog=False, secret_refs=ALLOWED
    )
    assert registry.registrations[name].spec is None  # listed as broken, under its own name
    with pytest.raises(SpecError) as caught:
        registry.activate([name])
    message = str(caught.value)
    assert f"{name}.toml: {field}: this {scheme}: secret reference is not allowed" in message
    assert "provider_secret_refs" in message
    assert ref not in message
    assert "\n" not in message
    await asyncio.sleep(0)
    assert recorder[1] == []  # nothing was ever sent


# --- the allow-list itself -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "headers"),
    [
        ({"type": "bearer", "token": "dir:teamx_token"}, {}),
        ({"type": "bearer", "token": "env:CALLSTREAM_SECRET_TEAMX"}, {}),
        ({"type": "bearer", "token": "a-literal-in-the-file"}, {}),
        ({"type": "bearer", "token": "literal:env:NOT_A_REF"}, {}),
        ({"type": "basic", "username": "dir:user", "password": "dir:pw"}, {}),
        (None, {"X-Team-Token": "dir:team_header"}),
        (None, {"Accept": "application/json"}),
    ],
)
def test_allowed_references_pass(auth: dict[str, Any] | None, headers: dict[str, str]) -> None:
    check_secret_refs(spec(auth, headers=headers), ALLOWED, source="teamx.toml")


@pytest.mark.parametrize(
    ("auth", "headers", "field"),
    [
        ({"type": "api_key", "name": "X-Key", "key": "env:HOME"}, {}, "auth.key"),
        ({"type": "basic", "username": "env:STRIPE_KEY"}, {}, "auth.username"),
        ({"type": "basic", "username": "u", "password": "file:/etc/shadow"}, {}, "auth.password"),
        (
            {"type": "hmac", "key_id": "k", "secret": "env:CALLSTREAM_KAFKA__SASL_PASSWORD"},
            {},
            "auth.secret",
        ),
        (
            {
                "type": "oauth2_client_credentials",
                "token_url": "https://auth.teamx.test/token",
                "client_id": "c",
                "client_secret": "env:AWS_SECRET_ACCESS_KEY",
            },
            {},
            "auth.client_secret",
        ),
        (None, {"X-Team-Token": "env:CALLSTREAM_KAFKA__SASL_PASSWORD"}, "headers.X-Team-Token"),
    ],
)
def test_references_outside_the_list_are_refused(
    auth: dict[str, Any] | None, headers: dict[str, str], field: str
) -> None:
    with pytest.raises(SpecError, match=rf"^teamx\.toml: {field}: this \w+: secret reference"):
        check_secret_refs(spec(auth, headers=headers), ALLOWED, source="teamx.toml")


def test_file_paths_are_normalised_before_matching() -> None:
    escaping = spec({"type": "bearer", "token": "file:/run/secrets/../../etc/passwd"})
    with pytest.raises(SpecError, match=r"auth\.token"):
        check_secret_refs(escaping, ["file:/run/secrets/*"], source="teamx.toml")
    inside = spec({"type": "bearer", "token": "file:/run/secrets/./teamx"})
    check_secret_refs(inside, ["file:/run/secrets/*"], source="teamx.toml")


def test_an_empty_list_restricts_nothing() -> None:
    check_secret_refs(spec({"type": "bearer", "token": "env:HOME"}), [], source="teamx.toml")


def test_secret_refs_lists_every_reference_and_no_literal() -> None:
    found = dict(
        secret_refs(
            spec(
                {"type": "basic", "username": "env:U", "password": "literal-pw"},
                headers={"X-A": "file:/a", "Accept": "text/plain"},
            )
        )
    )
    assert found == {"auth.username": "env:U", "headers.X-A": "file:/a"}


def test_the_catalog_is_not_restricted() -> None:
    registry = ProviderRegistry(use_entry_points=False, secret_refs=["dir:*"])
    assert registry.registrations["github"].spec is not None  # token = "env:GITHUB_TOKEN"


def test_settings_overrides_are_not_restricted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "teamx.toml", TEAMX.format(base="https://api.teamx.test").replace(
        "env:CALLSTREAM_KAFKA__SASL_PASSWORD", "dir:teamx"))  # fmt: skip
    monkeypatch.setenv("OPERATOR_CHOSEN", "k")
    registry = ProviderRegistry(
        spec_dirs=[tmp_path], use_entry_points=False, use_catalog=False, secret_refs=["dir:*"]
    )
    provider = registry.create("teamx", {"auth": {"key": "env:OPERATOR_CHOSEN"}})
    assert provider.spec.auth.type == "api_key"


def test_a_refused_file_does_not_fall_back_to_the_catalog(tmp_path: Path) -> None:
    write(tmp_path, "mine.toml", TEAMY.format(base="https://api.github.com").replace(
        'name = "teamy"', 'name = "github"'))  # fmt: skip
    registry = ProviderRegistry(spec_dirs=[tmp_path], use_entry_points=False, secret_refs=["dir:*"])
    with pytest.raises(SpecError, match=r"mine\.toml: auth\.token"):
        registry.spec("github")


# --- static header values as references, resolved when the provider is built --------------


def test_static_header_references_are_resolved_by_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "teamx.toml", 'name = "teamx"\nbase_url = "https://api.teamx.test"\n'
          'headers = { "X-Team-Token" = "env:TEAM_TOKEN", Accept = "application/json" }\n'
          '[operations.get]\npath = "/x"\n')  # fmt: skip
    monkeypatch.setenv("TEAM_TOKEN", "tok-123")
    registry = ProviderRegistry(spec_dirs=[tmp_path], use_entry_points=False, use_catalog=False)
    provider = registry.create("teamx")
    sent = provider.build_request(RequestEvent(provider="teamx", operation="get"))
    assert sent.headers["X-Team-Token"] == "tok-123"
    assert sent.headers["Accept"] == "application/json"
    assert registry.spec("teamx").headers["X-Team-Token"] == "env:TEAM_TOKEN"  # unresolved


def test_an_unresolvable_static_header_is_one_line(tmp_path: Path) -> None:
    write(tmp_path, "teamx.toml", 'name = "teamx"\nbase_url = "https://api.teamx.test"\n'
          'headers = { "X-Team-Token" = "env:TEAM_TOKEN_UNSET_42" }\n'
          '[operations.get]\npath = "/x"\n')  # fmt: skip
    registry = ProviderRegistry(spec_dirs=[tmp_path], use_entry_points=False, use_catalog=False)
    with pytest.raises(SpecError, match="teamx: secret env:TEAM_TOKEN_UNSET_42: environment"):
        registry.create("teamx")


# --- Basic username as a reference -----------------------------------------------------------


def test_basic_username_reference_is_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_KEY_T", "sk_test_1")
    provider = Provider(spec({"type": "basic", "username": "env:STRIPE_KEY_T"}))
    request = provider.build_request(RequestEvent(provider="teamx", operation="get"))
    signed = provider.signer.apply(request, now=0.0)  # type: ignore[attr-defined]
    assert signed.headers["Authorization"] == "Basic c2tfdGVzdF8xOg=="  # sk_test_1:
    assert "sk_test_1" not in repr(provider.spec.auth)


def test_basic_username_resolving_to_a_colon_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAD_USER", "a:b")
    with pytest.raises(ValueError, match=r"basic username env:BAD_USER must be non-empty"):
        Provider(spec({"type": "basic", "username": "env:BAD_USER"}))


def test_basic_literal_username_with_a_colon_is_still_invalid() -> None:
    with pytest.raises(SpecError, match=r"auth\.basic\.username: username must not contain ':'"):
        spec({"type": "basic", "username": "a:b"})


# --- the start-up warning (review finding 18) ------------------------------------------------


def test_exposure_warnings_list_private_literals_and_plain_http() -> None:
    specs = [
        spec(name="meta", base_url="http://169.254.169.254/latest"),
        spec(name="local", base_url="https://localhost:6066"),
        spec(name="ten", base_url="https://10.1.2.3"),
        spec(name="six", base_url="https://[fd00::1]:8443"),
        spec(name="plain", base_url="http://api.plain.test"),
        spec(name="fine", base_url="https://api.fine.test"),
        spec(
            name="tok",
            auth={
                "type": "oauth2_client_credentials",
                "token_url": "http://auth.tok.test/t",
                "client_id": "c",
                "client_secret": "s",
            },
        ),
    ]
    private, plain = exposure_warnings(specs)
    assert private == (
        "providers pointing at private addresses (calls allowed): local (localhost: loopback), "
        "meta (169.254.169.254: link-local), six (fd00::1: private), ten (10.1.2.3: private)"
    )
    assert plain == "providers over plain http:// (no TLS): meta, plain, tok token_url"
    assert exposure_warnings([spec()]) == []


def test_exposure_warning_says_when_calls_will_be_refused() -> None:
    (line,) = exposure_warnings([spec(base_url="https://127.0.0.1")], deny_private_networks=True)
    assert "(refused: deny_private_networks)" in line
