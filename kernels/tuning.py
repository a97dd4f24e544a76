"""Launch parameters for the Pallas/Triton flash-attention kernel.

Tuning is kept apart from model configuration: a model says *what* to attend to
(:class:`attnlab.ops.spec.AttentionSpec`), a :class:`FlashTuning` says *how* the
kernel tiles the work. :func:`default_tuning` is a small heuristic; benchmarks may
pass their own instance.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

#: Triton's ``tl.dot`` needs every matmul dimension to be at least 16.
MIN_BLOCK = 16


def _is_pow2(x: int) -> bool:
    return x > 0 and (x & (x - 1)) == 0


def next_pow2(x: int) -> int:
    """Smallest power of two ``>= max(x, 1)``."""
    return 1 << max(int(x) - 1, 0).bit_length()


@dataclasses.dataclass(frozen=True)
class FlashTuning:
    """Tile sizes and Triton launch options of the forward and backward kernels.

    Attributes:
      block_q: query rows per forward program (power of two, >= 16).
      block_k: keys per forward inner-loop step (power of two, >= 16).
      num_warps: warps per forward program.
      num_stages: software-pipelining stages of the forward inner loop.
      block_q_bwd: query rows per step in the backward kernels (dQ program tile and
        dK/dV inner-loop step).
      block_k_bwd: keys per step in the backward kernels (dK/dV program tile and dQ
        inner-loop step).
      num_warps_bwd: warps per backward program.
      num_stages_bwd: pipelining stages of the backward inner loops.
    """

    block_q: int = 64
    block_k: int = 64
    num_warps: int = 4
    num_stages: int = 2
    block_q_bwd: int = 32
    block_k_bwd: int = 32
    num_warps_bwd: int = 4
    num_stages_bwd: int = 2

    def __post_init__(self):
        for name in ("block_q", "block_k", "block_q_bwd", "block_k_bwd"):
            value = getattr(self, name)
            if not _is_pow2(value) or value < MIN_BLOCK:
                raise ValueError(
                    f"FlashTuning.{name} must be a power of two >= {MIN_BLOCK} "
                    f"(Triton tile constraint), got {value}."
                )
        for name in ("num_warps", "num_warps_bwd"):
            value = getattr(self, name)
            if not _is_pow2(value) or value > 16:
                raise ValueError(f"FlashTuning.{name} must be 1, 2, 4, 8 or 16, got {value}.")
        for name in ("num_stages", "num_stages_bwd"):
            if getattr(self, name) < 1:
                raise ValueError(f"FlashTuning.{name} must be >= 1, got {getattr(self, name)}.")

    def fitted(self, q_len: int, k_len: int) -> "FlashTuning":
        """Shrinks tiles that are larger than the (power-of-two rounded) lengths.

        A 7-event history does not need a 128-row tile: padding to it only wastes
        work. Tiles never go below :data:`MIN_BLOCK`.
        """
        cap_q = max(MIN_BLOCK, next_pow2(q_len))
        cap_k = max(MIN_BLOCK, next_pow2(k_len))
        return dataclasses.replace(
            self,
            block_q=min(self.block_q, cap_q),
            block_k=min(self.block_k, cap_k),
            block_q_bwd=min(self.block_q_bwd, cap_q),
            block_k_bwd=min(self.block_k_bwd, cap_k),
        )


def default_tuning(q_len: int, k_len: int, head_dim: int, dtype) -> FlashTuning:
    """Heuristic tiles for one call shape.

    The forward kernel keeps a ``[block_q, head_dim]`` fp32 accumulator and a
    ``[block_q, block_k]`` score tile in registers; the backward dK/dV kernel keeps
    two ``[block_k_bwd, head_dim]`` accumulators plus the score, probability and
    gradient tiles, so its tiles are smaller. fp32 inputs take twice the shared
    memory per tile and get smaller tiles.

    Args:
      q_len: query length (before padding).
      k_len: key length (before padding).
      head_dim: per-head feature size.
      dtype: input dtype (fp32, bf16 or fp16).

    Returns:
      A :class:`FlashTuning` already fitted to the lengths.
    """
    wide = jnp.dtype(dtype).itemsize >= 4
    big_head = head_dim > 64
    block_q = 64 if (wide or big_head) else 128
    block_k = 32 if (wide and big_head) else 64
    num_warps = 8 if block_q * max(head_dim, block_k) >= 128 * 64 else 4
    num_stages = 2 if wide else 3
    block_bwd = 32 if (wide or big_head) else 64
    tuning = FlashTuning(
        block_q=block_q,
        block_k=block_k,
        num_warps=num_warps,
        num_stages=num_stages,
        block_q_bwd=block_bwd,
        block_k_bwd=block_bwd,
        num_warps_bwd=4 if block_bwd <= 32 else 8,
        num_stages_bwd=2,
    )
    return tuning.fitted(q_len, k_len)
