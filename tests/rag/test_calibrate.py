from __future__ import annotations

import pytest

from gateway.rag.calibrate import OFF_TOPIC_QUESTIONS, recommend_threshold, summarise


def test_summarise() -> None:
    dist = summarise([float(i) / 10 for i in range(11)])
    assert (dist.min, dist.p50, dist.max, dist.n) == (0.0, 0.5, 1.0, 11)
    assert dist.p10 == pytest.approx(0.1)
    assert dist.p90 == pytest.approx(0.9)
    with pytest.raises(ValueError, match="empty"):
        summarise([])


def test_separable_scores_give_the_middle_of_the_gap() -> None:
    rec = recommend_threshold([0.5, 0.6, 0.7, 0.8], [0.05, 0.1, 0.2, 0.3])
    assert rec.threshold == pytest.approx(0.4)
    assert (rec.in_domain_below, rec.off_topic_above) == (0, 0)
    assert "gap of 0.200" in rec.explanation


def test_overlapping_scores_minimise_errors() -> None:
    inside = [0.30, 0.55, 0.6, 0.65, 0.7, 0.75]
    outside = [0.1, 0.15, 0.2, 0.35, 0.4]
    rec = recommend_threshold(inside, outside)
    # Best cut: between 0.4 and 0.55 (one in-domain question below, no off-topic above).
    assert 0.4 < rec.threshold < 0.55
    assert rec.threshold == pytest.approx(0.475)
    assert (rec.in_domain_below, rec.off_topic_above) == (1, 0)
    assert "overlap" in rec.explanation


def test_recommendation_needs_both_samples() -> None:
    with pytest.raises(ValueError, match="at least one"):
        recommend_threshold([0.5], [])


def test_builtin_off_topic_list() -> None:
    assert len(OFF_TOPIC_QUESTIONS) >= 30
    assert len(set(OFF_TOPIC_QUESTIONS)) == len(OFF_TOPIC_QUESTIONS)
