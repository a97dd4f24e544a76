"""Launch parameters of the Pallas/Triton flash-attention kernel.

Tuning is kept apart from model configuration: a model says *what* to attend to
(:class:`attnlab.ops.attention.AttentionSpec`), a :class:`FlashTuning` says *how* the
kernel tiles the work. :func:`default_tuning` is a small heuristic over the numbers
of :mod:`attnlab.ops.attention.tuning`; benchmarks may pass their own instance.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from attnlab.ops.attention import tuning as numbers

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

    block_q: int = numbers.FLASH_BLOCK_Q
    block_k: int = numbers.FLASH_BLOCK_K
    num_warps: int = numbers.FLASH_NUM_WARPS
    num_stages: int = numbers.FLASH_NUM_STAGES
    block_q_bwd: int = numbers.FLASH_BLOCK_Q_BWD
    block_k_bwd: int = numbers.FLASH_BLOCK_K_BWD
    num_warps_bwd: int = numbers.FLASH_NUM_WARPS_BWD
    num_stages_bwd: int = numbers.FLASH_NUM_STAGES_BWD

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
    memory per tile and get smaller tiles; so does a big head.

    Args:
      q_len: query length (before padding).
      k_len: key length (before padding).
      head_dim: per-head feature size.
      dtype: input dtype (fp32, bf16 or fp16).

    Returns:
      A :class:`FlashTuning` already fitted to the lengths.
    """
    wide = jnp.dtype(dtype).itemsize >= 4
    big_head = head_dim > numbers.FLASH_BIG_HEAD_DIM
    block_q, block_k = numbers.FLASH_FWD_BLOCKS[(wide, big_head)]
    small_warps, many_warps = numbers.FLASH_FWD_WARPS
    wide_tile = block_q * max(head_dim, block_k) >= numbers.FLASH_FWD_WIDE_TILE
    block_bwd = numbers.FLASH_BWD_BLOCK[wide or big_head]
    tuning = FlashTuning(
        block_q=block_q,
        block_k=block_k,
        num_warps=many_warps if wide_tile else small_warps,
        num_stages=numbers.FLASH_FWD_STAGES[wide],
        block_q_bwd=block_bwd,
        block_k_bwd=block_bwd,
        num_warps_bwd=numbers.FLASH_BWD_WARPS[wide or big_head],
        num_stages_bwd=numbers.FLASH_BWD_STAGES,
    )
    return tuning.fitted(q_len, k_len)


@dataclasses.dataclass(frozen=True)
class Launch:
    """How one call runs its kernels (hashable: a static kernel parameter).

    Attributes:
      q_len, k_len: unpadded lengths (padding rows and keys are masked).
      tuning: tiles and launch options, fitted to the lengths.
      interpret: run in Pallas interpret mode (CPU tests).
    """

    q_len: int
    k_len: int
    tuning: FlashTuning
    interpret: bool
