"""Placeholder until the fake provider lands."""
FAKE_PROVIDER = None
