"""Causal linear attention with an optional per-head forgetting factor.

Linear attention (Katharopoulos, Vyas, Pappas & Fleuret, 2020, "Transformers are
RNNs") replaces ``softmax(q k^T)`` by a positive feature map ``phi`` (here
``elu(x) + 1``), so that causal attention becomes a recurrence over a fixed-size state

    S_t = gamma_t * S_{t-1} + phi(k_t) v_t^T      [heads, d_k, d_v]
    z_t = gamma_t * z_{t-1} + phi(k_t)            [heads, d_k]
    o_t = phi(q_t)^T S_t / (phi(q_t)^T z_t + eps)

with ``gamma_t = gamma_h`` in ``(0, 1]`` a per-head forgetting factor (the decay of
RetNet, Sun et al., 2023; ``gamma_h = 1`` is plain linear attention). Here the
normalised (Katharopoulos) form is kept, so the output is a decayed weighted average
of past values.

Two forms compute the same function:

* :func:`linear_attention` -- chunked parallel form for training: inside a chunk of
  ``C`` positions a causal ``C x C`` score block; across chunks the carried state.
  Memory O(length * C + chunks * d_k * d_v), never O(length^2).
* :func:`linear_attention_step` / :func:`linear_attention_recurrent` -- the
  recurrence, O(1) work and memory per new event (streaming scoring).

Ragged right-padded histories: a position ``t >= lengths[b]`` neither enters the
state (``phi(k_t) = 0``) nor decays it (``gamma_t = 1``), and its output is exactly 0.
So the final state of the parallel form equals the state after the last valid event.

All accumulation is in fp32; outputs are cast back to ``q.dtype``.
"""

from __future__ import annotations

import dataclasses
import enum

import jax
import jax.numpy as jnp


class FeatureMap(enum.Enum):
    """Positive feature map ``phi`` applied to queries and keys."""

    ELU_PLUS_ONE = "elu1"  # phi(x) = elu(x) + 1 > 0 (Katharopoulos et al., 2020)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.elu(x) + 1.0


@dataclasses.dataclass(frozen=True)
class LinearState:
    """Per-customer recurrent state of one linear-attention layer.

    Attributes:
      kv: ``float32[batch, heads, d_k, d_v]`` decayed sum of ``phi(k) v^T``.
      k_sum: ``float32[batch, heads, d_k]`` decayed sum of ``phi(k)`` (normaliser).
    """

    kv: jax.Array
    k_sum: jax.Array

    @classmethod
    def zeros(cls, batch: int, heads: int, d_k: int, d_v: int) -> "LinearState":
        return cls(kv=jnp.zeros((batch, heads, d_k, d_v), jnp.float32),
                   k_sum=jnp.zeros((batch, heads, d_k), jnp.float32))


jax.tree_util.register_dataclass(LinearState, data_fields=["kv", "k_sum"], meta_fields=[])


def _log_gamma(log_decay: jax.Array | None, heads: int) -> jax.Array:
    if log_decay is None:
        return jnp.zeros((heads,), jnp.float32)
    return log_decay.astype(jnp.float32)


def _valid(lengths: jax.Array | None, batch: int, length: int) -> jax.Array:
    if lengths is None:
        return jnp.ones((batch, length), bool)
    return jnp.arange(length)[None, :] < lengths.astype(jnp.int32)[:, None]


