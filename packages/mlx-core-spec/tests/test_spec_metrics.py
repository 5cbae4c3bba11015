"""SpecMetrics counters against hand-computed values."""

from __future__ import annotations

import pytest
from mlx_core.spec import SpecMetrics


def test_counters_and_rates() -> None:
    m = SpecMetrics()
    rounds = [(3, 3), (3, 1), (2, 0), (0, 0), (4, 2)]
    for drafted, accepted in rounds:
        m.record(drafted, accepted)
    assert (m.drafted, m.accepted, m.target_forwards) == (12, 6, 5)
    assert m.emitted == 6 + 5
    assert m.acceptance_rate == pytest.approx(6 / 12)
    assert m.mean_accepted_length == pytest.approx(11 / 5)
    assert m.drafted_per_position == [4, 4, 3, 1]
    assert m.accepted_per_position == [3, 2, 1, 0]
    # position i is reached when positions < i were accepted (and i was drafted)
    assert m.reached_per_position == [4, 3, 2, 0]
    assert m.per_position_acceptance == pytest.approx([3 / 4, 2 / 3, 1 / 2, 0.0])
    m.elapsed_s = 2.0
    assert m.tokens_per_second == pytest.approx(5.5)
    assert "rate=0.500" in m.summary()


def test_empty_metrics_are_zero_not_nan() -> None:
    m = SpecMetrics()
    assert (m.acceptance_rate, m.mean_accepted_length, m.tokens_per_second) == (0.0, 0.0, 0.0)


def test_invalid_record_rejected() -> None:
    with pytest.raises(ValueError, match="accepted"):
        SpecMetrics().record(2, 3)
