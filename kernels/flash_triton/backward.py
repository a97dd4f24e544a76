"""Backward kernels: a pre-pass computing ``D = rowsum(dO * O)``, then one program
per key tile for dK/dV (looping over the query tiles that see it, accumulating the
slope gradient ``-sum_ij dS_ij g_ij`` per key) and one program per query tile for dQ
(looping over its key tiles). Probabilities are recomputed from the forward's
logsumexp."""

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
    stat_whole,
    time_tile,
    time_whole,
    valid_lengths,
    whole_seq,
)
from attnlab.ops.attention import tuning as numbers
from attnlab.ops.attention.spec import StaticSpec
from attnlab.ops.attention.visibility import cdiv, key_block_range


def query_tile_range(k_start, q_n, k_n, block_q: int, block_k: int, spec: StaticSpec):
    """Query tiles ``[lo, hi)`` that see any key of the tile ``[k_start, k_start+block_k)``."""
    lo = lax.div(k_start, block_q) if spec.causal else jnp.int32(0)
    hi = cdiv(q_n, block_q)
    if spec.window is not None:
        # Row i sees key j (non-global) iff i - j < window: i < k_start + block_k - 1 + window.
        hi_local = jnp.minimum(hi, cdiv(k_start + (block_k - 1 + spec.window), block_q))
        if spec.num_global:
            hi_local = jnp.where(k_start < spec.num_global, hi, hi_local)
        hi = hi_local
    hi = jnp.where(k_start < k_n, hi, lo)
    return lo, jnp.maximum(hi, lo)


def _delta_kernel(o_ref, do_ref, delta_ref):
    o = o_ref[...].astype(jnp.float32)
    do = do_ref[...].astype(jnp.float32)
    delta_ref[...] = jnp.sum(o * do, axis=1)


_DKV_REFS = ("len", "slope", "tq", "tk", "q", "k", "v", "do", "lse", "delta", "dk", "dv", "dslope")


def _dkv_kernel(*refs, spec: StaticSpec, launch: Launch):
    r = named_refs(refs, spec, _DKV_REFS)
    bq, bk = launch.tuning.block_q_bwd, launch.tuning.block_k_bwd
    k_start = pl.program_id(0) * bk
    q_n, k_n = valid_lengths(r, launch)
    k = r["k"][...]
    v = r["v"][...]
    cols = positions(k_start, bk)
    tk, slope = program_decay(r, spec, "tk")
    head_dim = k.shape[-1]

    def step(qt, carry):
        dk, dv, dslope = carry
        q_start = pl.multiple_of(qt * bq, bq)
        queries = pl.ds(q_start, bq)
        q = r["q"][queries, :]
        do = r["do"][queries, :]
        lse = r["lse"][queries]
        delta = r["delta"][queries]
        tq = r["tq"][queries] if spec.has_decay else None
        rows = positions(q_start, bq)
        s, mask, g = logits(q, k, rows, cols, q_n, k_n, tq, tk, slope, spec)
        p = jnp.where(mask, jnp.exp(s - lse[:, None]), 0.0)  # [bq, bk]
        dv = dv + matmul(p.astype(do.dtype), do, (0, 0))
        dp = matmul(do, v, (1, 1))
        ds = p * (dp - delta[:, None])
        dk = dk + matmul(ds.astype(q.dtype), q, (0, 0))
        if spec.has_decay:
            dslope = dslope - jnp.sum(ds * g, axis=0)
        return dk, dv, dslope

    carry = (
        jnp.zeros((bk, head_dim), jnp.float32),
        jnp.zeros((bk, head_dim), jnp.float32),
        jnp.zeros((bk,), jnp.float32),
    )
    lo, hi = query_tile_range(k_start, q_n, k_n, bq, bk, spec)
    dk, dv, dslope = lax.fori_loop(lo, hi, step, carry)
    r["dk"][...] = (dk * spec.scale).astype(r["dk"].dtype)
    r["dv"][...] = dv.astype(r["dv"].dtype)
    if spec.has_decay:
        r["dslope"][...] = dslope


_DQ_REFS = ("len", "slope", "tq", "tk", "q", "k", "v", "do", "lse", "delta", "dq")


