"""Explain one prediction: which past events did the model attend to?

Production attention paths (``xla_chunked``, ``pallas_triton``) never materialise the
``length x length`` weights. To explain one customer, :func:`trace_attention` runs the
model's *own* forward pass (:meth:`SequenceModel.hidden`: its encoder, its blocks with
whatever norms and residuals they have) on a view ``nnx.view(model, record_weights=True)``
in which every attention layer takes its materialising path: it computes its weights with
:meth:`SelfAttention.attention_weights`'s code (its own :class:`attnlab.ops.AttentionSpec`:
causal mask, ragged length, time-decay slopes and timestamps, local window + global
positions), computes its output from them, and sows weights, input and output
(``nnx.capture``). Nothing of a block is re-implemented here, so a change to a block
cannot make explanations drift; the hidden states equal :meth:`SequenceModel.hidden`
up to the fast path's rounding (tested for ``vanilla``, ``time_decay``, ``sparse`` and
``linear``).

Weights are read from the *last visible position* (the state every head predicts
from). Across layers they are combined by attention rollout (Abnar & Zuidema, 2020,
"Quantifying Attention Flow in Transformers"): per layer the head-averaged weights
``A`` get the residual connection as ``0.5 * A + 0.5 * I`` (rows renormalised), and the
layers are multiplied, latest layer on the left.

With the copy item head, the head's own pointer over past items (which past
purchases the next-item prediction would repeat) is added as view ``"copy"``, with
its repeat gate.

Only events the model sees are explained: the last ``max_len`` events strictly before
the cut-off (``end`` of the example). Later events never enter (causal, and cut off
by construction).

Families without softmax weights: ``lstm`` (recurrent) raises; ``linear`` raises
unless ``linear=LinearWeights.IMPLIED``, which returns the implied normalised
linear-attention weights ``w_ij = gamma^(i-j) phi(q_i).phi(k_j) / (sum_j' ... + eps)``
(Katharopoulos et al., 2020; the layer's own ``eps``) -- exact for the layer output, rows
sum to ``1 - O(eps)``.
"""

from __future__ import annotations

import dataclasses
import enum

import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import nnx

from attnlab.data.batching import make_batch
from attnlab.data.schema import EventType
from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Examples
from attnlab.models.attention_layers import RECORDED, LinearAttention, SelfAttention
from attnlab.models.backbones import LSTMBackbone
from attnlab.models.registry import ATTENTION_FAMILIES
from attnlab.models.sequence_model import SequenceModel

SECONDS_PER_DAY = 86_400.0
ROLLOUT = "rollout"
COPY = "copy"


class LinearWeights(enum.Enum):
    """What :func:`trace_attention` does for the ``linear`` family."""

    RAISE = "raise"  # linear attention has no softmax weights: raise an error
    IMPLIED = "implied"  # return the implied normalised linear-attention weights


class TimeReference(enum.Enum):
    """What the model's time features are relative to (must match how it was trained).

    ``LATEST_EVENT``: the latest visible event (next_item / next_basket tasks).
    ``CUTOFF``: the example's cut-off, the known scoring date (churn task).
    """

    LATEST_EVENT = "latest_event"
    CUTOFF = "cutoff"


class NoAttentionWeightsError(TypeError):
    """The model family has no softmax attention weights to explain."""


@dataclasses.dataclass(frozen=True)
class AttentionTrace:
    """Result of :func:`trace_attention` for a batch (numpy arrays).

    Attributes:
      family: model family name (``vanilla``, ``time_decay``, ...).
      weights: ``float32[layers, batch, heads, L, L]`` attention weights (query, key);
        zero on masked pairs and padded rows.
      attention_inputs: ``float32[layers, batch, L, d]`` what each attention layer reads
        (in the standard block, ``norm1`` of the block input).
      attention_outputs: ``float32[layers, batch, L, d]`` each attention layer's output
        (after its output projection), computed from ``weights``.
      hidden: ``float32[batch, L, d]`` final hidden states (after the final LayerNorm).
      lengths: ``int32[batch]``.
    """

    family: str
    weights: np.ndarray
    attention_inputs: np.ndarray
    attention_outputs: np.ndarray
    hidden: np.ndarray
    lengths: np.ndarray


