"""The variants on the real traces (``../shared/traces``) at a 300 s TTL: the replay
reproduces the issue's reference for the rule, the model beats the rule on hits and on calls,
and whether the model meets the issue's goal (recorded as a strict xfail while it does not)."""

from __future__ import annotations

from datetime import datetime

import pytest

from agents.cache.traces import APACHE_TRACE, NASA_TRACE
from agents.prefetch.simulate import EPOCH_S, PrefetchRow, compare, load, meets_goal

pytestmark = pytest.mark.skipif(
    not (NASA_TRACE.exists() and APACHE_TRACE.exists()), reason="needs ../shared/traces"
)


@pytest.fixture(scope="module")
def rows() -> Rows:
    return {(r.trace, r.variant): r for r in compare({name: load(name) for name in EPOCH_S})}


Rows = dict[tuple[str, str], PrefetchRow]


def gain_pts(rows: Rows, trace: str, variant: str) -> float:
    return 100 * (rows[trace, variant].hit_ratio - rows[trace, "ttl"].hit_ratio)


def test_the_clock_is_the_traces_own():
    nasa, apache = load("nasa"), load("apache")
    assert nasa[0][0] == EPOCH_S["nasa"] == float(NASA_TRACE.read_text().split("\n")[1].split()[2])
    first = APACHE_TRACE.read_text().split("[", 1)[1].split("]", 1)[0]
    stamp = datetime.strptime(first, "%d/%b/%Y:%H:%M:%S %z").timestamp()
    assert apache[0][0] == EPOCH_S["apache"] <= stamp < EPOCH_S["apache"] + 60
    assert len(nasa) == 30_873 and len(apache) == 9_952


def test_the_rule_reproduces_the_issue_reference(rows):
    # The issue: +10 hit points for +20% calls on NASA, +0 for +24% on Apache (300 s TTL).
    assert gain_pts(rows, "nasa", "rule") == pytest.approx(9.73, abs=0.01)
    assert rows["nasa", "rule"].extra_calls_pct == pytest.approx(20.4, abs=0.05)
    assert gain_pts(rows, "apache", "rule") == 0.0
    assert rows["apache", "rule"].extra_calls_pct == pytest.approx(23.7, abs=0.05)
    assert rows["apache", "rule"].precision == 0.0  # one minute per hour: nothing returns


def test_the_model_beats_the_rule_on_hits_and_on_calls(rows):
    for trace in EPOCH_S:
        assert gain_pts(rows, trace, "model") >= gain_pts(rows, trace, "rule")
        assert rows[trace, "model"].extra_calls_pct < rows[trace, "rule"].extra_calls_pct
        assert rows[trace, "model"].wasted_calls < rows[trace, "rule"].wasted_calls


@pytest.mark.xfail(
    strict=True,
    reason=(
        "the model (threshold 0.5) gets +10.81 hit points for +16.7% calls on NASA; the goal"
        " needs >= +9.73 for <= +13.6% (two thirds of the rule's +20.4%). Apache meets it"
        " (+0.00 for +1.2%; the rule +0.00 for +23.7%). In-sample only threshold 0.56 meets"
        " NASA (+9.81 for +12.9%); on NASA's first half by time no threshold does, and the"
        " nearest there (0.5: +10.78 for +13.9%, limit +13.3%) takes +18.2% on the second."
    ),
)
def test_the_model_meets_the_goal(rows):
    listed = list(rows.values())
    assert all(meets_goal(listed, trace) for trace in EPOCH_S)
