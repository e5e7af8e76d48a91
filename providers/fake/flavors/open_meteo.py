"""Open-Meteo flavor: no auth, ``GET /v1/forecast``, errors ``{"error": true, "reason": ...}``."""

from __future__ import annotations

import time

from aiohttp import web

from providers.fake.flavors.base import Flavor, RateState, Route, Verdict, dumps, reason, respond

_LIMIT_REASON = "Minutely API request limit exceeded. Please try again in one minute."


def _error(text: str) -> bytes:
    return dumps({"error": True, "reason": text})


class OpenMeteoFlavor(Flavor):
    name = "open_meteo"

    def extra_routes(self) -> list[Route]:
        return [Route("GET", "/v1/forecast", self.forecast)]

    async def forecast(self, request: web.Request) -> web.Response:
        query = request.query
        coords: list[float] = []
        for name, bound in (("latitude", 90.0), ("longitude", 180.0)):
            raw = query.get(name)
            try:
                value = float(raw) if raw is not None else None
            except ValueError:
                value = None
            if value is None:
                return respond(400, _error(f"Value of type 'Float' required for key '{name}'."))
            if not -bound <= value <= bound:
                bounds = f"-{bound:g} to {bound:g}"
                return respond(
                    400,
                    _error(f"{name.capitalize()} must be in range of {bounds}°. Given: {value}."),
                )
            coords.append(value)
        latitude, longitude = coords
        temperature = round(15 + latitude / 10 - abs(longitude) / 50, 1)  # deterministic
        body: dict[str, object] = {
            "latitude": latitude,
            "longitude": longitude,
            "generationtime_ms": 0.05,
            "utc_offset_seconds": 0,
            "timezone": "GMT",
            "timezone_abbreviation": "GMT",
            "elevation": 38.0,
        }
        now = time.strftime("%Y-%m-%dT%H:00", time.gmtime())
        if current := query.get("current"):
            fields = current.split(",")
            body["current_units"] = {
                "time": "iso8601",
                "interval": "seconds",
                **dict.fromkeys(fields, "°C"),
            }
            body["current"] = {"time": now, "interval": 900, **dict.fromkeys(fields, temperature)}
        if hourly := query.get("hourly"):
            fields = hourly.split(",")
            body["hourly_units"] = {"time": "iso8601", **dict.fromkeys(fields, "°C")}
            body["hourly"] = {"time": [now] * 3, **{f: [temperature] * 3 for f in fields}}
        return respond(200, dumps(body))

    def error_body(self, status: int) -> bytes:
        return _error(_LIMIT_REASON if status == 429 else reason(status))

    def unauthorized(self, verdict: Verdict) -> web.Response:
        return respond(401, _error("Unauthorized"))

    def rate_limited(self, state: RateState | None, *, retry_after_s: int) -> web.Response:
        return respond(429, _error(_LIMIT_REASON))  # Open-Meteo sends no limit headers

    def rate_headers(self, state: RateState) -> dict[str, str]:
        return {}