def model_family(model: SequenceModel) -> str:
    """Family name of ``model`` (``vanilla``, ``time_decay``, ``sparse``, ``linear``, ``lstm``)."""
    if isinstance(model.backbone, LSTMBackbone):
        return "lstm"
    blocks = getattr(model.backbone, "blocks", None)
    if not blocks:
        return type(model.backbone).__name__
    layer = type(blocks[0].attention)
    for name, cls in ATTENTION_FAMILIES.items():
        if layer is cls:
            return name
    return layer.__name__


def _check_explainable(model: SequenceModel, linear: LinearWeights) -> str:
    family = model_family(model)
    blocks = getattr(model.backbone, "blocks", None)
    if isinstance(model.backbone, LSTMBackbone) or not blocks:
        raise NoAttentionWeightsError(
            f"model family {family!r} has no attention layers, so there are no attention weights "
            "to explain. Use an occlusion or gradient attribution over its input events instead, "
            "or explain a softmax family (model=vanilla | time_decay | sparse).")
    for block in blocks:
        att = block.attention
        if isinstance(att, LinearAttention):
            if linear is LinearWeights.RAISE:
                raise NoAttentionWeightsError(
                    f"model family {family!r} (linear attention) has no softmax attention weights. "
                    "Pass linear=LinearWeights.IMPLIED for the implied normalised linear-attention "
                    "weights, or explain a softmax family (model=vanilla | time_decay | sparse).")
        elif not isinstance(att, SelfAttention):
            raise NoAttentionWeightsError(
                f"model family {family!r}: attention layer {type(att).__name__} is not a "
                "SelfAttention subclass, so it has no attention_weights to record.")
    return family


def _forward(model: SequenceModel, inputs: dict):
    """The model's own forward pass, capturing what its (recording) attention layers sow."""
    return nnx.capture(lambda m, x: m.hidden(x), nnx.Intermediate)(model, inputs)


_forward_jit = nnx.jit(_forward)


def _recorded(view: SequenceModel, captured) -> list[dict]:
    """Per block (in order), what its attention layer recorded during the forward pass."""
    paths = {id(module): path for path, module in nnx.iter_modules(view)}
    records = []
    for layer, block in enumerate(view.backbone.blocks):
        node = captured
        try:
            for key in paths[id(block.attention)]:
                node = node[key]
            calls = node[RECORDED].get_value()
        except KeyError:
            calls = ()
        if len(calls) != 1:
            raise RuntimeError(
                f"block {layer}: its attention layer ran {len(calls)} times in one forward pass; "
                "trace_attention explains blocks that call their attention layer exactly once.")
        records.append(calls[0])
    return records


def trace_attention(model: SequenceModel, inputs: dict[str, np.ndarray], *,
                    linear: LinearWeights = LinearWeights.RAISE) -> AttentionTrace:
    """Runs ``model`` on a batch and returns the attention weights every layer used.

    Args:
      model: a :class:`SequenceModel` of an attention family.
      inputs: model inputs (``Batch.model_inputs()``), each ``[batch, L]`` plus
        ``lengths int32[batch]``.
      linear: what to do for the linear family (see :class:`LinearWeights`).

    Returns:
      :class:`AttentionTrace`.

    Raises:
      NoAttentionWeightsError: ``lstm``, or ``linear`` with ``LinearWeights.RAISE``.
    """
    family = _check_explainable(model, LinearWeights(linear))
    inputs = {k: jnp.asarray(v) for k, v in inputs.items()}
    view = nnx.view(model, record_weights=True)
    hidden, captured = _forward_jit(view, inputs)
    records = _recorded(view, captured)
    stack = lambda key: np.stack([np.asarray(r[key]) for r in records])  # noqa: E731
    return AttentionTrace(family=family, weights=stack("weights"), attention_inputs=stack("inputs"),
                          attention_outputs=stack("outputs"), hidden=np.asarray(hidden),
                          lengths=np.asarray(inputs["lengths"]))


