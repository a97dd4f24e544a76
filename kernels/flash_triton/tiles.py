"""What the forward and backward kernels of one call share: the score tile (with the
visibility rule and decay penalty of :mod:`attnlab.ops.attention.visibility`), the
kernel-argument plumbing and the BlockSpecs of the ``[batch, length, heads,
head_dim]`` operands (grid: tile, batch, head)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from attnlab.kernels.flash_triton.launch import Launch
from attnlab.ops.attention.spec import StaticSpec
from attnlab.ops.attention.visibility import decay_penalty, visible

#: Kernel inputs that exist only with time decay.
DECAY_REFS = ("slope", "tq", "tk", "dslope")


def matmul(a: jax.Array, b: jax.Array, contract: tuple[int, int]) -> jax.Array:
    """2-D matmul with fp32 result; ``contract`` names the contracted dim of a and b."""
    return lax.dot_general(
        a, b, (((contract[0],), (contract[1],)), ((), ())), preferred_element_type=jnp.float32
    )


def logits(q, k, rows, cols, q_n, k_n, tq, tk, slope, spec: StaticSpec):
    """Scores ``scale * q k^T - slope * g`` (fp32), the visibility mask and ``g``.

    Shapes: q ``[bq, d]``, k ``[bk, d]``, rows ``[bq]``, cols ``[bk]``; returns
    ``([bq, bk] f32, [bq, bk] bool, [bq, bk] f32 or None)``.
    """
    s = matmul(q, k, (1, 1)) * spec.scale
    g = None
    if spec.has_decay:
        g = decay_penalty(tq, tk, spec)
        s = s - slope * g
    return s, visible(rows[:, None], cols[None, :], spec, q_len=q_n, k_len=k_n), g


def named_refs(refs, spec: StaticSpec, names: tuple[str, ...]) -> dict:
    """Splits ``refs`` into a dict; decay inputs are present only with time decay."""
    names = tuple(n for n in names if spec.has_decay or n not in DECAY_REFS)
    assert len(refs) == len(names), (len(refs), names)
    return dict(zip(names, refs))


def valid_lengths(refs: dict, launch: Launch):
    """``(q_n, k_n)``: the valid query and key lengths of this program's sequence."""
    n = refs["len"][0]
    return jnp.minimum(n, launch.q_len), jnp.minimum(n, launch.k_len)


def positions(start, block: int):
    """int32 ``[block]``: the positions of a tile starting at ``start``."""
    return start + jnp.arange(block, dtype=jnp.int32)


def program_decay(refs: dict, spec: StaticSpec, times: str):
    """``(timestamps, slope)`` of this program's own tile (``times``: ``"tq"`` or
    ``"tk"``), or ``(None, None)`` without time decay."""
    if not spec.has_decay:
        return None, None
    return refs[times][...], refs["slope"][0]


def key_tile(refs: dict, kt, block_k: int, spec: StaticSpec):
    """Key tile ``kt`` of a program that loops over keys: ``(k, v, tk, cols)``."""
    k_start = pl.multiple_of(kt * block_k, block_k)
    keys = pl.ds(k_start, block_k)
    tk = refs["tk"][keys] if spec.has_decay else None
    return refs["k"][keys, :], refs["v"][keys, :], tk, positions(k_start, block_k)


def row_tile(block: int, d: int):
    """BlockSpec of a ``[batch, length, heads, head_dim]`` row tile."""
    return pl.BlockSpec((None, block, None, d), lambda t, b, h: (b, t, h, 0))


def whole_seq(length: int, d: int):
    return pl.BlockSpec((None, length, None, d), lambda t, b, h: (b, 0, h, 0))


def _scalar_per(axis: str):
    if axis == "b":
        return pl.BlockSpec((1,), lambda t, b, h: (b,))
    return pl.BlockSpec((1,), lambda t, b, h: (h,))


def time_tile(block: int):
    return pl.BlockSpec((None, block), lambda t, b, h: (b, t))


def time_whole(length: int):
    return pl.BlockSpec((None, length), lambda t, b, h: (b, 0))


def stat_tile(block: int):
    """Per-row statistics ``[batch, heads, length]`` (lse, delta, slope partials)."""
    return pl.BlockSpec((None, None, block), lambda t, b, h: (b, h, t))


def stat_whole(length: int):
    return pl.BlockSpec((None, None, length), lambda t, b, h: (b, h, 0))


def decay_inputs(spec: StaticSpec, lengths, slopes, tq, tk, tq_spec, tk_spec):
    """The leading kernel arguments and their BlockSpecs: lengths, then (with time
    decay) slopes and the query / key timestamps."""
    args, specs = [lengths], [_scalar_per("b")]
    if spec.has_decay:
        args += [slopes, tq, tk]
        specs += [_scalar_per("h"), tq_spec, tk_spec]
    return args, specs
