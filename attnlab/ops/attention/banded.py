"""Banded attention for causal local windows (plus a global prefix).

A peer of ``xla_chunked`` for causal windows: local attention in the style of
Longformer (Beltagy et al., 2020), each query sees the last ``window`` keys plus the
first ``num_global`` positions of the sequence. The dispatcher prefers it for causal
windows while a query block's key slab is a small enough part of the sequence
(:func:`why_slower`); near the full length the loop of ``xla_chunked``, which skips
the keys past the diagonal, does less work.

Layout. The (padded) sequence is cut into ``nb`` blocks of ``c`` positions. Every
key a query of block ``i`` may see through its window lies in the ``K = (m + 1) c``
contiguous keys starting at ``(i - m) c``, ``m = ceil((window - 1) / c)`` (clamped
into the sequence near its start; causality masks what the clamp adds). One
``lax.fori_loop`` step takes ``rows`` (batch, head) pairs x one query block and
slices its queries and its key slab straight out of ``q``, ``k`` and ``v``; the
block's whole slab is scored at once with batched matmuls (no key loop, no online
softmax), and the step writes its output rows in place.

The ``num_global`` leading keys are one extra key block shared by every query; the
visibility splits into two disjoint parts so that a global key inside a query's
window is counted once:

* band part:   visible without the global positions (``j <= i  and  i - j < window``)
* global part: visible, but not through the band (``j < num_global  and  i - j >= window``)

The softmax runs over both parts with fp32 accumulation. The backward
(``jax.custom_vjp``) saves only ``(out, lse)``, recomputes the slab probabilities
(transposed, so every matmul is a plain or ``A @ B^T`` product on XLA:CPU) and adds
each step's ``k`` / ``v`` cotangents into its slab of ``dk`` / ``dv`` in place.
Memory is O(length * d) plus one step's ``rows * c * K`` scores, never O(length^2).

Causal only: a non-causal window (``i - j < window`` with no upper bound on ``j``)
is not a band. With causal masking every query sees at least itself, so no band row
is ever empty; padded query rows (``i >= lengths[b]``) are zeroed in the forward and
get zero gradients.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from attnlab.ops.attention import tuning
from attnlab.ops.attention.banded_loops import BandTiling, backward, forward
from attnlab.ops.attention.layout import (
    finish,
    prepare,
    self_attention_problem,
    shape_problem,
    zero_padded_rows,
)
from attnlab.ops.attention.spec import AttentionSpec, StaticSpec
from attnlab.ops.attention.visibility import round_up


@dataclasses.dataclass(frozen=True)
class BandConfig:
    """How the banded path tiles (not what it computes).

    Attributes:
      block: positions per query block ``c`` (multiple of 8), or None for
        :func:`default_block`.
      rows: (batch, head) pairs per loop step, or None for as many as fit
        ``tuning.BAND_STEP_SCORES`` scores.
    """

    block: int | None = None
    rows: int | None = None

    def __post_init__(self):
        if self.block is not None and (self.block < 8 or self.block % 8):
            raise ValueError(f"BandConfig.block must be a multiple of 8, got {self.block}.")
        if self.rows is not None and self.rows < 1:
            raise ValueError(f"BandConfig.rows must be >= 1, got {self.rows}.")


def default_block(window: int) -> int:
    """Heuristic query block ``c`` for a causal window (numbers in ``tuning``)."""
    if window <= tuning.BAND_SMALL_WINDOW:
        return tuning.BAND_BLOCK_SMALL_WINDOW
    return tuning.BAND_BLOCK


def slab_tiling(length: int, block: int, window: int) -> tuple[int, int, int, int]:
    """``(c, padded length, m, K)`` for a causal window of ``window`` over ``length``
    positions: ``block`` clipped to the (8-rounded) length, the length padded to a
    multiple of it, the previous blocks a slab reaches back and the keys per slab."""
    c = min(block, round_up(length, 8))
    n_pad = round_up(length, c)
    prev = min(-(-(window - 1) // c), n_pad // c - 1)
    return c, n_pad, prev, min((prev + 1) * c, n_pad)


def _largest_divisor(n: int, at_most: int) -> int:
    return max(x for x in range(1, min(at_most, n) + 1) if n % x == 0)


def band_tiling(length: int, block: int, *, window: int, num_global: int, batch_heads: int,
                rows: int | None = None) -> BandTiling:
    """Tiling of a causal window of ``window`` over ``length`` positions.

    ``block`` is clipped to the (8-rounded) length; the padded length is a multiple
    of it. A loop step covers ``rows`` of the ``batch_heads`` flattened (batch, head)
    rows and one query block; by default as many rows as fit
    ``tuning.BAND_STEP_SCORES`` scores (at least one), lowered to a divisor of
    ``batch_heads``.
    """
    c, n_pad, prev, slab = slab_tiling(length, block, window)
    if rows is None:
        rows = max(1, min(batch_heads, tuning.BAND_STEP_SCORES // (c * slab)))
    rows = _largest_divisor(batch_heads, rows)
    # Global keys are needed only by queries whose window misses some of them.
    g = min(num_global, length)
    global_keys = round_up(g, 8) if g and length - 1 >= window else 0
    return BandTiling(length=n_pad, block=c, prev=prev, global_keys=min(global_keys, n_pad),
                      bh=batch_heads, rows=rows)


def why_unsupported(q, k, v, spec: AttentionSpec, *, platform: str | None = None) -> str | None:
    """Why :func:`banded_attention` cannot run these operands and spec, or None."""
    del platform
    if spec.window is None:
        return "needs a local window (spec.window), got none"
    if not spec.causal:
        return ("needs a causal window; a non-causal window (no upper bound on the key) "
                "is not a band")
    return shape_problem(q, k, v) or self_attention_problem(q, k, v)


def why_slower(q, k, v, spec: AttentionSpec, *, platform: str | None = None) -> str | None:
    """Why the dispatcher should not prefer the band for this call although it can run
    it, or None: its key slab is too large a part of the sequence."""
    del k, v, platform
    _, n_pad, _, slab = slab_tiling(q.shape[1], default_block(spec.window), spec.window)
    if slab <= tuning.BAND_MAX_SLAB_FRACTION * n_pad:
        return None
    return (f"its key slab ({slab} keys per query block for window {spec.window}) is more "
            f"than {tuning.BAND_MAX_SLAB_FRACTION:.0%} of the {n_pad} padded positions, where "
            "the xla_chunked loop does less work")


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _banded(q, k, v, slopes, t, spec: StaticSpec, tiling: BandTiling):
    return forward(q, k, v, slopes, t, spec, tiling)[0]


def _banded_fwd(q, k, v, slopes, t, spec, tiling):
    out, lse = forward(q, k, v, slopes, t, spec, tiling)
    return out, (q, k, v, slopes, t, out, lse)


def _banded_bwd(spec, tiling, res, dout):
    q, k, v, slopes, t, out, lse = res
    dq, dk, dv, dslopes = backward(q, k, v, slopes, t, out, lse, dout, spec, tiling)
    return dq, dk, dv, dslopes, None


_banded.defvjp(_banded_fwd, _banded_bwd)


def banded_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, spec: AttentionSpec,
                     config: BandConfig | None = None) -> jax.Array:
    """Causal local (+ global) attention.

    Args:
      q: ``[batch, length, heads, head_dim]``.
      k: ``[batch, length, heads, head_dim]``.
      v: ``[batch, length, heads, head_dim]``.
      spec: a causal spec with a window (see :mod:`attnlab.ops.attention.spec`).
      config: tiling; None uses :func:`default_block` and the default row count.

    Returns:
      ``[batch, length, heads, head_dim]`` in ``q.dtype``; padded query rows are zero
      (and get zero gradients: the row mask is differentiated by JAX).

    Raises:
      ValueError: the operands or the spec cannot go through this path (see
        :func:`why_unsupported`).
    """
    reason = why_unsupported(q, k, v, spec)
    if reason:
        raise ValueError(f"banded_attention: {reason}")
    config = config or BandConfig()
    b, n, h, d = q.shape
    tiling = band_tiling(n, config.block or default_block(spec.window), window=spec.window,
                         num_global=spec.num_global, batch_heads=b * h, rows=config.rows)
    static = dataclasses.replace(spec.static(d), num_global=min(spec.num_global, n))
    x = prepare(q, k, v, spec, scale=static.scale, padded=tiling.length)
    n_pad = tiling.length

    def rows(a):  # [b, h, n_pad, d] -> [b * h, n_pad, d]
        return a.reshape(b * h, n_pad, d)

    t = slopes = None
    if spec.has_decay:
        t = jnp.broadcast_to(x.timestamps[:, None], (b, h, n_pad)).reshape(b * h, n_pad)
        slopes = jnp.broadcast_to(x.slopes[None], (b, h)).reshape(b * h)
    out = _banded(rows(x.q), rows(x.k), rows(x.v), slopes, t, static, tiling)
    return finish(zero_padded_rows(out.reshape(b, h, n_pad, d), x.lengths), n, q.dtype)
