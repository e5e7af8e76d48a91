"""FakeProviderConfig validation and the command line that builds it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from providers.auth.config import ApiKeyAuth, BasicAuth, HmacAuth
from providers.fake.cli import build_parser, config_from_args
from providers.fake.config import ErrorMix, FakeOAuth2Auth, FakeProviderConfig


def parse(*argv: str) -> FakeProviderConfig:
    return config_from_args(build_parser().parse_args(argv))


def test_error_mix_adds_up_to_at_most_one():
    with pytest.raises(ValidationError):
        ErrorMix(status_500=0.6, status_503=0.5)
    mix = ErrorMix(status_500=0.1, timeout=0.2)
    assert mix.outcomes() == [(0.2, "timeout"), (pytest.approx(0.3), 500)]
    assert ErrorMix().outcomes() == []
    with pytest.raises(ValidationError):
        ErrorMix(status_500=0.8, status_429=0.3)
    assert ErrorMix(status_429=0.05).outcomes() == [(0.05, 429)]


def test_error_mix_429_and_its_retry_after_from_flags():
    mix = parse("--error-mix", "500=0.1,429=0.05", "--retry-after-s", "3").error_mix
    assert (mix.status_500, mix.status_429, mix.retry_after_s) == (0.1, 0.05, 3)
    assert parse("--error-mix", "429=0.05").error_mix.retry_after_s == 1


def test_secrets_survive_the_trip_to_a_child_process():
    config = FakeProviderConfig(auth=ApiKeyAuth(in_="query", name="appid", key="s3cr3t"))  # type: ignore[arg-type]
    text = config.to_json_with_secrets()
    assert '"in": "query"' in text
    assert FakeProviderConfig.model_validate_json(text) == config
    assert "s3cr3t" not in config.model_dump_json()


def test_flags():
    config = parse("--latency-ms", "50", "--jitter-ms", "5", "--error-mix",
                   "500=0.01,timeout=0.002", "--seed", "7", "--rate", "100", "--burst", "10",
                   "--flavor", "github", "--api-key", "k")  # fmt: skip
    assert (config.latency_ms, config.jitter_ms, config.seed, config.flavor) == (50, 5, 7, "github")
    assert (config.error_mix.status_500, config.error_mix.timeout) == (0.01, 0.002)
    assert config.rate_limit is not None
    assert (config.rate_limit.rate_per_s, config.rate_limit.burst) == (100, 10)
    assert isinstance(config.auth, ApiKeyAuth)
    assert (config.auth.name, config.auth.in_) == ("X-API-Key", "header")


@pytest.mark.parametrize(
    ("argv", "kind"),
    [
        (("--api-key", "k", "--api-key-query", "appid"), ApiKeyAuth),
        (("--basic", "user:pass"), BasicAuth),
        (("--hmac", "key-1:secret"), HmacAuth),
        (("--oauth2", "client:secret", "--token-expires-in", "5"), FakeOAuth2Auth),
        (("--auth-json", '{"type": "bearer", "token": "t"}'), None),
    ],
)
def test_auth_flags(argv, kind):
    auth = parse(*argv).auth
    assert kind is None or isinstance(auth, kind)


def test_config_file_then_flags_win(tmp_path):
    path = tmp_path / "fake.yaml"
    path.write_text("latency_ms: 10\nflavor: slack\nrate_limit: {rate_per_s: 2, burst: 3}\n")
    config = parse("--config", str(path), "--latency-ms", "20")
    assert (config.latency_ms, config.flavor, config.rate_limit.burst) == (20, "slack", 3)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "argv",
    [
        ("--error-mix", "418=0.5"),
        ("--basic", "no-colon-s3cr3t"),
        ("--bearer", "a", "--api-key", "b"),
    ],
)
def test_bad_flags_say_why_without_secrets(argv):
    with pytest.raises(ValueError, match=r"error-mix|--basic|choose one") as info:
        parse(*argv)
    assert "s3cr3t" not in str(info.value)


def test_event_loop_defaults_to_uvloop_and_can_be_the_standard_one():
    assert build_parser().parse_args([]).event_loop == "uvloop"
    assert build_parser().parse_args(["--event-loop", "asyncio"]).event_loop == "asyncio"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--event-loop", "trio"])
