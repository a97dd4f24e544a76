"""Segments from learned representations, profiled and compared with RFM segments.

1. :func:`customer_representations`: the model's final hidden state at each example's
   latest visible event (the state the heads read), i.e. at the cut-off.
2. :func:`cluster_customers`: seeded k-means (scikit-learn) on the standardised
   representations.
3. :func:`segment_profiles`: per segment the size, the RFM + tenure features of
   :mod:`attnlab.baselines.rfm` (Hughes, 1994) computed from the visible history
   only, the churn rate when the examples carry labels, numeric customer columns
   (e.g. synthetic ground truth) and, per categorical customer column
   (demographics), the most common known value; :func:`segment_demographics` gives
   the full distribution (``"unknown"`` kept).
4. :func:`compare_with_rfm`: contingency table against RFM-quintile segments and the
   adjusted Rand index (Hubert & Arabie, 1985; 1 = same partition, ~0 = unrelated) and
   normalised mutual information.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import nnx
from matplotlib.figure import Figure
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.preprocessing import StandardScaler

from attnlab.baselines.rfm import SegmentLevel, rfm_features, rfm_scores
from attnlab.data.batching import make_batch
from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Examples
from attnlab.explain.attention import TimeReference
from attnlab.insights.groups import UNKNOWN
from attnlab.models.heads import last_state
from attnlab.models.sequence_model import SequenceModel


@nnx.jit
def _last_hidden(model: SequenceModel, inputs: dict) -> jnp.ndarray:
    return last_state(model.hidden(inputs), inputs["lengths"])


def customer_representations(model: SequenceModel, store: SequenceStore, examples: Examples, *,
                             time_reference: TimeReference = TimeReference.LATEST_EVENT,
                             max_len: int | None = None, batch_size: int = 128) -> np.ndarray:
    """``float32[m, d_model]`` final hidden state at each example's latest visible event.

    Args:
      model: a trained :class:`SequenceModel` (any family, LSTM included).
      store: the event store; only events before each example's ``end`` are read.
      examples: the customers / cut-offs.
      time_reference: as the model was trained (churn: ``CUTOFF``).
      max_len: window (default ``model.max_len``).
      batch_size: rows per forward pass (fixed shape, one compilation).

    Returns:
      Representations (zeros for an empty history).
    """
    max_len = int(max_len or model.max_len)
    cut = TimeReference(time_reference) is TimeReference.CUTOFF
    out = []
    for lo in range(0, len(examples), batch_size):
        sl = slice(lo, lo + batch_size)
        b = make_batch(store, customers=examples.customer[sl], ends=examples.end[sl],
                       cutoffs=examples.cutoff[sl] if cut else None, max_len=max_len)
        x = b.model_inputs()
        n = len(b.lengths)
        x = {k: np.concatenate([a, np.zeros((batch_size - n,) + a.shape[1:], a.dtype)]) for k, a in x.items()}
        out.append(np.asarray(_last_hidden(model, x))[:n])
    if not out:
        return np.zeros((0, model.encoder.d_model), np.float32)
    return np.concatenate(out).astype(np.float32)


def cluster_customers(representations: np.ndarray, *, n_clusters: int = 4, seed: int = 0,
                      standardize: bool = True, n_init: int = 10) -> np.ndarray:
    """Seeded k-means segments ``int64[m]`` in ``0 .. n_clusters - 1`` (numbered by size,
    largest first, so the labels are stable across runs)."""
    x = np.asarray(representations, np.float64)
    if len(x) < n_clusters:
        raise ValueError(f"{len(x)} customers cannot form {n_clusters} clusters")
    if standardize:
        x = StandardScaler().fit_transform(x)
    raw = KMeans(n_clusters=n_clusters, random_state=seed, n_init=n_init).fit_predict(x)
    sizes = np.bincount(raw, minlength=n_clusters)
    rank = np.empty(n_clusters, np.int64)
    rank[np.lexsort((np.arange(n_clusters), -sizes))] = np.arange(n_clusters)
    return rank[raw]


def _customer_columns(store: SequenceStore, examples: Examples) -> tuple[dict, dict]:
    cust = np.asarray(examples.customer)
    cats = {}
    for name, codes in store.customer_side.items():
        c = np.asarray(codes)[cust]
        lab = np.asarray(store.customer_side_vocab[name], dtype=object)[c]
        lab[c == 0] = UNKNOWN
        cats[name] = lab
    nums = {name: np.asarray(v, np.float64)[cust] for name, v in store.customer_numeric.items()}
    return cats, nums


def segment_profiles(store: SequenceStore, examples: Examples, segments: np.ndarray) -> pd.DataFrame:
    """One row per segment: ``n``, ``share``, mean RFM + tenure features
    (:data:`attnlab.baselines.rfm.FEATURES`), ``churn_rate`` (if labelled), the mean of
    every numeric customer column, and per categorical customer column the most
    common known value (``<col>_top``) and the share of known values (``<col>_known``)."""
    seg = np.asarray(segments)
    if seg.shape != (len(examples),):
        raise ValueError(f"segments has shape {seg.shape}; expected ({len(examples)},)")
    f = rfm_features(store, examples)
    f.insert(0, "segment", seg)
    if examples.label is not None:
        f["churn_rate"] = np.asarray(examples.label, np.float64)
    cats, nums = _customer_columns(store, examples)
    for name, v in nums.items():
        f[name] = v
    g = f.groupby("segment", sort=True)
    prof = g.mean(numeric_only=True)
    prof.insert(0, "n", g.size())
    prof.insert(1, "share", prof["n"] / len(f))
    for name, lab in cats.items():
        d = pd.DataFrame({"segment": seg, "v": lab})
        known = d[d["v"] != UNKNOWN]
        top = known.groupby("segment")["v"].agg(lambda s: s.value_counts().index[0])
        prof[f"{name}_top"] = top.reindex(prof.index)
        prof[f"{name}_known"] = (d.assign(k=d["v"] != UNKNOWN).groupby("segment")["k"].mean()
                                 .reindex(prof.index))
    return prof.reset_index()


def segment_demographics(store: SequenceStore, examples: Examples, segments: np.ndarray) -> pd.DataFrame:
    """Long table: ``segment``, ``column``, ``value`` (``"unknown"`` included), ``n`` and
    ``share`` within the segment, for every categorical customer column."""
    seg = np.asarray(segments)
    cats, _ = _customer_columns(store, examples)
    parts = []
    for name, lab in cats.items():
        d = pd.DataFrame({"segment": seg, "value": lab}).value_counts().rename("n").reset_index()
        d["share"] = d["n"] / d.groupby("segment")["n"].transform("sum")
        d.insert(1, "column", name)
        parts.append(d.sort_values(["segment", "value"]))
    cols = ["segment", "column", "value", "n", "share"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


@dataclasses.dataclass(frozen=True)
class SegmentComparison:
    """Learned segments vs RFM segments.

    Attributes:
      ari: adjusted Rand index; nmi: normalised mutual information.
      contingency: counts, learned segments as rows, RFM segments as columns.
      rfm_segments: ``str[m]`` RFM segment of each example.
    """

    ari: float
    nmi: float
    contingency: pd.DataFrame
    rfm_segments: np.ndarray


def compare_with_rfm(store: SequenceStore, examples: Examples, segments: np.ndarray, *,
                     level: SegmentLevel = SegmentLevel.NAMED, edges: np.ndarray | None = None) -> SegmentComparison:
    """Compare learned segments with RFM-quintile segments of the same examples.

    Args:
      store, examples: as for :func:`segment_profiles`.
      segments: ``[m]`` learned segment labels.
      level: ``NAMED`` (7 named RFM segments) or ``CODE`` (``R?F?M?``).
      edges: quintile breakpoints (:func:`attnlab.baselines.rfm.quintile_edges` of a
        reference population); default the examples' own quintiles.
    """
    rfm = rfm_scores(rfm_features(store, examples), edges)
    lab = rfm["segment" if SegmentLevel(level) is SegmentLevel.NAMED else "code"].to_numpy(str)
    seg = np.asarray(segments)
    table = pd.crosstab(pd.Series(seg, name="segment"), pd.Series(lab, name="rfm_segment"))
    return SegmentComparison(ari=float(adjusted_rand_score(lab, seg)),
                             nmi=float(normalized_mutual_info_score(lab, seg)),
                             contingency=table, rfm_segments=lab)


def plot_segments(representations: np.ndarray, segments: np.ndarray, *,
                  comparison: SegmentComparison | None = None, seed: int = 0) -> Figure:
    """PCA scatter of the representations coloured by segment, and (if given) the
    contingency table with RFM segments as a heatmap (row-normalised)."""
    x = StandardScaler().fit_transform(np.asarray(representations, np.float64))
    xy = PCA(n_components=2, random_state=seed).fit_transform(x) if x.shape[1] >= 2 else np.c_[x, 0 * x]
    n_panels = 1 + (comparison is not None)
    fig = Figure(figsize=(5.5 * n_panels, 4.2))
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    seg = np.asarray(segments)
    for s in np.unique(seg):
        m = seg == s
        axes[0].scatter(xy[m, 0], xy[m, 1], s=10, alpha=0.7, label=f"segment {s} (n={m.sum()})")
    axes[0].set(xlabel="PC 1", ylabel="PC 2", title="learned representations (PCA)")
    axes[0].legend(fontsize=7)
    if comparison is not None:
        t = comparison.contingency
        share = t.div(t.sum(axis=1), axis=0)
        im = axes[1].imshow(share.to_numpy(), aspect="auto", cmap="Blues", vmin=0, vmax=1)
        axes[1].set_xticks(range(t.shape[1]), t.columns, rotation=45, ha="right", fontsize=8)
        axes[1].set_yticks(range(t.shape[0]), [f"segment {s}" for s in t.index])
        for (i, j), v in np.ndenumerate(t.to_numpy()):
            axes[1].text(j, i, str(v), ha="center", va="center", fontsize=7)
        axes[1].set_title(f"vs RFM segments (ARI {comparison.ari:.2f}, NMI {comparison.nmi:.2f})")
        fig.colorbar(im, ax=axes[1], fraction=0.04, label="share of segment")
    fig.tight_layout()
    return fig


__all__ = ["SegmentComparison", "cluster_customers", "compare_with_rfm",
           "customer_representations", "plot_segments", "segment_demographics", "segment_profiles"]
