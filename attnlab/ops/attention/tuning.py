"""Tuning numbers of the attention implementations: how they tile and where the
dispatcher switches, never what they compute.

Numbers only. The heuristics that read them live with their implementation; the
measurements behind them are in ``docs/kernel_bench.md`` ("Tuning rationale").
Constraints of the hardware or of Triton (minimum tile 16, head_dim at most 128)
are not tuning and stay with the kernel.
"""

# ---------------------------------------------------------------- dispatcher

#: On CPU, sequences up to this length use the reference; longer ones a blockwise path.
CPU_REFERENCE_MAX_LENGTH = 128

# ---------------------------------------------------------------- xla_chunked

#: Query rows and keys per block (default, and below CHUNK_LONG_LENGTH positions).
CHUNK_BLOCK = 256
#: From this length on, blocks of CHUNK_BLOCK_LONG.
CHUNK_LONG_LENGTH = 2048
CHUNK_BLOCK_LONG = 512
#: Windows up to this size use blocks of CHUNK_BLOCK_WINDOW.
CHUNK_WINDOW_MAX = 512
CHUNK_BLOCK_WINDOW = 128

# ---------------------------------------------------------------- banded

#: Windows up to this size use query blocks of BAND_BLOCK_SMALL_WINDOW positions,
#: larger ones BAND_BLOCK.
BAND_SMALL_WINDOW = 128
BAND_BLOCK_SMALL_WINDOW = 64
BAND_BLOCK = 256
#: Scores per loop step (rows * block * slab) the default row count aims at
#: (2^19 fp32 = 2 MiB).
BAND_STEP_SCORES = 1 << 19
#: Automatic dispatch takes the band while one query block's key slab is at most
#: this fraction of the padded sequence.
BAND_MAX_SLAB_FRACTION = 0.75

# ---------------------------------------------------------------- pallas_triton

#: FlashTuning defaults (an explicit FlashTuning overrides the fields it names).
FLASH_BLOCK_Q = 64
FLASH_BLOCK_K = 64
FLASH_NUM_WARPS = 4
FLASH_NUM_STAGES = 2
FLASH_BLOCK_Q_BWD = 32
FLASH_BLOCK_K_BWD = 32
FLASH_NUM_WARPS_BWD = 4
FLASH_NUM_STAGES_BWD = 2

#: default_tuning. A head dimension above this counts as big.
FLASH_BIG_HEAD_DIM = 64
#: Forward (block_q, block_k) by (fp32 inputs, big head).
FLASH_FWD_BLOCKS = {
    (False, False): (128, 64),
    (False, True): (64, 64),
    (True, False): (64, 64),
    (True, True): (64, 32),
}
#: Forward warps: the second once block_q * max(head_dim, block_k) reaches
#: FLASH_FWD_WIDE_TILE, else the first.
FLASH_FWD_WARPS = (4, 8)
FLASH_FWD_WIDE_TILE = 128 * 64
#: Forward pipelining stages by fp32 inputs.
FLASH_FWD_STAGES = {False: 3, True: 2}
#: Backward tile (block_q_bwd = block_k_bwd) by (fp32 inputs or big head).
FLASH_BWD_BLOCK = {False: 64, True: 32}
#: Backward warps, same key.
FLASH_BWD_WARPS = {False: 8, True: 4}
FLASH_BWD_STAGES = 2
#: The delta = rowsum(dO * O) pre-pass of the backward.
FLASH_DELTA_WARPS = 4
FLASH_DELTA_STAGES = 1
