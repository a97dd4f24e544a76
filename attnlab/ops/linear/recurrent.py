"""The recurrence of causal linear attention: O(1) per new event (streaming scoring)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.ops.linear.base import FeatureMap, LinearState, log_gamma, valid_positions


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
    a = jnp.where(ok[:, None], log_gamma(log_decay, h)[None, :], 0.0)  # [b, h]
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
    valid = valid_positions(lengths, b, length)
    init = initial_state or LinearState.zeros(b, h, dk, v.shape[-1])

    def body(state, xs):
        qt, kt, vt, ok = xs
        return linear_attention_step(state, qt, kt, vt, valid=ok, log_decay=log_decay,
                                     feature_map=feature_map, eps=eps)

    move = lambda x: jnp.moveaxis(x, 1, 0)  # noqa: E731
    final, out = jax.lax.scan(body, init, (move(q), move(k), move(v), move(valid)))
    return jnp.moveaxis(out, 0, 1), final
