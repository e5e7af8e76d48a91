"""An online logistic regression for P(a key is requested within its next TTL window), with
the decision threshold that turns it into a refresh (issue 24).

The agent asks at each expiry (``should_refresh``) and keeps the inputs as a ``Pending``
label, marks it when a request arrives within the window, and ``learn``s from it when the
window closes: training follows the stream in order, as the agent sees it, so nothing learns
from the future. Positives are learnt at the close too, not at their request: so every label
is as old as every other (learning positives early made the model lean to them while the
negatives were still pending: on NASA, about 0.1 hit point less at equal calls).
Whether the entry was refreshed does not change the label (requests come either way), so the
model needs no exploration and nothing here is random: the same stream gives the same bytes.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import NamedTuple

from agents.prefetch.features import FEATURE_NAMES

__all__ = [
    "FORMAT_VERSION",
    "LogitConfig",
    "LogitModel",
    "Pending",
    "learn",
    "predict",
    "should_refresh",
]

FORMAT_VERSION = 1
_HEAD = struct.Struct("<BHQ")  # version, inputs, examples seen
_LIMIT = 30.0  # |logit| clamp: exp() never overflows, and p stays in (0, 1)


@dataclass(frozen=True, slots=True)
class LogitConfig:
    """The model's settings (not its state: they come from the agent's settings).

    Attributes:
        learning_rate: AdaGrad's base step (per-input steps shrink as gradients add up).
        l2: weight decay per example (keeps weights small while examples are few).
        scaler_memory: examples the running mean and variance of each input remember: a
            capped Welford count, so the scaling follows drift instead of freezing.
        threshold: refresh iff P(requested within the window) >= threshold. A used refresh
            replaces the miss's call (no extra call, one more hit) and a wasted one is one
            extra call, so with a hit worth ``v`` calls a refresh pays from p = 1 / (1 + v).
    """

    learning_rate: float = 0.1
    l2: float = 1e-4
    scaler_memory: int = 2_000
    threshold: float = 0.5


@dataclass(frozen=True, slots=True)
class LogitModel:
    """The model's state: weights over standardised inputs, and the scaler's moments."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]  # running mean of each input
    m2: tuple[float, ...]  # running sum of squared deviations (variance = m2 / seen)
    grad_sq: tuple[float, ...]  # AdaGrad's sums of squared gradients, the bias's last
    seen: int  # examples learnt, capped at scaler_memory

    @classmethod
    def new(cls, inputs: int = len(FEATURE_NAMES)) -> LogitModel:
        """An untrained model (predicts 0.5 for everything) over ``inputs`` inputs."""
        zeros = (0.0,) * inputs
        return cls(zeros, 0.0, zeros, zeros, (0.0,) * (inputs + 1), 0)

    def __repr__(self) -> str:
        weights = ", ".join(f"{w:+.3f}" for w in self.weights)
        return f"LogitModel(seen={self.seen}, bias={self.bias:+.3f}, weights=[{weights}])"

    def to_bytes(self) -> bytes:
        """A versioned encoding for the agent's table (8 bytes per number, 11 + 33n bytes)."""
        n = len(self.weights)
        floats = (self.bias, *self.weights, *self.mean, *self.m2, *self.grad_sq)
        return _HEAD.pack(FORMAT_VERSION, n, self.seen) + struct.pack(f"<{len(floats)}d", *floats)

    @classmethod
    def from_bytes(cls, data: bytes) -> LogitModel | None:
        """The model ``to_bytes`` encoded, or None for bytes that are not one (the agent then
        starts an untrained model, which refreshes nothing until it has learnt)."""
        if len(data) < _HEAD.size or data[0] != FORMAT_VERSION:
            return None
        _version, n, seen = _HEAD.unpack_from(data)
        count = 4 * n + 2
        if len(data) != _HEAD.size + 8 * count:
            return None
        floats = struct.unpack_from(f"<{count}d", data, _HEAD.size)
        if not all(math.isfinite(value) for value in floats):
            return None
        m2, grad_sq = floats[1 + 2 * n : 1 + 3 * n], floats[1 + 3 * n :]
        if min(m2, default=0.0) < 0.0 or min(grad_sq) < 0.0:
            return None
        return cls(floats[1 : 1 + n], floats[0], floats[1 + n : 1 + 2 * n], m2, grad_sq, seen)


