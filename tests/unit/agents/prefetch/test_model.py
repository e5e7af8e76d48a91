"""The online model: it learns a separable stream, is deterministic, round-trips through its
bytes (garbage reads as None), and its decision and pending labels behave."""

from __future__ import annotations

import math
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.prefetch.features import FEATURE_NAMES
from agents.prefetch.model import (
    FORMAT_VERSION,
    LogitConfig,
    LogitModel,
    Pending,
    learn,
    predict,
    should_refresh,
)

CHECK = settings(database=None, deadline=None, max_examples=100)
CONFIG = LogitConfig()
N = len(FEATURE_NAMES)


def toy_stream(seed: int, n: int) -> list[tuple[tuple[float, ...], bool]]:
    """Labelled by the sign of a weighted sum of two inputs (offset and scaled unlike the
    others, so the scaler matters), with noise inputs beside them."""
    rng = random.Random(seed)
    stream = []
    for _ in range(n):
        x = [rng.gauss(0, 1) for _ in range(N)]
        x[0] = 100 + 30 * x[0]
        x[3] = 0.01 * x[3]
        stream.append((tuple(x), (x[0] - 100) / 30 - 2 * x[3] / 0.01 > 0))
    return stream


def train(stream: list[tuple[tuple[float, ...], bool]]) -> LogitModel:
    model = LogitModel.new()
    for x, label in stream:
        model = learn(model, x, label, CONFIG)
    return model


def test_an_untrained_model_says_half():
    model = LogitModel.new()
    assert predict(model, (1.0,) * N) == 0.5
    assert not should_refresh(model, (1.0,) * N, CONFIG)  # refreshes nothing until it learns
    assert not should_refresh(model, (1.0,) * N, LogitConfig(threshold=0.6))


def test_it_learns_a_separable_stream():
    model = train(toy_stream(1, 3_000))
    held_out = toy_stream(2, 1_000)
    right = sum((predict(model, x) >= 0.5) == label for x, label in held_out)
    assert right / len(held_out) > 0.97
    assert model.weights[0] > 0 > model.weights[3]
    assert max(abs(w) for w in model.weights[4:]) < 0.5 * min(
        abs(model.weights[0]), abs(model.weights[3])
    )


def test_the_same_stream_gives_the_same_bytes():
    stream = toy_stream(7, 500)
    assert train(stream).to_bytes() == train(stream).to_bytes()
    assert train(stream).to_bytes() != train(toy_stream(8, 500)).to_bytes()


def test_learning_leaves_the_old_model_alone():
    model = train(toy_stream(3, 50))
    before = model.to_bytes()
    learn(model, toy_stream(4, 1)[0][0], True, CONFIG)
    assert model.to_bytes() == before


def test_round_trip_and_size():
    model = train(toy_stream(5, 300))
    data = model.to_bytes()
    assert len(data) == 11 + 8 * (4 * N + 2) and data[0] == FORMAT_VERSION
    assert LogitModel.from_bytes(data) == model
    assert "seen=300" in repr(model)


def test_the_scaler_memory_caps_seen():
    model = LogitModel.new()
    config = LogitConfig(scaler_memory=10)
    for x, label in toy_stream(6, 30):
        model = learn(model, x, label, config)
    assert model.seen == 10 and min(model.m2) > 0


GOOD = LogitModel.new().to_bytes()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(GOOD[:-1], id="truncated"),
        pytest.param(bytes([FORMAT_VERSION + 1]) + GOOD[1:], id="another version"),
        pytest.param(GOOD[:-8] + struct.pack("<d", math.inf), id="inf"),
        pytest.param(GOOD[:-8] + struct.pack("<d", -1.0), id="negative AdaGrad sum"),
        pytest.param(GOOD[:1] + b"\xff\xff" + GOOD[3:], id="wrong input count"),
    ],
)
def test_bytes_that_are_no_model_read_as_none(data):
    assert LogitModel.from_bytes(data) is None


@CHECK
@given(st.binary(max_size=500))
def test_any_bytes_decode_to_a_model_or_none(data):
    model = LogitModel.from_bytes(data)
    if model is not None:
        assert 0.0 <= predict(model, (0.0,) * len(model.weights)) <= 1.0


@CHECK
@given(
    st.lists(st.floats(-1e6, 1e6), min_size=N, max_size=N),
    st.lists(st.tuples(st.lists(st.floats(-1e3, 1e3), min_size=N, max_size=N), st.booleans())),
)
def test_predictions_are_probabilities(x, stream):
    model = LogitModel.new()
    for inputs, label in stream:
        model = learn(model, tuple(inputs), label, CONFIG)
    assert 0.0 < predict(model, tuple(x)) < 1.0


def test_a_pending_label_counts_requests_within_its_window_only():
    pending = Pending((0.0,) * N, closes_s=100.0)
    assert not pending.seen(100.0).requested  # the window is [decision, closes)
    assert pending.seen(99.9).requested
    assert pending.seen(50.0).seen(150.0).requested
