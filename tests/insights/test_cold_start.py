"""Cold-start breakdown: history-length buckets, planted gap / no gap, empty buckets kept."""

import numpy as np
import pytest

from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Examples
from attnlab.insights.cold_start import (
    DEFAULT_BUCKETS, bucket_labels, cold_start_report, history_length_groups, history_lengths,
)
from attnlab.insights.fairness import fairness_report


def ragged_store(lengths):
    lengths = np.asarray(lengths, np.int64)
    m = int(lengths.sum())
    off = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return SequenceStore(
        offsets=off, customer_ids=np.arange(len(lengths), dtype=np.int64),
        item=np.ones(m, np.int32), time=np.arange(m, dtype=np.int64),
        event_type=np.ones(m, np.int8), basket=np.arange(m, dtype=np.int64),
        quantity=np.ones(m, np.float32), value=np.ones(m, np.float32),
        item_vocab=np.array([-1, 7], np.int64),
    )


def test_bucket_labels_and_assignment():
    assert bucket_labels() == ["1-10", "11-50", "51-200", "201-1000", ">1000"]
    assert bucket_labels((1, 5)) == ["1", "2-5", ">5"]
    labels, order = history_length_groups(np.array([0, 1, 10, 11, 50, 51, 200, 201, 1000, 1001]))
    assert list(labels) == ["0", "1-10", "1-10", "11-50", "11-50", "51-200", "51-200",
                            "201-1000", "201-1000", ">1000"]
    assert order[0] == "0"
    with pytest.raises(ValueError, match="increasing"):
        bucket_labels((10, 5))


def test_lengths_count_only_events_before_the_cutoff():
    s = ragged_store([5, 30, 120])
    c = np.arange(3)
    ex = Examples(customer=c, end=s.offsets[c] + np.array([2, 30, 60]), cutoff=np.zeros(3, np.int64))
    np.testing.assert_array_equal(history_lengths(s, ex), [2, 30, 60])


def test_planted_gap_and_no_gap_by_history_length():
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(1, 11, 300), rng.integers(51, 201, 300)])
    s = ragged_store(lengths)
    c = np.arange(len(lengths))
    ex = Examples(customer=c, end=s.offsets[c + 1], cutoff=np.zeros(len(c), np.int64))
    long = lengths > 50
    gap = {"ndcg@10": np.where(long, 0.5, 0.1) + 0.05 * rng.random(len(c))}
    rep = cold_start_report(gap, s, ex, n_boot=300)
    t = rep.table.set_index("group")
    assert list(t.index) == bucket_labels(DEFAULT_BUCKETS)  # every bucket, in order, no "0"
    assert t.loc["11-50", "n"] == 0 and t.loc[">1000", "n"] == 0 and not t.loc["11-50", "in_gap"]
    g = rep.gaps.iloc[0]
    assert (g["by"], g["max_group"], g["min_group"]) == ("history_length", "51-200", "1-10")
    assert abs(g["gap"] - 0.4) < 0.02 and g["gap_ci_low"] > 0.35
    same = {"ndcg@10": (rng.random(len(c)) < 0.3).astype(float)}
    g = cold_start_report(same, s, ex, n_boot=300).gaps.iloc[0]
    assert g["gap_ci_low"] <= 0.0 <= g["gap_ci_high"]
    # same output shape as the fairness report
    by_len = fairness_report(gap, s, ex, by=np.where(long, "long", "short"), n_boot=10)
    assert list(rep.table.columns) == list(by_len.table.columns)
    assert list(rep.gaps.columns) == list(by_len.gaps.columns)


def test_empty_histories_get_their_own_bucket():
    s = ragged_store([3, 4])
    ex = Examples(customer=np.array([0, 1]), end=np.array([0, 7]), cutoff=np.zeros(2, np.int64))
    rep = cold_start_report({"hr@10": np.array([0.0, 1.0])}, s, ex, buckets=(2, 5), n_boot=10)
    t = rep.table.set_index("group")
    assert list(t.index) == ["0", "1-2", "3-5", ">5"] and t.loc["0", "n"] == 1 and t.loc["3-5", "n"] == 1