class Pending(NamedTuple):
    """A decision waiting for its label: the inputs it saw, when its window closes, and
    whether a request has arrived within it (the label, once closed)."""

    inputs: tuple[float, ...]
    closes_s: float
    requested: bool = False

    def seen(self, now: float) -> Pending:
        """This decision after a request for its key at ``now``."""
        if self.requested or now >= self.closes_s:
            return self
        return self._replace(requested=True)


def _scaled(model: LogitModel, x: tuple[float, ...]) -> list[float]:
    # Standardised with the running moments; an input that has not varied yet scales to 0.
    seen = model.seen
    if seen < 2:
        return [0.0] * len(x)
    return [
        (value - mean) / math.sqrt(m2 / seen) if m2 > 1e-12 else 0.0
        for value, mean, m2 in zip(x, model.mean, model.m2, strict=True)
    ]


def _probability(model: LogitModel, z: list[float]) -> float:
    logit = model.bias + sum(w * v for w, v in zip(model.weights, z, strict=True))
    return 1.0 / (1.0 + math.exp(-max(-_LIMIT, min(_LIMIT, logit))))


def predict(model: LogitModel, x: tuple[float, ...]) -> float:
    """P(requested within the next window | inputs ``x``), from ``KeyFeatures.vector``."""
    return _probability(model, _scaled(model, x))


def should_refresh(model: LogitModel, x: tuple[float, ...], config: LogitConfig) -> bool:
    """Whether to refresh the entry whose key has inputs ``x`` at its expiry."""
    return predict(model, x) > config.threshold  # untrained (0.5): nothing


def learn(model: LogitModel, x: tuple[float, ...], label: bool, config: LogitConfig) -> LogitModel:
    """The model after one labelled example: the scaler takes ``x``, then one AdaGrad step on
    the log loss with L2 (the step uses the updated scaling, so a drifting input's weight is
    learnt on the scale it is read at).

    Args:
        model: the current state.
        x: the inputs the decision saw (``Pending.inputs``).
        label: whether a request arrived within the window.
        config: the learning settings.

    Returns:
        The new state (``model`` is unchanged).
    """
    seen = min(model.seen + 1, config.scaler_memory)
    mean, m2 = [], []
    for value, mu, s in zip(x, model.mean, model.m2, strict=True):
        delta = value - mu
        mu += delta / seen
        s += delta * (value - mu)
        if model.seen + 1 > seen:  # capped: forget one example's worth, as an EWMA would
            s *= (seen - 1) / seen
        mean.append(mu)
        m2.append(s)
    moved = LogitModel(model.weights, model.bias, tuple(mean), tuple(m2), model.grad_sq, seen)
    z = _scaled(moved, x)
    error = _probability(moved, z) - (1.0 if label else 0.0)
    rate, l2 = config.learning_rate, config.l2
    weights, grad_sq = [], []
    for w, v, g2 in zip(model.weights, z, model.grad_sq, strict=False):
        grad = error * v + l2 * w
        g2 += grad * grad
        weights.append(w - rate * grad / math.sqrt(g2 + 1e-12) if g2 else w)
        grad_sq.append(g2)
    bias_g2 = model.grad_sq[-1] + error * error
    bias = model.bias - rate * error / math.sqrt(bias_g2 + 1e-12)
    grad_sq.append(bias_g2)
    return LogitModel(tuple(weights), bias, tuple(mean), tuple(m2), tuple(grad_sq), seen)
