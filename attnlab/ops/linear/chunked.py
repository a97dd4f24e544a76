"""Chunked parallel form of causal linear attention (training)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.ops.linear.base import FeatureMap, LinearState, log_gamma, valid_positions


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
    valid = valid_positions(lengths, b, length)
    if pad:
        widen = lambda x: jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))  # noqa: E731
        q, k, v, valid = widen(q), widen(k), widen(v), widen(valid)
    fq = feature_map(q.astype(jnp.float32))
    fk = jnp.where(valid[..., None, None], feature_map(k.astype(jnp.float32)), 0.0)
    vf = jnp.where(valid[..., None, None], v.astype(jnp.float32), 0.0)
    # per-position log decay, 0 at padding: padding never decays the state
    a = jnp.where(valid[..., None], log_gamma(log_decay, h)[None, None, :], 0.0)  # [b, L, h]

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
