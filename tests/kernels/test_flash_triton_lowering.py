"""GPU-path checks that run on CPU: cross-lowering to the Triton custom call, the
tile-skipping bounds, ``why_unsupported`` and the tuning heuristic.

Cross-lowering traces ``jax.jit(f)`` and lowers it for ``cuda`` on a CPU-only host.
The Pallas Triton lowering rule runs during that lowering, so this proves that every
kernel (forward; backward pre-pass, dK/dV and dQ) is expressible in Triton IR: each
generated Triton module is intercepted and verified, and the StableHLO module must
call the Triton custom call once per kernel with our launch parameters. Only
Triton's own PTX compilation, which needs a GPU, is not exercised.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.pallas.triton import lowering as triton_lowering

from attnlab.kernels.flash_triton import (
    FlashTuning,
    default_tuning,
    flash_attention,
    query_tile_range,
    why_unsupported,
)
from attnlab.ops.attention import AttentionSpec, DecayFn, StaticSpec
from attnlab.ops.attention.visibility import key_block_range
from tests.ops.attention_suite import FEATURES, make_spec

#: Custom-call targets of a Pallas Triton kernel: jaxlib <= 0.10.2 emits the first,
#: later versions compile on the host and emit the second.
TRITON_TARGETS = ("__gpu$xla.gpu.triton", "triton_kernel_call_ffi")
KERNELS_FWD = ["attnlab_flash_fwd"]
KERNELS_BWD = ["attnlab_flash_fwd", "attnlab_flash_bwd_delta", "attnlab_flash_bwd_dkv",
               "attnlab_flash_bwd_dq"]
TUNING = FlashTuning(block_q=32, block_k=16, num_warps=8, num_stages=3,
                     block_q_bwd=16, block_k_bwd=32, num_warps_bwd=2, num_stages_bwd=1)


@pytest.fixture
def triton_modules(monkeypatch):
    """Collects ``(name, verified, asm)`` of every Triton module lowered in the test."""
    seen = []
    original = triton_lowering.lower_jaxpr_to_triton_module

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        op = result.module.operation
        seen.append((str(op.attributes["sym_name"]).strip('"'), op.verify(), op.get_asm()))
        return result

    monkeypatch.setattr(triton_lowering, "lower_jaxpr_to_triton_module", spy)
    return seen


def _lower_cuda(fn, *args) -> str:
    return jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()


def _triton_calls(text: str) -> list[str]:
    return [t for t in re.findall(r"custom_call @([\w$.]+)", text) if t in TRITON_TARGETS]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16],
                         ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("features", FEATURES, ids=lambda f: f.name)
def test_cross_lowers_to_triton(features, dtype, triton_modules):
    b, n, h, d = 2, 40, 2, 32
    q = jnp.zeros((b, n, h, d), dtype)
    spec = make_spec(features, b, n, h)
    slopes = spec.decay_slopes if spec.has_decay else jnp.zeros((h,), jnp.float32)

    def fwd(q, k, v, slopes):
        s = spec.replace(decay_slopes=slopes) if spec.has_decay else spec
        return flash_attention(q, k, v, spec=s, tuning=TUNING, interpret=False)

    text = _lower_cuda(fwd, q, q, q, slopes)
    assert len(_triton_calls(text)) == 1, "forward must be one Triton custom call"
    assert "num_warps = 8" in text and "num_stages = 3" in text

    grad = jax.grad(lambda *a: fwd(*a).astype(jnp.float32).sum(), argnums=(0, 1, 2, 3))
    text = _lower_cuda(grad, q, q, q, slopes)
    assert len(_triton_calls(text)) == 4, "fwd + delta + dK/dV + dQ Triton calls"
    assert "num_warps = 2" in text and "num_stages = 1" in text
    assert "stablehlo.dot_general" not in text, "attention matmuls must stay in the kernels"

    names = [name for name, _, _ in triton_modules]
    assert names == KERNELS_FWD + KERNELS_BWD
    for name, verified, asm in triton_modules:
        assert verified, f"Triton module {name} fails MLIR verification"
        if name != "attnlab_flash_bwd_delta":
            assert "tt.dot" in asm, f"{name}: no tensor-core dot"
            # Tile loops have data-dependent bounds (skipping), never a static unroll.
            loops = asm.count("scf.for") + asm.count("scf.while")
            two_loops = features.window and features.num_global and "dkv" not in name
            want = 2 if two_loops else 1
            assert loops == want, f"{name}: {loops} tile loops, expected {want}"


# ------------------------------------------------------------------- tile skipping


def _visible(n, lq, lk, causal, window, num_global):
    i = np.arange(lq)[:, None]
    j = np.arange(lk)[None, :]
    m = (i < n) & (j < n)
    if causal:
        m &= j <= i
    if window is not None:
        m &= (i - j < window) | (j < num_global)
    return m


def _static(causal, window, num_global):
    return StaticSpec(causal=causal, window=window, num_global=num_global, decay_fn=None,
                      time_unit=1.0, scale=1.0)


CASES = [
    (causal, window, g, n, bq, bk)
    for causal in (True, False)
    for window, g in ((None, 0), (1, 0), (13, 0), (13, 3), (40, 20), (5, 33))
    for n in (0, 1, 17, 48, 61)
    for bq, bk in ((16, 16), (32, 16), (16, 32))
]


@pytest.mark.parametrize("causal,window,num_global,n,bq,bk", CASES)
def test_tile_ranges_visit_exactly_the_live_tiles(causal, window, num_global, n, bq, bk):
    """Every tile with a visible entry is visited exactly once; no dead tile is visited."""
    lq = lk = 64
    st = _static(causal, window, num_global)
    vis = _visible(n, lq, lk, causal, window, num_global)
    live = vis.reshape(lq // bq, bq, lk // bk, bk).any(axis=(1, 3))  # [q tiles, k tiles]
    for qt in range(lq // bq):
        g_hi, lo, hi = map(int, key_block_range(
            jnp.int32(qt * bq), bq, bk, st, k_len=jnp.int32(n), q_len=jnp.int32(n)))
        visited = list(range(0, g_hi)) + list(range(lo, hi))
        assert len(set(visited)) == len(visited), f"q tile {qt}: tile visited twice"
        assert sorted(visited) == list(np.flatnonzero(live[qt])), f"q tile {qt}"
    for kt in range(lk // bk):
        lo, hi = map(int, query_tile_range(
            jnp.int32(kt * bk), jnp.int32(n), jnp.int32(n), bq, bk, st))
        assert list(range(lo, hi)) == list(np.flatnonzero(live[:, kt])), f"k tile {kt}"


# ----------------------------------------------------------- support and tuning


def _args(b=2, n=40, h=2, d=32, dtype=jnp.bfloat16):
    x = jax.ShapeDtypeStruct((b, n, h, d), dtype)
    return x, x, x


def test_why_unsupported():
    spec = AttentionSpec(causal=True)
    assert why_unsupported(*_args(), spec, platform="gpu") is None
    assert why_unsupported(*_args(d=24), spec, platform="cuda") is None  # padded to 32
    cpu = why_unsupported(*_args(), spec, platform="cpu")
    assert "CUDA GPU" in cpu and "interpret=True" in cpu
    assert "'tpu'" in why_unsupported(*_args(), spec, platform="tpu")
    assert "head_dim" in why_unsupported(*_args(d=256), spec, platform="gpu")
    assert "dtype" in why_unsupported(*_args(dtype=jnp.int32), spec, platform="gpu")
    q, _, _ = _args()
    assert "grouped" in why_unsupported(q, *_args(h=1)[:2], spec, platform="gpu")
    short = AttentionSpec(timestamps=jnp.zeros((2, 30)), decay_slopes=jnp.ones((2,)),
                          decay_fn=DecayFn.LINEAR)
    assert "timestamps" in why_unsupported(*_args(), short, platform="gpu")
    with pytest.raises(ValueError, match="timestamps"):
        flash_attention(*(jnp.zeros((2, 40, 2, 32)),) * 3, spec=short)


def test_tuning_validation_and_heuristic():
    with pytest.raises(ValueError, match="power of two"):
        FlashTuning(block_q=48)
    with pytest.raises(ValueError, match=">= 16"):
        FlashTuning(block_k=8)
    small = default_tuning(7, 7, 16, jnp.bfloat16)
    assert (small.block_q, small.block_k, small.block_q_bwd, small.block_k_bwd) == (16,) * 4
    big = default_tuning(4096, 4096, 64, jnp.bfloat16)
    wide = default_tuning(4096, 4096, 64, jnp.float32)
    assert big.block_q >= wide.block_q and big.block_q >= 64
    assert FlashTuning(block_q=128).fitted(40, 40).block_q == 64
