"""The ``trainer`` config group (typed) and the optimiser it describes.

:class:`TrainerConfig` holds every trainer default once; :func:`make_optimizer` builds
AdamW with the :func:`lr_schedule` (warm-up, then cosine / linear decay over the step
budget) and weight decay on the :func:`decay_mask` group only. The measured ablation of
each piece is in docs/recipe_ablation.md.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar

import jax
import optax

from attnlab.train.distributed import DistributedConfig
from attnlab.train.mesh import MeshConfig
from attnlab.typed_config import ConfigError, TypedConfig


@dataclasses.dataclass(frozen=True)
class TrainerConfig(TypedConfig):
    """The ``trainer`` config group, typed: every default is written here once (the YAML
    in ``configs/trainer/default.yaml`` states the same values for readers) and an
    unknown key or an out-of-range value fails before any work.

    The training recipe (see docs/models.md, "Training recipe"): AdamW, warm-up over
    ``warmup`` of the step budget then ``schedule`` decay to ``lr * min_lr_ratio``;
    weight decay on weight matrices only (``decay: kernels``), never on embeddings,
    biases and norms; a budget in optimisation steps (``max_steps``), which also sizes
    the schedule. ``max_epochs`` is an optional cap on passes over the training
    windows: like early stopping it ends a run before the budget without resizing the
    schedule (so a run extended on resume continues the same schedule); with
    ``max_steps: null`` the budget is ``max_epochs`` passes.

    ``mesh`` and ``distributed`` say where the run trains (devices, processes), not what
    it computes: ``batch_size`` is the global batch whatever the layout, and the two are
    not part of the run's config hash (docs/scaling.md, "Many devices and hosts").
    """

    lr: float = 1e-3
    weight_decay: float = 0.01
    decay: str = "kernels"        # kernels (weight matrices only) | all (every parameter, the old recipe)
    schedule: str = "cosine"      # cosine | linear | constant (after warm-up)
    warmup: float = 0.05          # warm-up length as a fraction of the step budget
    min_lr_ratio: float = 0.0     # the decayed schedule ends at lr * min_lr_ratio
    grad_clip: float = 1.0
    batch_size: int = 64
    eval_batch_size: int = 256
    max_steps: int | None = 400   # the step budget (and the schedule's length); null = max_epochs passes
    max_epochs: int | None = None # cap on passes (stops early, like patience; the schedule stays sized by max_steps)
    patience: int = 3             # validation passes without improvement before stopping
    stop_at: float | None = None  # stop once the validation monitor reaches this value (its maximum: the same checkpoint as the full budget)
    init_bias: str = "log_popularity"  # log_popularity | zeros: the catalogue bias at step 0
    resume: bool = True
    skip_completed: bool | None = None
    limit_train_batches: int | None = None  # debug: cap batches per pass
    length_buckets: int | None = None  # static batch lengths (attnlab.data.buckets); null = auto: 8 from max_len 512, else 1
    # where it runs, not what it computes (docs/scaling.md); left out of the config hash
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)  # data-parallel layout
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)  # multi-process job

    GROUP: ClassVar[str] = "trainer"
    CHOICES: ClassVar[dict] = {"decay": ("kernels", "all"), "schedule": ("cosine", "linear", "constant"),
                               "init_bias": ("log_popularity", "zeros")}

    def check(self) -> None:
        if not self.lr > 0:
            raise self.bad("lr", self.lr, "must be > 0")
        if not self.weight_decay >= 0:
            raise self.bad("weight_decay", self.weight_decay, "must be >= 0")
        if not 0.0 <= self.warmup < 1.0:
            raise self.bad("warmup", self.warmup, "a fraction of the step budget in [0, 1)")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise self.bad("min_lr_ratio", self.min_lr_ratio, "in [0, 1]")
        for key in ("batch_size", "eval_batch_size", "patience"):
            if getattr(self, key) < 1:
                raise self.bad(key, getattr(self, key), "must be >= 1")
        for key in ("max_steps", "max_epochs", "limit_train_batches", "length_buckets"):
            v = getattr(self, key)
            if v is not None and v < 1:
                raise self.bad(key, v, "must be >= 1 or null")
        if self.stop_at is not None and not math.isfinite(self.stop_at):
            raise self.bad("stop_at", self.stop_at, "a finite monitor value (e.g. 1.0, a hit rate's maximum) or null")
        if self.max_steps is None and self.max_epochs is None:
            raise ConfigError("trainer.max_steps and trainer.max_epochs are both null: set a step "
                              "budget (trainer.max_steps=N) or a number of passes (trainer.max_epochs=N).")


def decay_mask(params: Any, *, decay: str = "kernels") -> Any:
    """Which parameters get weight decay: a pytree of bools shaped like ``params``.

    ``kernels``: only weight matrices of linear maps (leaves named ``kernel``, which
    includes the LSTM's input/recurrent maps), never embeddings (the item table is also the output
    layer), biases, LayerNorm scales or per-head scalars (decay slopes, gammas).
    ``all``: every parameter (the v0.1 recipe, kept for the ablation).
    """
    if decay == "all":
        return jax.tree.map(lambda _: True, params)

    def is_matrix(path, leaf):
        names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
        return "kernel" in names[-2:]

    return jax.tree_util.tree_map_with_path(is_matrix, params)


def lr_schedule(cfg: TrainerConfig, total_steps: int | None) -> optax.Schedule:
    """Linear warm-up over ``warmup * total_steps`` then ``cfg.schedule`` decay to
    ``lr * min_lr_ratio`` at ``total_steps`` (constant ``lr`` when the total is unknown)."""
    lr = float(cfg.lr)
    if not total_steps:
        return optax.constant_schedule(lr)
    total = int(total_steps)
    warm = int(round(cfg.warmup * total))
    end = lr * float(cfg.min_lr_ratio)
    rest = max(total - warm, 1)
    if cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(lr, rest, alpha=float(cfg.min_lr_ratio))
    elif cfg.schedule == "linear":
        after = optax.linear_schedule(lr, end, rest)
    else:
        after = optax.constant_schedule(lr)
    if not warm:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), after], [warm])


def make_optimizer(trainer_cfg: dict[str, Any] | TrainerConfig, *, total_steps: int | None = None,
                   ) -> optax.GradientTransformation:
    """AdamW (decoupled decay on the :func:`decay_mask` group), the :func:`lr_schedule`,
    and global-norm clipping. ``total_steps`` defaults to ``trainer.max_steps``."""
    cfg = trainer_cfg if isinstance(trainer_cfg, TrainerConfig) else TrainerConfig.from_dict(trainer_cfg)
    total = total_steps if total_steps is not None else cfg.max_steps
    return optax.chain(
        optax.clip_by_global_norm(float(cfg.grad_clip)),
        optax.adamw(lr_schedule(cfg, total), weight_decay=float(cfg.weight_decay),
                    mask=functools.partial(decay_mask, decay=cfg.decay)),
    )
