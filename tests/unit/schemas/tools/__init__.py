"""Unit tests of the wire contract tooling: codec benchmark, compatibility checks."""