def linear_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    lengths: jax.Array | None = None,
    log_decay: jax.Array | None = None,
    chunk: int = 64,
    feature_map: FeatureMap = FeatureMap.ELU_PLUS_ONE,
    eps: float = 1e-6,
    initial_state: LinearState | None = None,
) -> tuple[jax.Array, LinearState]:
    """Chunked parallel causal linear attention.

    Args:
      q: ``[batch, length, heads, d_k]``.
      k: ``[batch, length, heads, d_k]``.
      v: ``[batch, length, heads, d_v]``.
      lengths: ``int32[batch]`` valid lengths of right-padded rows, or None (all valid).
      log_decay: ``float32[heads]`` ``log gamma_h <= 0`` (differentiable), or None for
        no forgetting.
      chunk: positions per chunk ``C`` (the length is padded up to a multiple).
      feature_map: ``phi``.
      eps: added to the normaliser.
      initial_state: state before position 0 (default zeros).

    Returns:
      ``(out [batch, length, heads, d_v] in q.dtype, final LinearState)``; ``out`` is 0
      at padded positions.
    """
    b, length, h, dk = q.shape
    dv = v.shape[-1]
    c = max(1, min(chunk, length))
    n = -(-length // c)
    pad = n * c - length
    valid = _valid(lengths, b, length)
    if pad:
        widen = lambda x: jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))  # noqa: E731
        q, k, v, valid = widen(q), widen(k), widen(v), widen(valid)
    fq = feature_map(q.astype(jnp.float32))
    fk = jnp.where(valid[..., None, None], feature_map(k.astype(jnp.float32)), 0.0)
    vf = jnp.where(valid[..., None, None], v.astype(jnp.float32), 0.0)
    # per-position log decay, 0 at padding: padding never decays the state
    a = jnp.where(valid[..., None], _log_gamma(log_decay, h)[None, None, :], 0.0)  # [b, L, h]

    def chunks(x):  # [b, n*c, ...] -> [b, n, c, ...]
        return x.reshape((b, n, c) + x.shape[2:])

    fq, fk, vf, a = chunks(fq), chunks(fk), chunks(vf), chunks(a)
    cum = jnp.cumsum(a, axis=2)  # [b, n, c, h] inclusive log decay from chunk start
    total = cum[:, :, -1]  # [b, n, h]

    # intra-chunk: causal C x C with weights gamma^(i - j)
    i = jnp.arange(c)
    causal = i[:, None] >= i[None, :]
    rel = cum[:, :, :, None, :] - cum[:, :, None, :, :]  # [b, n, ci, cj, h]
    w = jnp.where(causal[None, None, :, :, None], jnp.exp(jnp.minimum(rel, 0.0)), 0.0)
    s = jnp.einsum("bnihd,bnjhd->bnijh", fq, fk) * w
    num = jnp.einsum("bnijh,bnjhe->bnihe", s, vf)
    den = jnp.sum(s, axis=3)  # [b, n, c, h]

    # per-chunk contribution to the carried state, decayed to the chunk end
    to_end = jnp.exp(total[:, :, None, :] - cum)  # [b, n, c, h]
    chunk_kv = jnp.einsum("bnjhd,bnjhe->bnhde", fk * to_end[..., None], vf)
    chunk_k = jnp.sum(fk * to_end[..., None], axis=2)  # [b, n, h, d]

    init = initial_state or LinearState.zeros(b, h, dk, dv)

    def carry(state, xs):
        kv_c, k_c, tot = xs
        g = jnp.exp(tot)  # [b, h]
        new = LinearState(kv=g[..., None, None] * state.kv + kv_c, k_sum=g[..., None] * state.k_sum + k_c)
        return new, state  # emit the state at the chunk *start*

    move = lambda x: jnp.moveaxis(x, 1, 0)  # noqa: E731
    final, starts = jax.lax.scan(carry, init, (move(chunk_kv), move(chunk_k), move(total)))
    start_kv = jnp.moveaxis(starts.kv, 0, 1)  # [b, n, h, dk, dv]
    start_k = jnp.moveaxis(starts.k_sum, 0, 1)  # [b, n, h, dk]

    # inter-chunk: the state at the chunk start, decayed to position i
    from_start = jnp.exp(cum)[..., None]  # [b, n, c, h, 1]
    num = num + jnp.einsum("bnihd,bnhde->bnihe", fq * from_start, start_kv)
    den = den + jnp.einsum("bnihd,bnhd->bnih", fq * from_start, start_k)
    out = num / (den[..., None] + eps)
    out = out.reshape(b, n * c, h, dv)[:, :length]
    out = jnp.where(valid[:, :length, None, None], out, 0.0)
    return out.astype(q.dtype), final


