"""The visibility rule and the decay penalty, written once.

Every implementation calls these functions: the reference on whole ``[query, key]``
arrays, the XLA paths on one block pair, the Pallas kernel inside one tile (so they
use only what Pallas-Triton lowers: comparisons, logical ops, ``where``,
arithmetic, ``log1p``). :func:`key_block_range` is the same rule on ranges of
blocks: which key blocks a query block must visit at all.

The rule (see :mod:`attnlab.ops.attention.spec`): key ``j`` is visible from query
``i`` iff both lie inside the valid length, ``j <= i`` when causal, and ``i - j <
window or j < num_global`` when there is a window.
"""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp
from jax import lax

from attnlab.ops.attention.spec import StaticSpec

#: Finite "minus infinity" for masked scores: keeps an online softmax NaN-free on
#: blocks where every score is masked.
NEG = -1e30


def round_up(x: int, m: int) -> int:
    """Smallest multiple of ``m`` that is ``>= x`` (static ints)."""
    return -(-x // m) * m


def cdiv(a, b: int):
    """Ceil division of a non-negative traced int by a static positive int."""
    return lax.div(a + (b - 1), b)


def visible(q_pos, k_pos, spec: StaticSpec, *, q_len=None, k_len=None):
    """Is key ``k_pos`` visible from query ``q_pos``?

    Args:
      q_pos, k_pos: int32 positions that broadcast against each other: e.g.
        ``[q, 1]`` and ``[1, k]``, the iotas of one tile, or two scalars.
      spec: which rules apply.
      q_len, k_len: valid lengths that broadcast against the positions (e.g.
        ``int32[batch, 1, 1]`` or a traced scalar), or None for no length rule on
        that side.

    Returns:
      A bool array of the broadcast shape, or None when no rule applies (every pair
      is visible), so that callers can skip the select.
    """
    rules = []
    if q_len is not None:
        rules.append(q_pos < q_len)
    if k_len is not None:
        rules.append(k_pos < k_len)
    if spec.causal:
        rules.append(k_pos <= q_pos)
    if spec.window is not None:
        local = q_pos - k_pos < spec.window
        if spec.num_global:
            local = local | (k_pos < spec.num_global)
        rules.append(local)
    return functools.reduce(operator.and_, rules) if rules else None


def tile_positions(q0, k0, num_q: int, num_k: int, *, transposed: bool = False):
    """Query and key positions of a score tile: int32 ``[num_q, num_k]`` each (or
    ``[num_k, num_q]`` when ``transposed``), starting at ``q0`` and ``k0``."""
    shape = (num_k, num_q) if transposed else (num_q, num_k)
    q_axis, k_axis = (1, 0) if transposed else (0, 1)
    return (q0 + lax.broadcasted_iota(jnp.int32, shape, q_axis),
            k0 + lax.broadcasted_iota(jnp.int32, shape, k_axis))


def key_block_range(q_start, block_q: int, block_k: int, spec: StaticSpec, *, k_len,
                    q_len=None):
    """Key blocks that the query block ``[q_start, q_start + block_q)`` must visit.

    Args:
      q_start: first query position (traced int32).
      block_q, block_k: query rows and keys per block.
      spec: which rules apply.
      k_len: keys at or past it are never visited (a valid or padded length).
      q_len: a query block starting at or past it visits nothing; None: no bound.

    Returns:
      ``(global_hi, lo, hi)``: visit blocks ``[0, global_hi)`` (the leading global
      blocks a window misses), then ``[lo, hi)``. The two ranges never overlap, both
      ascend, and together hold exactly the blocks with a visible pair (for the
      causal bound, the window bound and the global prefix) below ``k_len``.
    """
    last_key = jnp.asarray(k_len, jnp.int32)  # exclusive
    if spec.causal:
        last_key = jnp.minimum(last_key, q_start + block_q)
    hi = cdiv(last_key, block_k)
    if q_len is not None:
        hi = jnp.where(q_start < q_len, hi, 0)
    if spec.window is None:
        return jnp.int32(0), jnp.int32(0), hi
    first_key = jnp.maximum(q_start - (spec.window - 1), 0)
    lo = jnp.minimum(lax.div(first_key, block_k), hi)
    global_hi = jnp.int32(0)
    if spec.num_global:
        global_hi = jnp.minimum(cdiv(jnp.int32(spec.num_global), block_k), lo)
    return global_hi, lo, hi


def decay_penalty(t_q: jax.Array, t_k: jax.Array, spec: StaticSpec) -> jax.Array:
    """``g(|t_q[..., i] - t_k[..., j]| / time_unit)``: float32 ``[..., q, k]`` from
    ``t_q [..., q]`` and ``t_k [..., k]``. The score is ``s - slope * g``."""
    gap = jnp.abs(t_q[..., :, None] - t_k[..., None, :]) * (1.0 / spec.time_unit)
    return spec.decay_fn.apply(gap)
