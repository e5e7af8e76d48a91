"""Finding 18 (security review 2026-12-02; no probe file, inline in the review): settings
built directly, as an SDK user does, never echo the value they refuse.

On the old main ``str(ValidationError)`` of ``Settings(...)`` carried ``input_value=...``, the
secret too when it sat in the bad value ("str(exc) when the secret is inside the bad value:
True"). The CLI's one-line form (``load_settings``) is tested in
tests/unit/streams/cli/test_user_mistakes.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from streams.settings import KafkaSettings, ProviderSettings, QuotaRule, Settings

SECRET = "S3KRIT_value_42"


def settings(**data: Any) -> Settings:
    """``Settings(**data)``: the root runs its sources (environment, file) in ``__init__``."""
    return Settings(**data)


@pytest.mark.parametrize(
    "build",
    [
        lambda: settings(kafka=f"sasl_password={SECRET}"),
        lambda: settings(kafka={"sasl_password": SECRET, "sasl_mechanism": f"x{SECRET}"}),
        lambda: settings(providers={"github": {"secret": [SECRET]}}),
        lambda: settings(providers={"github": SECRET}),
        lambda: settings(app_id=f"{SECRET}/x"),
        lambda: settings(tenants={"t": {"max_priority": SECRET}}),
        lambda: KafkaSettings.model_validate({"sasl_password": [SECRET]}),
        lambda: KafkaSettings.model_validate({"session_timeout_s": SECRET}),
        lambda: ProviderSettings.model_validate({"secret": [SECRET]}),
        lambda: QuotaRule.model_validate({"per_minute": SECRET}),
    ],
)
def test_a_refused_value_is_never_in_the_error(build: Callable[[], Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        build()
    text = str(caught.value)
    assert SECRET not in text
    assert "input_value" not in text
    assert SECRET not in repr(caught.value)
