"""One parameterised test base for every attention implementation.

How to subclass (e.g. in ``tests/kernels/test_flash_triton.py``)::

    from tests.ops.attention_suite import AttentionSuite

    class TestFlashTritonInterpret(AttentionSuite):
        # Interpret mode is slow: keep shapes small. Tests whose shapes exceed the
        # limits are skipped with a "capacity" reason (never to hide a failure).
        max_len = 64
        max_batch = 2
        property_examples = 5          # hypothesis examples (0 disables the test)

        def impl(self, q, k, v, spec):
            return flash_attention(q, k, v, spec=spec, interpret=True)

Contract of ``impl``: ``q, k, v`` are ``[batch, length, heads, head_dim]`` arrays
(fp32, bf16 or fp16), ``spec`` an :class:`AttentionSpec`; return the output
``[batch, length, heads, head_dim]`` in ``q.dtype``. ``impl`` must be traceable
(the suite calls it under ``jax.jit``, ``jax.vmap`` and ``jax.grad``) and
differentiable w.r.t. ``q, k, v`` and ``spec.decay_slopes``.

Every comparison is against :func:`reference_attention` evaluated in fp32 at
``Precision.HIGHEST`` on the *same* (already rounded) inputs, with the error
measured as ``max|got - want| <= atol + rtol * max|want|`` per array, using the ONE
tolerance table :data:`TOLERANCES`. Do not loosen it to get green; fix the code.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.ops.attention import AttentionSpec, DecayFn, reference_attention


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Scale-aware bound: ``max|got - want| <= atol + rtol * max|want|``."""

    atol: float
    rtol: float


#: The one dtype-tolerance table: (forward, gradients) per input dtype.
TOLERANCES: dict[jnp.dtype, tuple[Tolerance, Tolerance]] = {
    jnp.dtype(jnp.float32): (Tolerance(2e-5, 2e-5), Tolerance(5e-5, 5e-5)),
    jnp.dtype(jnp.bfloat16): (Tolerance(2e-2, 2e-2), Tolerance(3e-2, 3e-2)),
    jnp.dtype(jnp.float16): (Tolerance(4e-3, 4e-3), Tolerance(6e-3, 6e-3)),
}


# --------------------------------------------------------------------------- inputs


@dataclasses.dataclass(frozen=True)
class Features:
    """A named combination of spec features (lengths are chosen per test)."""

    name: str
    causal: bool = True
    window: int | None = None
    num_global: int = 0
    decay: DecayFn | None = None


FEATURES = [
    Features("full", causal=False),
    Features("causal"),
    Features("causal_window", window=13),
    Features("causal_window_global", window=13, num_global=3),
    Features("full_window_global", causal=False, window=13, num_global=3),
    Features("causal_decay_log1p", decay=DecayFn.LOG1P),
    Features("causal_decay_linear", decay=DecayFn.LINEAR),
    Features("full_decay_linear", causal=False, decay=DecayFn.LINEAR),
    Features("causal_window_global_decay_log1p", window=13, num_global=3, decay=DecayFn.LOG1P),
]


def make_qkv(batch, length, heads, head_dim, dtype=jnp.float32, *, seed=0):
    """Random ``q, k, v`` of shape ``[batch, length, heads, head_dim]`` in ``dtype``."""
    rng = np.random.default_rng(seed)
    shape = (batch, length, heads, head_dim)
    return tuple(jnp.asarray(rng.standard_normal(shape, dtype=np.float32), dtype) for _ in range(3))