def attention_rollout(weights: np.ndarray, lengths: np.ndarray, *, residual: float = 0.5) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020) with the residual connection.

    Per layer ``A_l = (1 - residual) * mean_heads(W_l) + residual * I`` with rows
    renormalised over the visible keys; ``R = A_{n-1} ... A_1 A_0``.

    Args:
      weights: ``float[layers, batch, heads, L, L]`` (:attr:`AttentionTrace.weights`).
      lengths: ``int[batch]`` valid lengths.
      residual: weight of the identity (0.5 in the paper).

    Returns:
      ``float64[batch, L, L]``; row ``i < lengths[b]`` sums to 1 over keys ``< lengths[b]``,
      padded rows and columns are 0.
    """
    w = np.asarray(weights, np.float64).mean(axis=2)  # [layers, b, L, L]
    n_layers, b, length, _ = w.shape
    valid = np.arange(length)[None, :] < np.asarray(lengths)[:, None]  # [b, L]
    pair = valid[:, :, None] & valid[:, None, :]
    eye = np.eye(length)[None]
    rollout = np.where(pair, eye, 0.0)
    for layer in range(n_layers):
        a = np.where(pair, (1.0 - residual) * w[layer] + residual * eye, 0.0)
        den = a.sum(-1, keepdims=True)
        a = a / np.where(den > 0, den, 1.0)
        rollout = a @ rollout
    return rollout


def last_query_weights(trace: AttentionTrace) -> tuple[np.ndarray, np.ndarray]:
    """Weights from each row's last visible position.

    Returns:
      ``(per_head float64[batch, layers, heads, L], rollout float64[batch, L])``; zeros
      for empty histories.
    """
    last = np.clip(trace.lengths - 1, 0, None)
    b = np.arange(len(last))
    per_head = np.asarray(trace.weights, np.float64)[:, b, :, last, :]  # [b, layers, heads, L]
    roll = attention_rollout(trace.weights, trace.lengths)[b, last]
    empty = trace.lengths == 0
    per_head[empty], roll[empty] = 0.0, 0.0
    return per_head, roll


# ------------------------------------------------------------------ one customer


@dataclasses.dataclass(frozen=True)
class Explanation:
    """What :func:`explain_prediction` returns for one customer.

    Attributes:
      customer: store row; customer_id: source id.
      end: absolute exclusive end of the visible history; cutoff: prediction time (s).
      family: model family.
      events: one row per visible (windowed) event, oldest first: ``position``,
        ``store_index``, ``date``, ``days_before`` (cut-off minus event time, days),
        ``event_type``, ``item``, ``product_id`` and item / event side labels.
      weights: ``float32[layers, heads, n, n]`` full weight maps of this customer.
      rollout: ``float64[n, n]`` rolled-out weights.
      frame: long table, one row per (view, event): the event columns plus ``view``
        (``"L{layer}.H{head}"``, ``"rollout"`` and, for the copy item head, ``"copy"``:
        the pointer over past items, 0 on events without an item), ``layer``, ``head``
        (NA except for layer/head views), ``weight`` (from the last position; sums to 1
        per view) and ``rank``.
      copy_gate: the copy head's repeat gate ``g`` (share of the next-item probability
        that comes from copying a past item), or None without a copy head.
    """

    customer: int
    customer_id: int
    end: int
    cutoff: int
    family: str
    events: pd.DataFrame
    weights: np.ndarray
    rollout: np.ndarray
    frame: pd.DataFrame
    copy_gate: float | None = None


def _label(vocab: list[str], codes: np.ndarray, present: np.ndarray) -> pd.Series:
    labels = np.asarray(vocab, dtype=object)[codes]
    return pd.Series(np.where(present, labels, None), dtype=object)


def event_table(store: SequenceStore, index: np.ndarray, *, reference_time: int,
                item_columns: list[str] | None = None) -> pd.DataFrame:
    """Readable events ``index`` (absolute store indices) of one customer.

    Columns: ``store_index``, ``date``, ``days_before`` (``reference_time`` minus the
    event time, in days), ``event_type`` (lower-case :class:`EventType` name), ``item``
    (vocabulary index), ``product_id`` (source id; NA without an item), one column per
    ``store.item_side`` name (default all; e.g. CJ ``department``) and per
    ``store.event_side`` name (e.g. CJ ``campaign_id``); labels are None where absent.
    """
    index = np.asarray(index, np.int64)
    t = np.asarray(store.time)[index]
    item = np.asarray(store.item)[index].astype(np.int64)
    has_item = item > 0
    codes = np.asarray(store.event_type)[index]
    names = {int(e): e.name.lower() for e in EventType}
    out = pd.DataFrame({
        "store_index": index,
        "date": pd.to_datetime(t, unit="s"),
        "days_before": (int(reference_time) - t) / SECONDS_PER_DAY,
        "event_type": [names.get(int(c), str(int(c))) for c in codes],
        "item": item,
        "product_id": pd.array(np.where(has_item, np.asarray(store.item_vocab)[item], 0), dtype="Int64"),
    })
    out.loc[~has_item, "product_id"] = pd.NA
    cols = list(store.item_side) if item_columns is None else list(item_columns)
    for name in cols:
        if name not in store.item_side:
            raise KeyError(f"item side column {name!r} is not in this store; "
                           f"available: {sorted(store.item_side)}")
        c = np.asarray(store.item_side[name])[item]
        out[name] = _label(store.item_side_vocab[name], c, has_item & (c > 0))
    for name, arr in store.event_side.items():
        c = np.asarray(arr)[index]
        out[name] = _label(store.event_side_vocab[name], c, c > 0)
    return out


def _resolve_end(store: SequenceStore, customer: int, end: int | None, cutoff: int | None) -> tuple[int, int]:
    lo, hi = int(store.offsets[customer]), int(store.offsets[customer + 1])
    t = np.asarray(store.time)
    if end is None:
        end = hi if cutoff is None else lo + int(np.searchsorted(t[lo:hi], int(cutoff), side="left"))
    end = int(end)
    if not lo <= end <= hi:
        raise ValueError(f"end={end} outside customer row {customer}'s events [{lo}, {hi}]")
    if cutoff is None:
        cutoff = int(t[end - 1]) + 1 if end > lo else 0
    elif end > lo and int(t[end - 1]) >= int(cutoff):
        raise ValueError(f"event {end - 1} at time {int(t[end - 1])} is not before the cutoff "
                         f"{int(cutoff)}: the visible history must end before the cut-off")
    return end, int(cutoff)


def explain_prediction(model: SequenceModel, store: SequenceStore, customer: int, *,
                       end: int | None = None, cutoff: int | None = None,
                       time_reference: TimeReference = TimeReference.LATEST_EVENT,
                       max_len: int | None = None, item_columns: list[str] | None = None,
                       linear: LinearWeights = LinearWeights.RAISE) -> Explanation:
    """Which past events one customer's prediction attended to, per layer/head and rolled out.

    Args:
      model: a trained :class:`SequenceModel` (attention family).
      store: the event store.
      customer: store row (see :meth:`SequenceStore.customer_index` for a source id).
      end: absolute exclusive end of the visible history (e.g. ``Examples.end``).
      cutoff: prediction time, seconds; with ``end=None`` the history is every event
        strictly before it. Default: 1 s after the latest visible event.
      time_reference: must match the task the model was trained on (churn: ``CUTOFF``).
      max_len: window (default ``model.max_len``); older events are not seen.
      item_columns: item side columns to show (default all of ``store.item_side``).
      linear: see :class:`LinearWeights`.

    Returns:
      :class:`Explanation`; ``frame`` holds the weights as a long table.
    """
    end, cutoff = _resolve_end(store, int(customer), end, cutoff)
    max_len = int(max_len or model.max_len)
    tr = TimeReference(time_reference)
    batch = make_batch(store, customers=np.array([customer]), ends=np.array([end]),
                       cutoffs=np.array([cutoff]) if tr is TimeReference.CUTOFF else None, max_len=max_len,
                       memory=model.history_memory)
    n = int(batch.lengths[0])
    if n == 0:
        raise ValueError(f"customer row {customer} has no event before end={end}: nothing to explain")
    trace = trace_attention(model, batch.model_inputs(), linear=linear)
    weights = trace.weights[:, 0, :, :n, :n]
    rollout = attention_rollout(trace.weights[:, :1], trace.lengths[:1])[0, :n, :n]
    events = event_table(store, batch.index[0, :n], reference_time=cutoff, item_columns=item_columns)
    events.insert(0, "position", np.arange(n))
    n_layers, n_heads = weights.shape[:2]
    parts = []
    for layer in range(n_layers):
        for head in range(n_heads):
            parts.append((f"L{layer}.H{head}", layer, head, weights[layer, head, n - 1]))
    parts.append((ROLLOUT, pd.NA, pd.NA, rollout[n - 1]))
    copy_gate = None
    if model.copy is not None:  # the copy head's pointer: which past items it would re-predict
        h = jnp.asarray(trace.hidden)
        last = jnp.asarray(trace.lengths - 1)[:, None]
        inputs = {k: jnp.asarray(v) for k, v in batch.model_inputs().items()}
        w, _, log_g, _ = model.copy_pointer(h[:, n - 1:n], h, last, inputs)  # window slots first
        copy_gate = float(np.exp(np.asarray(log_g)[0, 0]))
        # window slots only: with model.history_memory > 0 the rest of the pointer's mass
        # (1 - the sum shown) is on the memory of items older than the window
        parts.append((COPY, pd.NA, pd.NA, np.asarray(w)[0, 0, :n]))
    frames = []
    for view, layer, head, w in parts:
        f = events.copy()
        f.insert(0, "view", view)
        f.insert(1, "layer", pd.array([layer] * n, dtype="Int64"))
        f.insert(2, "head", pd.array([head] * n, dtype="Int64"))
        f["weight"] = np.asarray(w, np.float64)
        f["rank"] = f["weight"].rank(ascending=False, method="first").astype(int)
        frames.append(f)
    return Explanation(customer=int(customer), customer_id=int(store.customer_ids[customer]), end=end,
                       cutoff=cutoff, family=trace.family, events=events, weights=weights,
                       rollout=rollout, frame=pd.concat(frames, ignore_index=True), copy_gate=copy_gate)


def explain_example(model: SequenceModel, store: SequenceStore, examples: Examples, row: int, *,
                    time_reference: TimeReference = TimeReference.LATEST_EVENT, **kwargs) -> Explanation:
    """:func:`explain_prediction` for row ``row`` of a protocol's :class:`Examples`."""
    return explain_prediction(model, store, int(examples.customer[row]), end=int(examples.end[row]),
                              cutoff=int(examples.cutoff[row]), time_reference=time_reference, **kwargs)


def top_events(explanation: Explanation, k: int = 10, *, view: str = ROLLOUT) -> pd.DataFrame:
    """The ``k`` most attended events of one view (``"rollout"``, ``"L{l}.H{h}"`` or
    ``"copy"``), highest weight first."""
    f = explanation.frame
    if view not in set(f["view"]):
        raise KeyError(f"view {view!r} not in this explanation; available: {list(dict.fromkeys(f['view']))}")
    f = f[f["view"] == view].sort_values("rank").head(k)
    return f.drop(columns=["view", "layer", "head"]).reset_index(drop=True)
