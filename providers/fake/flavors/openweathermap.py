"""OpenWeatherMap flavor: ``appid`` query key, errors ``{"cod": ..., "message": ...}``.

Like the real API, ``cod`` is a number for 401/429 and a string for 400/404. Cities outside a
small built-in table are "city not found".
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from providers.fake.flavors.base import Flavor, RateState, Route, Verdict, dumps, reason, respond

_CITIES = {
    "london": ("London", "GB", 51.5085, -0.1257),
    "berlin": ("Berlin", "DE", 52.5244, 13.4105),
    "paris": ("Paris", "FR", 48.8534, 2.3488),
    "tokyo": ("Tokyo", "JP", 35.6895, 139.6917),
    "new york": ("New York", "US", 40.7143, -74.006),
}
_UNAUTHORIZED = "Invalid API key. Please see https://openweathermap.org/faq#error401 for more info."
_BLOCKED = (
    "Your account is temporary blocked due to exceeding of requests limitation of your "
    "subscription type. Please choose the proper subscription "
    "https://openweathermap.org/price"
)


def _error(status: int, message: str) -> bytes:
    # The real API is inconsistent: numeric cod for 401/429, string cod for 400/404/5xx.
    cod: int | str = status if status in (401, 429) else str(status)
    return dumps({"cod": cod, "message": message})


class OpenWeatherMapFlavor(Flavor):
    name = "openweathermap"

    def extra_routes(self) -> list[Route]:
        return [
            Route("GET", "/data/2.5/weather", self.weather),
            Route("GET", "/data/2.5/forecast", self.forecast),
            Route("GET", "/geo/1.0/direct", self.geocode),
        ]

    async def weather(self, request: web.Request) -> web.Response:
        place = _locate(request)
        if isinstance(place, web.Response):
            return place
        return respond(200, dumps({**_current(place, request.query.get("units")), "cod": 200}))

    async def forecast(self, request: web.Request) -> web.Response:
        place = _locate(request)
        if isinstance(place, web.Response):
            return place
        count = min(int(request.query.get("cnt", "3") or 3), 40)
        entries = [_current(place, request.query.get("units")) for _ in range(count)]
        city = {"name": place[0], "country": place[1], "coord": {"lat": place[2], "lon": place[3]}}
        return respond(
            200, dumps({"cod": "200", "message": 0, "cnt": count, "list": entries, "city": city})
        )

    async def geocode(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "")
        found = _CITIES.get(query.split(",")[0].strip().lower())
        if not query:
            return respond(400, _error(400, "Nothing to geocode"))
        result = (
            []
            if found is None
            else [{"name": found[0], "country": found[1], "lat": found[2], "lon": found[3]}]
        )
        return respond(200, dumps(result))

    def error_body(self, status: int) -> bytes:
        return _error(status, _BLOCKED if status == 429 else reason(status))

    def unauthorized(self, verdict: Verdict) -> web.Response:
        return respond(401, _error(401, _UNAUTHORIZED))

    def rate_limited(self, state: RateState | None, *, retry_after_s: int) -> web.Response:
        return respond(429, _error(429, _BLOCKED))

    def rate_headers(self, state: RateState) -> dict[str, str]:
        return {}


Place = tuple[str, str, float, float]


def _locate(request: web.Request) -> Place | web.Response:
    query = request.query
    if q := query.get("q"):
        found = _CITIES.get(q.split(",")[0].strip().lower())
        return found if found is not None else respond(404, _error(404, "city not found"))
    lat, lon = query.get("lat"), query.get("lon")
    if lat is not None and lon is not None:
        try:
            return ("", "", float(lat), float(lon))
        except ValueError:
            return respond(400, _error(400, "wrong latitude"))
    if query.get("id") or query.get("zip"):
        return _CITIES["london"]
    return respond(400, _error(400, "Nothing to geocode"))


def _current(place: Place, units: str | None) -> dict[str, Any]:
    name, country, lat, lon = place
    celsius = round(15 + lat / 10 - abs(lon) / 50, 2)
    temp = (
        celsius
        if units == "metric"
        else celsius * 9 / 5 + 32
        if units == "imperial"
        else (celsius + 273.15)
    )
    return {
        "coord": {"lon": lon, "lat": lat},
        "weather": [{"id": 800, "main": "Clear", "description": "clear sky", "icon": "01d"}],
        "main": {
            "temp": round(temp, 2),
            "feels_like": round(temp, 2),
            "pressure": 1012,
            "humidity": 60,
        },
        "dt": int(time.time()),
        "sys": {"country": country},
        "name": name,
    }
