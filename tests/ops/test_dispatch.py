"""The dispatcher: preference order, decline reasons, pinned implementations raise."""

import importlib
import logging
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.ops.attention import (
    CPU_REFERENCE_MAX_LENGTH,
    AttentionUnsupportedError,
    Impl,
    attention,
    explain_dispatch,
)
from attnlab.ops.reference import reference_attention
from attnlab.ops.spec import AttentionSpec
from tests.ops.attention_suite import AttentionSuite

# (``attnlab.ops.attention`` the attribute is the function; fetch the module itself.)
attention_mod = importlib.import_module("attnlab.ops.attention")


def _qkv(n, batch=1, heads=1, d=8, lk=None):
    q = jax.ShapeDtypeStruct((batch, n, heads, d), jnp.float32)
    k = jax.ShapeDtypeStruct((batch, lk or n, heads, d), jnp.float32)
    return q, k, k


@pytest.fixture
def no_kernel(monkeypatch):
    """Pretend the Pallas kernel module cannot be imported."""
    monkeypatch.setattr(attention_mod._PallasTriton, "module_name", "attnlab.kernels._missing_")


def test_cpu_short_sequences_use_reference():
    d = explain_dispatch(*_qkv(CPU_REFERENCE_MAX_LENGTH), spec=AttentionSpec(), platform="cpu")
    assert d.chosen is Impl.REFERENCE and d.declined == ()


def test_cpu_long_sequences_use_xla_chunked():
    d = explain_dispatch(*_qkv(CPU_REFERENCE_MAX_LENGTH + 1), spec=AttentionSpec(),
                         platform="cpu")
    assert d.chosen is Impl.XLA_CHUNKED


def test_gpu_prefers_kernel_and_logs_decline(no_kernel, caplog):
    with caplog.at_level(logging.DEBUG, logger="attnlab.ops.attention"):
        d = explain_dispatch(*_qkv(1024), spec=AttentionSpec(), platform="gpu")
    assert d.chosen is Impl.XLA_CHUNKED
    (name, reason), = d.declined
    assert name is Impl.PALLAS_TRITON and "cannot import attnlab.kernels._missing_" in reason
    assert "pallas_triton declined" in caplog.text


def test_kernel_decline_reason_is_passed_through(monkeypatch):
    class FakeKernel:
        @staticmethod
        def unsupported_reason(q, k, v, spec, *, platform):
            return f"head_dim {q.shape[-1]} not supported on {platform}"

    monkeypatch.setitem(sys.modules, "attnlab.kernels.flash_triton", FakeKernel)
    d = explain_dispatch(*_qkv(64), spec=AttentionSpec(), platform="gpu")
    assert d.declined == ((Impl.PALLAS_TRITON, "head_dim 8 not supported on gpu"),)
    with pytest.raises(AttentionUnsupportedError, match="head_dim 8 not supported on gpu"):
        explain_dispatch(*_qkv(64), spec=AttentionSpec(), impl="pallas_triton", platform="gpu")


def test_pinned_impl_that_cannot_run_raises(no_kernel):
    q, k, v = (jnp.zeros((1, 8, 1, 8)),) * 3
    with pytest.raises(AttentionUnsupportedError, match="impl='pallas_triton'.*cannot import"):
        attention(q, k, v, spec=AttentionSpec(), impl="pallas_triton")
    qc, kc = jnp.zeros((1, 8, 1, 8)), jnp.zeros((1, 4, 1, 8))
    with pytest.raises(AttentionUnsupportedError, match="q_len == k_len"):
        attention(qc, kc, kc, spec=AttentionSpec(causal=False), impl=Impl.XLA_CHUNKED)


def test_unknown_impl_name_raises():
    with pytest.raises(ValueError, match="flash"):
        explain_dispatch(*_qkv(8), spec=AttentionSpec(), impl="flash")


def test_cross_attention_falls_back_to_reference_with_reason():
    d = explain_dispatch(*_qkv(600, lk=300), spec=AttentionSpec(causal=False), platform="cpu")
    assert d.chosen is Impl.REFERENCE
    assert d.declined[0][0] is Impl.XLA_CHUNKED and "q_len == k_len" in d.declined[0][1]


def test_bad_shapes_are_declined_everywhere():
    q = jax.ShapeDtypeStruct((2, 8, 8), jnp.float32)
    with pytest.raises(AttentionUnsupportedError, match=r"\[batch, length, heads, head_dim\]"):
        explain_dispatch(q, q, q, spec=AttentionSpec())


@pytest.mark.parametrize("impl", [None, "reference", "xla_chunked"])
def test_every_impl_agrees(impl):
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 300, 2, 16), np.float32)) for _ in range(3))
    spec = AttentionSpec(causal=True, lengths=jnp.asarray([300, 120]), window=64)
    want = reference_attention(q, k, v, spec=spec)
    got = jax.jit(lambda q, k, v: attention(q, k, v, spec=spec, impl=impl))(q, k, v)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)


class TestDispatchedAttention(AttentionSuite):
    """The public entry point with impl=None passes the shared suite (a short run:
    at these lengths CPU dispatch picks the reference, covered in full elsewhere)."""

    property_examples = 2

    def impl(self, q, k, v, spec):
        return attention(q, k, v, spec=spec)

    # The full suite for the dispatcher would re-test the reference; keep the
    # composition tests (jit/vmap/grad through the dispatcher) and the property test.
    test_forward_features = None
    test_gradients_features = None
    test_lengths_not_block_multiples = None
    test_heads_and_head_dims = None
    test_low_precision = None
