"""Tooling around the wire contract (codec benchmark, compatibility checks); not the contract."""