def linear_attention_step(
    state: LinearState,
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    valid: jax.Array | None = None,
    log_decay: jax.Array | None = None,
    feature_map: FeatureMap = FeatureMap.ELU_PLUS_ONE,
    eps: float = 1e-6,
) -> tuple[LinearState, jax.Array]:
    """One event of the recurrence, O(1) in the history length.

    Args:
      state: the state after the previous events.
      q, k: ``[batch, heads, d_k]`` of the new event; v: ``[batch, heads, d_v]``.
      valid: ``bool[batch]``: rows that really have a new event (others keep their
        state unchanged and output 0), or None (all).
      log_decay: ``float32[heads]`` ``log gamma_h``, or None.

    Returns:
      ``(new state, out [batch, heads, d_v] in q.dtype)``.
    """
    b, h, _ = q.shape
    ok = jnp.ones((b,), bool) if valid is None else valid
    a = jnp.where(ok[:, None], _log_gamma(log_decay, h)[None, :], 0.0)  # [b, h]
    g = jnp.exp(a)
    fk = jnp.where(ok[:, None, None], feature_map(k.astype(jnp.float32)), 0.0)
    vf = jnp.where(ok[:, None, None], v.astype(jnp.float32), 0.0)
    new = LinearState(kv=g[..., None, None] * state.kv + jnp.einsum("bhd,bhe->bhde", fk, vf),
                      k_sum=g[..., None] * state.k_sum + fk)
    fq = feature_map(q.astype(jnp.float32))
    out = jnp.einsum("bhd,bhde->bhe", fq, new.kv) / (jnp.einsum("bhd,bhd->bh", fq, new.k_sum)[..., None] + eps)
    out = jnp.where(ok[:, None, None], out, 0.0)
    return new, out.astype(q.dtype)


def linear_attention_recurrent(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    lengths: jax.Array | None = None,
    log_decay: jax.Array | None = None,
    feature_map: FeatureMap = FeatureMap.ELU_PLUS_ONE,
    eps: float = 1e-6,
    initial_state: LinearState | None = None,
) -> tuple[jax.Array, LinearState]:
    """The recurrence scanned over a whole sequence (same contract as :func:`linear_attention`)."""
    b, length, h, dk = q.shape
    valid = _valid(lengths, b, length)
    init = initial_state or LinearState.zeros(b, h, dk, v.shape[-1])

    def body(state, xs):
        qt, kt, vt, ok = xs
        return linear_attention_step(state, qt, kt, vt, valid=ok, log_decay=log_decay,
                                     feature_map=feature_map, eps=eps)

    move = lambda x: jnp.moveaxis(x, 1, 0)  # noqa: E731
    final, out = jax.lax.scan(body, init, (move(q), move(k), move(v), move(valid)))
    return jnp.moveaxis(out, 0, 1), final


def linear_attention_reference(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    lengths: jax.Array | None = None,
    log_decay: jax.Array | None = None,
    feature_map: FeatureMap = FeatureMap.ELU_PLUS_ONE,
    eps: float = 1e-6,
) -> jax.Array:
    """Naive O(length^2) materialising reference (tests only). Shapes as above."""
    b, length, h, _ = q.shape
    valid = _valid(lengths, b, length)
    fq = feature_map(q.astype(jnp.float32))
    fk = feature_map(k.astype(jnp.float32))
    i = jnp.arange(length)
    steps = jnp.maximum(i[:, None] - i[None, :], 0).astype(jnp.float32)  # i - j (valid = prefix)
    lg = _log_gamma(log_decay, h)
    w = jnp.exp(steps[None, :, :] * lg[:, None, None])  # [h, i, j] gamma^(i - j)
    vis = (i[:, None] >= i[None, :])[None] & valid[:, :, None] & valid[:, None, :]  # [b, i, j]
    s = jnp.einsum("bihd,bjhd->bhij", fq, fk) * w[None]
    s = jnp.where(vis[:, None], s, 0.0)
    out = jnp.einsum("bhij,bjhe->bihe", s, v.astype(jnp.float32)) / (jnp.sum(s, -1).transpose(0, 2, 1)[..., None] + eps)
    return jnp.where(valid[..., None, None], out, 0.0).astype(q.dtype)