def _dq_kernel(*refs, spec: StaticSpec, launch: Launch):
    r = named_refs(refs, spec, _DQ_REFS)
    bq, bk = launch.tuning.block_q_bwd, launch.tuning.block_k_bwd
    q_start = pl.program_id(0) * bq
    q_n, k_n = valid_lengths(r, launch)
    q = r["q"][...]
    do = r["do"][...]
    lse = r["lse"][...]
    delta = r["delta"][...]
    rows = positions(q_start, bq)
    tq, slope = program_decay(r, spec, "tq")

    def step(kt, dq):
        k, v, tk, cols = key_tile(r, kt, bk, spec)
        s, mask, _ = logits(q, k, rows, cols, q_n, k_n, tq, tk, slope, spec)
        p = jnp.where(mask, jnp.exp(s - lse[:, None]), 0.0)
        dp = matmul(do, v, (1, 1))
        ds = p * (dp - delta[:, None])
        return dq + matmul(ds.astype(k.dtype), k, (1, 0))

    dq = jnp.zeros(q.shape, jnp.float32)
    global_hi, lo, hi = key_block_range(q_start, bq, bk, spec, k_len=k_n, q_len=q_n)
    if spec.window is not None and spec.num_global:
        dq = lax.fori_loop(0, global_hi, step, dq)
    dq = lax.fori_loop(lo, hi, step, dq)
    r["dq"][...] = (dq * spec.scale).astype(r["dq"].dtype)


def _grad_operands(query_rows, key_rows, row_stats):
    """BlockSpecs of ``q, k, v, do, lse, delta``: query-side rows (q, do), key-side
    rows (k, v) and per-query statistics (lse, delta)."""
    return [query_rows, key_rows, key_rows, query_rows, row_stats, row_stats]


def backward(q, k, v, lengths, tq, tk, slopes, o, lse, do, spec: StaticSpec, launch: Launch):
    """Padded backward: returns ``dq, dk, dv`` (input dtype) and ``dslopes f32[h]``."""
    b, lq_p, h, d = q.shape
    lk_p = k.shape[1]
    t = launch.tuning
    bq, bk = t.block_q_bwd, t.block_k_bwd
    params = plgpu.CompilerParams(num_warps=t.num_warps_bwd, num_stages=t.num_stages_bwd)

    delta = pl.pallas_call(
        _delta_kernel,
        grid=(lq_p // bq, b, h),
        in_specs=[row_tile(bq, d), row_tile(bq, d)],
        out_specs=stat_tile(bq),
        out_shape=jax.ShapeDtypeStruct((b, h, lq_p), jnp.float32),
        compiler_params=plgpu.CompilerParams(num_warps=numbers.FLASH_DELTA_WARPS,
                                             num_stages=numbers.FLASH_DELTA_STAGES),
        interpret=launch.interpret,
        name="attnlab_flash_bwd_delta",
    )(o, do)

    args, specs = decay_inputs(spec, lengths, slopes, tq, tk, time_whole(lq_p), time_tile(bk))
    out_specs = [row_tile(bk, d), row_tile(bk, d)]
    out_shape = [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)]
    if spec.has_decay:
        out_specs.append(stat_tile(bk))
        out_shape.append(jax.ShapeDtypeStruct((b, h, lk_p), jnp.float32))
    dkv = pl.pallas_call(
        functools.partial(_dkv_kernel, spec=spec, launch=launch),
        grid=(lk_p // bk, b, h),
        in_specs=specs + _grad_operands(whole_seq(lq_p, d), row_tile(bk, d), stat_whole(lq_p)),
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=params,
        interpret=launch.interpret,
        name="attnlab_flash_bwd_dkv",
    )(*args, q, k, v, do, lse, delta)
    dk, dv = dkv[0], dkv[1]
    dslopes = jnp.sum(dkv[2], axis=(0, 2)) if spec.has_decay else None

    args, specs = decay_inputs(spec, lengths, slopes, tq, tk, time_tile(bq), time_whole(lk_p))
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, spec=spec, launch=launch),
        grid=(lq_p // bq, b, h),
        in_specs=specs + _grad_operands(row_tile(bq, d), whole_seq(lk_p, d), stat_tile(bq)),
        out_specs=row_tile(bq, d),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=params,
        interpret=launch.interpret,
        name="attnlab_flash_bwd_dq",
    )(*args, q, k, v, do, lse, delta)
    return dq, dk, dv, dslopes
