"""Explain predictions: attention attribution for one customer (see ``docs/insights.md``).

Aggregate insights (journeys, segments, fairness, cold start) live in
:mod:`attnlab.insights`.
"""

from attnlab.explain.attention import (
    AttentionTrace, Explanation, LinearWeights, NoAttentionWeightsError, TimeReference,
    attention_rollout, event_table, explain_example, explain_prediction, last_query_weights,
    model_family, top_events, trace_attention,
)
from attnlab.explain.plots import plot_attention_heatmap, plot_top_events

__all__ = [
    "AttentionTrace", "Explanation", "LinearWeights", "NoAttentionWeightsError", "TimeReference",
    "attention_rollout", "event_table", "explain_example", "explain_prediction",
    "last_query_weights", "model_family", "plot_attention_heatmap", "plot_top_events",
    "top_events", "trace_attention",
]
