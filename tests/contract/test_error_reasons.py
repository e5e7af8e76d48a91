"""Every provider error maps to its own dead-letter/result reason (httpx's "all mapped" test)."""

from __future__ import annotations

import providers.errors as errors
from providers.errors import ProviderError, RetriableError


def all_subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= all_subclasses(sub)
    return found


def test_every_error_class_has_its_own_reason():
    classes = {c for c in all_subclasses(ProviderError) if c.__module__ == errors.__name__}
    reasons = [c.reason for c in classes]
    assert len(reasons) == len(set(reasons)), "reasons are unique"
    assert all(r and r.islower() and " " not in r for r in reasons)


def test_retriable_flag_follows_the_tree():
    for cls in all_subclasses(ProviderError):
        assert cls.retriable == issubclass(cls, RetriableError), cls


def test_entry_point_fake_loads():
    from importlib.metadata import entry_points

    from providers.declaration import ProviderSpec

    (point,) = [p for p in entry_points(group="callstream.dev_providers") if p.name == "fake"]
    assert isinstance(point.load(), ProviderSpec)


def test_the_product_group_ships_no_test_double():
    from importlib.metadata import entry_points

    assert "fake" not in {p.name for p in entry_points(group="callstream.providers")}