def ragged_lengths(batch: int, length: int) -> jax.Array:
    """``int32[batch]``: full, partial, one event, fully padded (cycled)."""
    pattern = [length, max(1, (2 * length) // 3 + 1), 1, 0]
    return jnp.asarray([pattern[i % len(pattern)] for i in range(batch)], jnp.int32)


def make_spec(features: Features, batch, length, heads, *, lengths="ragged", seed=1):
    """Build an :class:`AttentionSpec` for ``features``.

    Args:
      lengths: ``"ragged"`` (see :func:`ragged_lengths`), ``"none"``, or an array.
    """
    rng = np.random.default_rng(seed)
    if isinstance(lengths, str):
        lengths = ragged_lengths(batch, length) if lengths == "ragged" else None
    kwargs = {}
    if features.decay is not None:
        gaps = rng.exponential(2.0, size=(batch, length)).astype(np.float32)
        kwargs = dict(
            timestamps=jnp.asarray(np.cumsum(gaps, axis=1) * 3600.0),
            decay_slopes=jnp.asarray(rng.uniform(0.1, 1.0, size=heads).astype(np.float32)),
            decay_fn=features.decay,
            time_unit=3600.0,
        )
    return AttentionSpec(
        causal=features.causal,
        lengths=lengths,
        window=features.window,
        num_global=features.num_global,
        **kwargs,
    )


def assert_close(got, want, tol: Tolerance, what: str):
    got = np.asarray(jnp.asarray(got, jnp.float32))
    want = np.asarray(jnp.asarray(want, jnp.float32))
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values"
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    bound = tol.atol + tol.rtol * (float(np.max(np.abs(want))) if want.size else 0.0)
    assert err <= bound, f"{what}: max abs error {err:.3e} > bound {bound:.3e}"


@jax.jit
def _reference_fp32(q, k, v, spec):
    """The oracle: reference in fp32 at HIGHEST precision (jitted: one compile per shape)."""
    f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
    return reference_attention(f32(q), f32(k), f32(v), spec=spec)


def _loss_fn(fn):
    """Scalar loss ``sum(out * ct)`` as a function of ``(q, k, v, slopes, spec, ct)``."""

    def loss(q, k, v, slopes, spec, ct):
        if slopes is not None:
            spec = spec.replace(decay_slopes=slopes)
        out = fn(q, k, v, spec)
        return jnp.sum(out.astype(jnp.float32) * ct)

    return loss


_REFERENCE_GRADS = {
    argnums: jax.jit(jax.grad(_loss_fn(_reference_fp32), argnums))
    for argnums in ((0, 1, 2), (0, 1, 2, 3))
}


# --------------------------------------------------------------------------- suite


class AttentionSuite:
    """Base class: subclass, name it ``Test*``, implement :meth:`impl`."""

    #: Largest sequence length / batch the implementation should be tested at.
    max_len: int = 256
    max_batch: int = 4
    #: dtypes the implementation supports (fp32 is always required).
    dtypes: tuple = (jnp.float32, jnp.bfloat16, jnp.float16)
    #: number of hypothesis examples in the property test (0 disables it).
    property_examples: int = 6

    def impl(self, q, k, v, spec):  # pragma: no cover - abstract
        raise NotImplementedError("subclasses return attention(q, k, v, spec)")

    # ---- helpers ------------------------------------------------------------------

    def _need(self, *, length=0, batch=0, dtype=None):
        if length > self.max_len or batch > self.max_batch:
            pytest.skip(f"capacity: {type(self).__name__} tests lengths <= {self.max_len}, "
                        f"batch <= {self.max_batch}")
        if dtype is not None and jnp.dtype(dtype) not in {jnp.dtype(d) for d in self.dtypes}:
            pytest.skip(f"{type(self).__name__} does not support {jnp.dtype(dtype).name}")

    def _call(self, q, k, v, spec):
        return jax.jit(lambda q, k, v, spec: self.impl(q, k, v, spec))(q, k, v, spec)

    def check_forward(self, q, k, v, spec, what=""):
        tol = TOLERANCES[jnp.dtype(q.dtype)][0]
        got = self._call(q, k, v, spec)
        assert got.dtype == q.dtype, f"{what}: output dtype {got.dtype} != {q.dtype}"
        assert_close(got, _reference_fp32(q, k, v, spec), tol, f"{what} forward")
        return got

    def check_gradients(self, q, k, v, spec, what="", seed=7):
        tol = TOLERANCES[jnp.dtype(q.dtype)][1]
        ct = jnp.asarray(np.random.default_rng(seed).standard_normal(q.shape, dtype=np.float32))
        argnums = (0, 1, 2, 3) if spec.has_decay else (0, 1, 2)
        slopes = spec.decay_slopes
        got = jax.jit(jax.grad(_loss_fn(self.impl), argnums))(q, k, v, slopes, spec, ct)
        want = _REFERENCE_GRADS[argnums](q, k, v, slopes, spec, ct)
        for name, g, w in zip("qkv", got[:3], want[:3]):
            assert g.dtype == q.dtype, f"{what}: d{name} dtype {g.dtype} != {q.dtype}"
            assert_close(g, w, tol, f"{what} d{name}")
        if spec.has_decay:
            assert_close(got[3], want[3], tol, f"{what} d_slopes")
        return got

    # ---- forward and gradients over every feature combination ----------------------

    @pytest.mark.parametrize("features", FEATURES, ids=lambda f: f.name)
    def test_forward_features(self, features):
        b, n, h, d = 4, 63, 2, 16
        self._need(length=n, batch=b)
        q, k, v = make_qkv(b, n, h, d)
        self.check_forward(q, k, v, make_spec(features, b, n, h), features.name)

    @pytest.mark.parametrize("features", FEATURES, ids=lambda f: f.name)
    def test_gradients_features(self, features):
        b, n, h, d = 4, 63, 2, 16
        self._need(length=n, batch=b)
        q, k, v = make_qkv(b, n, h, d, seed=3)
        self.check_gradients(q, k, v, make_spec(features, b, n, h, seed=4), features.name)

    @pytest.mark.parametrize("length", [7, 63, 200])
    @pytest.mark.parametrize("lengths", ["none", "ragged"])
    def test_lengths_not_block_multiples(self, length, lengths):
        b, h, d = 4, 2, 32
        self._need(length=length, batch=b)
        feats = Features("causal_window_global_decay", window=40, num_global=2, decay=DecayFn.LOG1P)
        q, k, v = make_qkv(b, length, h, d, seed=length)
        spec = make_spec(feats, b, length, h, lengths=lengths)
        self.check_forward(q, k, v, spec, f"L={length}")
        self.check_gradients(q, k, v, spec, f"L={length}")

    @pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
    def test_ragged_and_fully_padded_rows(self, causal):
        b, n, h, d = 4, 33, 2, 16
        self._need(length=n, batch=b)
        q, k, v = make_qkv(b, n, h, d, seed=11)
        lengths = jnp.asarray([33, 17, 0, 1], jnp.int32)
        spec = make_spec(Features("x", causal=causal, decay=DecayFn.LINEAR), b, n, h,
                         lengths=lengths)
        out = self.check_forward(q, k, v, spec, "ragged")
        mask = np.arange(n)[None, :] >= np.asarray(lengths)[:, None]  # padded rows
        assert np.all(np.asarray(out)[mask] == 0.0), "padded query rows must be exactly 0"
        dq, dk, dv, _ = self.check_gradients(q, k, v, spec, "ragged")
        for name, g in zip("qkv", (dq, dk, dv)):
            assert np.all(np.asarray(g)[mask] == 0.0), f"d{name} at padded rows must be 0"

    def test_all_rows_padded(self):
        b, n, h, d = 2, 16, 2, 16
        self._need(length=n, batch=b)
        q, k, v = make_qkv(b, n, h, d)
        spec = make_spec(Features("causal"), b, n, h, lengths=jnp.zeros((b,), jnp.int32))
        out = self._call(q, k, v, spec)
        assert np.all(np.asarray(out) == 0.0)
        ct = jnp.ones(q.shape, jnp.float32)
        grads = jax.jit(jax.grad(_loss_fn(self.impl), (0, 1, 2)))(q, k, v, None, spec, ct)
        for g in grads:
            assert np.all(np.asarray(g) == 0.0), "gradients of fully padded input must be 0"

    @pytest.mark.parametrize("heads,head_dim", [(1, 16), (3, 32), (4, 64)])
    def test_heads_and_head_dims(self, heads, head_dim):
        b, n = 2, 40
        self._need(length=n, batch=b)
        q, k, v = make_qkv(b, n, heads, head_dim, seed=heads)
        spec = make_spec(Features("cd", decay=DecayFn.LOG1P), b, n, heads)
        self.check_forward(q, k, v, spec, f"h={heads} d={head_dim}")
        self.check_gradients(q, k, v, spec, f"h={heads} d={head_dim}")

    def test_custom_scale(self):
        b, n, h, d = 2, 24, 2, 16
        self._need(length=n, batch=b)
        q, k, v = make_qkv(b, n, h, d, seed=5)
        spec = make_spec(Features("causal"), b, n, h).replace(scale=0.7)
        self.check_forward(q, k, v, spec, "scale")
        self.check_gradients(q, k, v, spec, "scale")

    @pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bf16", "fp16"])
    @pytest.mark.parametrize("features", [FEATURES[1], FEATURES[8]], ids=lambda f: f.name)
    def test_low_precision(self, dtype, features):
        b, n, h, d = 2, 63, 2, 32
        self._need(length=n, batch=b, dtype=dtype)
        q, k, v = make_qkv(b, n, h, d, dtype=dtype, seed=9)
        spec = make_spec(features, b, n, h)
        self.check_forward(q, k, v, spec, jnp.dtype(dtype).name)
        self.check_gradients(q, k, v, spec, jnp.dtype(dtype).name)

    # ---- composition ---------------------------------------------------------------

    def test_jit_matches_eager_and_vmap(self):
        b, n, h, d = 2, 20, 2, 16
        self._need(length=n, batch=b)
        q, k, v = make_qkv(3 * b, n, h, d, seed=21)
        spec = make_spec(Features("causal_decay", decay=DecayFn.LOG1P), b, n, h)
        tol = TOLERANCES[jnp.dtype(jnp.float32)][0]
        split = lambda x: x.reshape(3, b, *x.shape[1:])  # noqa: E731
        got = jax.jit(jax.vmap(lambda q, k, v: self.impl(q, k, v, spec)))(
            split(q), split(k), split(v))
        for i in range(3):
            sl = slice(i * b, (i + 1) * b)
            assert_close(got[i], _reference_fp32(q[sl], k[sl], v[sl], spec), tol, f"vmap[{i}]")
        eager = self.impl(q[:b], k[:b], v[:b], spec)
        assert_close(eager, got[0], tol, "eager vs jit(vmap)")

    def test_grad_of_jit_and_vmap_of_grad(self):
        b, n, h, d = 2, 20, 2, 16
        self._need(length=n, batch=b)
        q, k, v = make_qkv(b, n, h, d, seed=22)
        spec = make_spec(Features("causal_window", window=5), b, n, h)
        tol = TOLERANCES[jnp.dtype(jnp.float32)][1]
        f = lambda q: jnp.sum(jnp.sin(self.impl(q, k, v, spec)))  # noqa: E731
        r = lambda q: jnp.sum(jnp.sin(_reference_fp32(q, k, v, spec)))  # noqa: E731
        assert_close(jax.grad(jax.jit(f))(q), jax.grad(r)(q), tol, "grad(jit)")
        qs = jnp.stack([q, 2.0 * q])
        got = jax.jit(jax.vmap(jax.grad(f)))(qs)
        assert_close(got[1], jax.grad(r)(2.0 * q), tol, "vmap(grad)")

    # ---- property test ---------------------------------------------------------------

    def test_property_random_specs(self):
        if self.property_examples <= 0:
            pytest.skip("property test disabled for this implementation")
        hypothesis = pytest.importorskip("hypothesis")
        st = hypothesis.strategies
        max_len = min(self.max_len, 48)

        @hypothesis.settings(max_examples=self.property_examples, deadline=None,
                             derandomize=True, database=None)
        @hypothesis.given(
            batch=st.integers(1, min(3, self.max_batch)),
            length=st.integers(1, max_len),
            heads=st.integers(1, 3),
            head_dim=st.sampled_from([8, 16]),
            causal=st.booleans(),
            window=st.one_of(st.none(), st.integers(1, 20)),
            num_global=st.integers(0, 4),
            decay=st.sampled_from([None, DecayFn.LOG1P, DecayFn.LINEAR]),
            data=st.data(),
        )
        def run(batch, length, heads, head_dim, causal, window, num_global, decay, data):
            lengths = jnp.asarray(
                data.draw(st.lists(st.integers(0, length), min_size=batch, max_size=batch)),
                jnp.int32)
            feats = Features("prop", causal=causal, window=window,
                             num_global=num_global if window is not None else 0, decay=decay)
            q, k, v = make_qkv(batch, length, heads, head_dim, seed=length)
            spec = make_spec(feats, batch, length, heads, lengths=lengths)
            self.check_forward(q, k, v, spec, f"property {feats}")
            self.check_gradients(q, k, v, spec, f"property {feats}")

        run()
