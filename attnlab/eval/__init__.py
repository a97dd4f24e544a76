"""Evaluation: full-catalogue ranking metrics (whole or in item chunks), churn metrics and
evaluation loops."""

from attnlab.eval.chunked import ChunkedScorer, target_counts, top_k
from attnlab.eval.evaluate import (
    EvalResult,
    evaluate_churn,
    evaluate_next_basket,
    evaluate_next_item,
)
from attnlab.eval.metrics import (
    average_precision,
    basket_metrics,
    basket_target_positions,
    brier,
    churn_metrics,
    log_loss,
    rank_metrics,
    roc_auc,
    target_ranks,
)

__all__ = [
    "ChunkedScorer", "target_counts", "top_k",
    "EvalResult", "evaluate_churn", "evaluate_next_basket", "evaluate_next_item",
    "average_precision", "basket_metrics", "basket_target_positions", "brier",
    "churn_metrics", "log_loss", "rank_metrics", "roc_auc", "target_ranks",
]
