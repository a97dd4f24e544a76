"""The dispatcher: preference order, decline reasons, pinned implementations raise."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.ops.attention import (
    AttentionSpec,
    AttentionUnsupportedError,
    Impl,
    attention,
    dispatch,
    explain_dispatch,
    reference_attention,
)
from attnlab.ops.attention.tuning import CPU_REFERENCE_MAX_LENGTH
from tests.ops.attention_suite import AttentionSuite


def _qkv(n, batch=1, heads=1, d=8, lk=None):
    q = jax.ShapeDtypeStruct((batch, n, heads, d), jnp.float32)
    k = jax.ShapeDtypeStruct((batch, lk or n, heads, d), jnp.float32)
    return q, k, k


@pytest.fixture
def no_kernel(monkeypatch):
    """Pretend the Pallas kernel module cannot be imported."""
    def load_kernel():
        raise ModuleNotFoundError("No module named 'attnlab.kernels._missing_'")

    monkeypatch.setattr(dispatch, "load_kernel", load_kernel)


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
    assert name is Impl.PALLAS_TRITON and "cannot import attnlab.kernels.flash_triton" in reason
    assert "No module named 'attnlab.kernels._missing_'" in reason
    assert "pallas_triton declined" in caplog.text


def test_kernel_decline_reason_is_passed_through(monkeypatch):
    class FakeKernel:
        @staticmethod
        def why_unsupported(q, k, v, spec, *, platform):
            return f"head_dim {q.shape[-1]} not supported on {platform}"

    monkeypatch.setattr(dispatch, "load_kernel", lambda: FakeKernel)
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


@pytest.mark.parametrize("impl", [None, "reference", "xla_chunked", "banded"])
def test_every_impl_agrees(impl):
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 300, 2, 16), np.float32)) for _ in range(3))
    spec = AttentionSpec(causal=True, lengths=jnp.asarray([300, 120]), window=64)
    want = reference_attention(q, k, v, spec=spec)
    got = jax.jit(lambda q, k, v: attention(q, k, v, spec=spec, impl=impl))(q, k, v)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("spec,length,chosen,reason", [
    (AttentionSpec(window=64), 256, Impl.BANDED, None),  # slab 128 of 256
    (AttentionSpec(window=256), 4096, Impl.BANDED, None),
    (AttentionSpec(window=2048), 4096, Impl.BANDED, None),  # slab 2304 of 4096
    (AttentionSpec(window=256), 512, Impl.XLA_CHUNKED, "key slab"),  # slab = the sequence
    (AttentionSpec(window=4096), 4096, Impl.XLA_CHUNKED, "key slab"),
    (AttentionSpec(causal=False, window=16), 4096, Impl.XLA_CHUNKED, "causal"),
])
def test_explain_dispatch_reports_the_band_decision(spec, length, chosen, reason):
    """A windowed spec on CPU tries the band first; explain_dispatch says why it was
    passed by (its key slab is too large a part of the sequence, or it is no band)."""
    d = explain_dispatch(*_qkv(length), spec=spec, platform="cpu")
    assert d.chosen is chosen
    if reason is None:
        assert d.declined == ()
    else:
        (name, why), = d.declined
        assert name is Impl.BANDED and reason in why


def test_band_is_no_candidate_without_a_window():
    for platform in ("cpu", "gpu", "tpu"):
        d = explain_dispatch(*_qkv(4096), spec=AttentionSpec(), platform=platform)
        assert Impl.BANDED not in [name for name, _ in d.declined] + [d.chosen]


def test_pinned_band_runs_when_it_can_and_raises_when_it_cannot():
    """Pinned, the band runs any causal window (a large slab is slow, not wrong) and
    raises, naming the reason, for a spec that is no band."""
    assert explain_dispatch(*_qkv(512), spec=AttentionSpec(window=256), impl="banded",
                            platform="cpu").chosen is Impl.BANDED
    with pytest.raises(AttentionUnsupportedError, match="impl='banded'.*causal window"):
        explain_dispatch(*_qkv(512), spec=AttentionSpec(causal=False, window=8), impl="banded")
    with pytest.raises(AttentionUnsupportedError, match="impl='banded'.*needs a local window"):
        explain_dispatch(*_qkv(512), spec=AttentionSpec(), impl="banded")


def test_gpu_falls_back_to_the_band_for_windows(no_kernel):
    d = explain_dispatch(*_qkv(1024), spec=AttentionSpec(window=32), platform="gpu")
    assert d.chosen is Impl.BANDED and [n for n, _ in d.declined] == [Impl.PALLAS_TRITON]


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
