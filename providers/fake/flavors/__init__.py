"""Flavors of the fake provider, each imitating one real API's routes, errors and limit headers."""

from __future__ import annotations

from providers.fake.config import FakeProviderConfig, FlavorName
from providers.fake.flavors.base import Flavor
from providers.fake.flavors.github import GitHubFlavor
from providers.fake.flavors.open_meteo import OpenMeteoFlavor
from providers.fake.flavors.openai import OpenAIFlavor
from providers.fake.flavors.openweathermap import OpenWeatherMapFlavor
from providers.fake.flavors.slack import SlackFlavor
from providers.fake.flavors.stripe import StripeFlavor

FLAVORS: dict[FlavorName, type[Flavor]] = {
    "generic": Flavor,
    "github": GitHubFlavor,
    "stripe": StripeFlavor,
    "openai": OpenAIFlavor,
    "open_meteo": OpenMeteoFlavor,
    "slack": SlackFlavor,
    "openweathermap": OpenWeatherMapFlavor,
}


def flavor_for(config: FakeProviderConfig) -> Flavor:
    return FLAVORS[config.flavor](config)
