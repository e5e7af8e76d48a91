"""A fake third-party API (a real aiohttp server) for tests, the demo and benchmarks."""
