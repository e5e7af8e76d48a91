"""ProviderRegistry: sources, precedence, broken sources, activation and overrides."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from providers.auth.api_key import ApiKeySigner
from providers.errors import ProviderUnavailable, UnknownProvider
from providers.registry import ENTRY_POINT_GROUP, ProviderRegistry
from providers.spec_file import SpecError
from streams.settings import ProviderSettings
from tests.unit.providers.plugins import ShoutingProvider

PLUGINS = "tests.unit.providers.plugins"
CATALOG = {"github", "stripe", "openai", "open_meteo", "slack", "openweathermap"}


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    points = [
        EntryPoint("plain", f"{PLUGINS}:SPEC", ENTRY_POINT_GROUP),
        EntryPoint("shouting", f"{PLUGINS}:ShoutingProvider", ENTRY_POINT_GROUP),
        EntryPoint("made", f"{PLUGINS}:make_spec", ENTRY_POINT_GROUP),
        EntryPoint("broken", f"{PLUGINS}:make_broken", ENTRY_POINT_GROUP),
        EntryPoint("wrong", f"{PLUGINS}:NOT_A_PROVIDER", ENTRY_POINT_GROUP),
        EntryPoint("misnamed", f"{PLUGINS}:SPEC", ENTRY_POINT_GROUP),
        EntryPoint("missing", "tests.unit.providers.nowhere:X", ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr("providers.registry.entry_points", lambda group: points)


def spec_file(directory: Path, name: str, base_url: str = "https://x.test") -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(f'name = "{name}"\nbase_url = "{base_url}"\n[operations.ping]\npath = "/"\n')
    return path


def test_catalog_is_known_without_configuration() -> None:
    registry = ProviderRegistry(use_entry_points=False)
    assert set(registry.names()) == CATALOG
    assert registry.registration("github").source == "catalog/github.toml"


@pytest.mark.usefixtures("plugins")
def test_entry_point_values() -> None:
    registry = ProviderRegistry(use_catalog=False)
    assert registry.spec("plain").base_url == "https://plain.test"
    assert registry.spec("made").name == "made"
    assert registry.registration("shouting").factory is ShoutingProvider
    broken = [("broken", "plugin exploded"), ("wrong", "got int"),
              ("misnamed", "differs from spec name"), ("missing", "ModuleNotFound")]  # fmt: skip
    for name, error in broken:
        with pytest.raises(SpecError, match=error):
            registry.spec(name)


@pytest.mark.usefixtures("plugins")
def test_a_code_defined_provider_overrides_classify() -> None:
    provider = ProviderRegistry(use_catalog=False).create("shouting")
    assert isinstance(provider, ShoutingProvider)
    assert provider.classify(200, {}, b"{}", operation="ping").status == 200
    with pytest.raises(ProviderUnavailable):
        provider.classify(200, {}, b"maintenance", operation="ping")


def test_directories_override_the_catalog(tmp_path: Path) -> None:
    spec_file(tmp_path / "d", "open_meteo", "https://meteo.internal.test")
    spec_file(tmp_path / "d", "extra")
    registry = ProviderRegistry(spec_dirs=[tmp_path / "d"], use_entry_points=False)
    assert registry.spec("open_meteo").base_url == "https://meteo.internal.test"
    assert "extra" in registry.names()


def test_a_broken_file_is_reported_only_for_its_name(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('name = "bad"\nbase_url = 3\n')
    spec_file(tmp_path, "good")
    registry = ProviderRegistry(spec_dirs=[tmp_path], use_entry_points=False, use_catalog=False)
    assert registry.create("good").name == "good"
    with pytest.raises(SpecError, match=r"bad.toml: base_url: Input should be a valid string"):
        registry.create("bad")


def test_a_name_declared_twice_in_one_layer(tmp_path: Path) -> None:
    spec_file(tmp_path, "twin")
    (tmp_path / "twin2.toml").write_text((tmp_path / "twin.toml").read_text())
    registry = ProviderRegistry(spec_dirs=[tmp_path], use_entry_points=False, use_catalog=False)
    with pytest.raises(SpecError, match="declared twice"):
        registry.spec("twin")


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        ProviderRegistry(spec_dirs=[tmp_path / "nope"]).names()


def test_unknown_names_list_the_known_ones() -> None:
    registry = ProviderRegistry(use_entry_points=False)
    with pytest.raises(UnknownProvider, match=r"unknown provider 'gihtub'; known: github, "):
        registry.activate(["open_meteo", "gihtub"])


def test_only_selected_enabled_providers_are_active() -> None:
    registry = ProviderRegistry(use_entry_points=False)
    active = registry.activate(
        {"open_meteo": None, "github": ProviderSettings(enabled=False)}
    )  # fmt: skip
    assert set(active) == {"open_meteo"}
    assert registry.get("open_meteo").name == "open_meteo"
    with pytest.raises(UnknownProvider, match="'github' is not active; active: open_meteo"):
        registry.get("github")


def test_settings_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OWM_KEY", "k-123")
    settings = ProviderSettings(
        base_url="http://127.0.0.1:9999", timeout_s=2, rate_per_s=3, secret=SecretStr("env:OWM_KEY")
    )  # fmt: skip
    provider = ProviderRegistry(use_entry_points=False).create("openweathermap", settings)
    spec = provider.spec
    assert spec.base_url == "http://127.0.0.1:9999"
    assert (spec.timeout_s, spec.limits.rate_per_s) == (2, 3)
    assert spec.limits.burst == 60  # untouched fields keep the declared value
    assert isinstance(provider.signer, ApiKeySigner)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("open_meteo", ProviderSettings(secret=SecretStr("x")), "auth type is none"),
        ("open_meteo", {"base_url": "file:///etc"}, "open_meteo (settings): base_url: must be"),
        ("github", None, "github: secret env:GITHUB_TOKEN: environment variable GITHUB_TOKEN"),
    ],
)
def test_override_and_secret_errors(
    monkeypatch: pytest.MonkeyPatch, name: str, overrides: Any, message: str
) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ProviderRegistry(use_entry_points=False).create(name, overrides)


def test_test_doubles_are_not_known_by_default() -> None:
    registry = ProviderRegistry()
    assert "fake" not in registry.names()
    assert set(registry.names()) >= CATALOG


def test_a_test_double_is_loaded_when_asked_for_by_name(caplog: pytest.LogCaptureFixture) -> None:
    registry = ProviderRegistry()
    assert registry.registration("fake").dev
    assert set(registry.activate(["fake"])) == {"fake"}
    assert "fake is a test double" in caplog.text
    assert "fake" not in registry.names()  # asking for it does not make it listed


def test_dev_providers_lists_the_test_doubles() -> None:
    registration = ProviderRegistry(dev_providers=True).registrations["fake"]
    assert registration.dev
    assert registration.source == "dev entry point providers.fake.provider:FAKE_PROVIDER"


def test_without_entry_points_no_test_double_is_found() -> None:
    with pytest.raises(UnknownProvider, match="unknown provider 'fake'"):
        ProviderRegistry(use_entry_points=False).registration("fake")


def test_a_worker_with_no_provider_section_activates_no_test_double(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streams.composition import activate_providers

    for name in ("GITHUB_TOKEN", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    active = activate_providers(ProviderRegistry(), {})
    assert "open_meteo" in active  # the default selection did run: it has no secret to resolve
    assert "fake" not in active
