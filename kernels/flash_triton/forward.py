"""Forward kernel: one program per (query tile, batch, head), an online softmax over
the key tiles of :func:`attnlab.ops.attention.visibility.key_block_range` with fp32
accumulators; it stores the output and the row logsumexp for the backward."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from attnlab.kernels.flash_triton.launch import Launch
from attnlab.kernels.flash_triton.tiles import (
    decay_inputs,
    key_tile,
    logits,
    matmul,
    named_refs,
    positions,
    program_decay,
    row_tile,
    stat_tile,
    time_tile,
    time_whole,
    valid_lengths,
    whole_seq,
)
from attnlab.ops.attention.spec import StaticSpec
from attnlab.ops.attention.visibility import key_block_range

_FWD_REFS = ("len", "slope", "tq", "tk", "q", "k", "v", "o", "lse")


def _fwd_kernel(*refs, spec: StaticSpec, launch: Launch):
    r = named_refs(refs, spec, _FWD_REFS)
    bq, bk = launch.tuning.block_q, launch.tuning.block_k
    q_start = pl.program_id(0) * bq
    q_n, k_n = valid_lengths(r, launch)
    q = r["q"][...]
    rows = positions(q_start, bq)
    tq, slope = program_decay(r, spec, "tq")
    head_dim = q.shape[-1]

    def step(kt, carry):
        m, l, acc = carry
        k, v, tk, cols = key_tile(r, kt, bk, spec)
        s, mask, _ = logits(q, k, rows, cols, q_n, k_n, tq, tk, slope, spec)
        s = jnp.where(mask, s, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(s, axis=1))
        m_ref = jnp.where(m_new == -jnp.inf, 0.0, m_new)  # all-masked so far: no shift
        p = jnp.exp(s - m_ref[:, None])
        alpha = jnp.exp(m - m_ref)
        l = alpha * l + jnp.sum(p, axis=1)
        acc = acc * alpha[:, None] + matmul(p.astype(v.dtype), v, (1, 0))
        return m_new, l, acc

    carry = (
        jnp.full((bq,), -jnp.inf, jnp.float32),
        jnp.zeros((bq,), jnp.float32),
        jnp.zeros((bq, head_dim), jnp.float32),
    )
    global_hi, lo, hi = key_block_range(q_start, bq, bk, spec, k_len=k_n, q_len=q_n)
    if spec.window is not None and spec.num_global:
        carry = lax.fori_loop(0, global_hi, step, carry)
    m, l, acc = lax.fori_loop(lo, hi, step, carry)
    seen = l > 0.0
    out = acc / jnp.where(seen, l, 1.0)[:, None]
    r["o"][...] = out.astype(r["o"].dtype)
    # +inf for rows with no visible key: exp(s - lse) is then 0 in the backward pass.
    r["lse"][...] = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), jnp.inf)


def forward(q, k, v, lengths, tq, tk, slopes, spec: StaticSpec, launch: Launch):
    """Padded forward: returns ``o [b, lq_p, h, d]`` and ``lse f32[b, h, lq_p]``."""
    b, lq_p, h, d = q.shape
    lk_p = k.shape[1]
    t = launch.tuning
    args, specs = decay_inputs(
        spec, lengths, slopes, tq, tk, time_tile(t.block_q), time_whole(lk_p)
    )
    return pl.pallas_call(
        functools.partial(_fwd_kernel, spec=spec, launch=launch),
        grid=(lq_p // t.block_q, b, h),
        in_specs=specs + [row_tile(t.block_q, d), whole_seq(lk_p, d), whole_seq(lk_p, d)],
        out_specs=[row_tile(t.block_q, d), stat_tile(t.block_q)],
        out_shape=[
            jax.ShapeDtypeStruct(q.shape, q.dtype),
            jax.ShapeDtypeStruct((b, h, lq_p), jnp.float32),
        ],
        compiler_params=plgpu.CompilerParams(num_warps=t.num_warps, num_stages=t.num_stages),
        interpret=launch.interpret,
        name="attnlab_flash_fwd",
    )(*args, q, k, v)
