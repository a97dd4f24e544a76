"""The ``task`` config group, typed: one dataclass per task holds its defaults once.

``configs/task/<name>.yaml`` states the same values for readers (a test proves they are
equal); the task classes in :mod:`attnlab.train.tasks` read these attributes only.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from attnlab.data import splits as protocols
from attnlab.data.batching import DEFAULT_SUMMARY_FORM, SUMMARY_FORMS
from attnlab.typed_config import ConfigError, TypedConfig

PROPOSALS = ("uniform", "log_uniform", "popularity")
ENCODERS = ("causal", "cutoff_relative", "event_local")


@dataclasses.dataclass(frozen=True)
class SampledSoftmaxConfig(TypedConfig):
    """``task.sampled_softmax``: the training loss only; evaluation ranks the full catalogue."""

    GROUP: ClassVar[str] = "task.sampled_softmax"
    CHOICES: ClassVar[dict] = {"proposal": PROPOSALS}

    negatives: int = 1024      # shared negatives per batch, logQ-corrected; 0 (or >= the catalogue) = full softmax
    proposal: str = "popularity"  # uniform | log_uniform (Zipf over popularity rank) | popularity (counts + 1)^alpha
    alpha: float = 0.75        # popularity exponent

    def check(self) -> None:
        if self.negatives < 0:
            raise self.bad("negatives", self.negatives, "must be an integer >= 0 (0 = full softmax)")
        if not self.alpha >= 0.0:
            raise self.bad("alpha", self.alpha, "must be >= 0")


def _time(group: str, key: str, value, *, duration: bool = False) -> int | None:
    """Seconds of a cut-off date or a duration, or a ConfigError naming ``group.key``."""
    if value is None:
        return None
    try:
        return protocols.to_duration_seconds(value) if duration else protocols.to_seconds(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{group}.{key}={value!r}: {e}") from None


def _at_least(cfg: TypedConfig, key: str, low: int, what: str) -> None:
    value = getattr(cfg, key)
    if value < low:
        raise cfg.bad(key, value, f"must be an integer >= {low} ({what})")


@dataclasses.dataclass(frozen=True)
class RankingTaskConfig(TypedConfig):
    """Keys shared by ``next_item`` and ``next_basket`` (see :class:`NextItemConfig`)."""

    GROUP: ClassVar[str] = "task"
    CHOICES: ClassVar[dict] = {"window_ends": ("random", "latest"), "encoder": ENCODERS,
                               "targets": ("spread", "basket"), "loss": ("softmax", "gbce")}

    name: str = "next_item"
    monitor: str | None = None       # validation metric for early stopping (null = the task's default)
    encoder: str = "causal"          # the model's default encoder: features never depend on later events
    windows_per_customer: int = 4    # window ends per customer per pass
    window_ends: str = "random"      # random: seeded ends at baskets with a target | latest: v0.1's backward cut
    loss_positions: int = 0          # 0 = every position with a target; N = a seeded sample of N per window
    targets: str = "spread"          # spread: a basket's k-th event targets item k of the next basket | basket: its last event targets every item
    sampled_softmax: SampledSoftmaxConfig = dataclasses.field(default_factory=SampledSoftmaxConfig)
    loss: str = "softmax"            # softmax: (sampled) softmax CE | gbce: gSASRec's gBCE over the sampled negatives (softmax head)
    gbce_t: float = 0.75             # gBCE calibration: 0 = BCE with negatives, 1 = fully calibrated
    ks: tuple[int, ...] = (10, 20)
    baselines: tuple[str, ...] = ("most_popular", "personal_repeat")

    def check(self) -> None:
        if not self.ks or any(k < 1 for k in self.ks):
            raise self.bad("ks", list(self.ks), "a non-empty list of integers >= 1, e.g. [10, 20]")
        _at_least(self, "windows_per_customer", 1, "window ends per customer per pass")
        _at_least(self, "loss_positions", 0, "0 = every position")
        if not 0.0 <= self.gbce_t <= 1.0:
            raise self.bad("gbce_t", self.gbce_t, "must be in [0, 1] (0 = BCE with negatives, 1 = calibrated)")


@dataclasses.dataclass(frozen=True)
class NextItemConfig(RankingTaskConfig):
    """``task=next_item``: leave-last-basket-out, target = a seeded item of the last basket."""

    name: str = "next_item"
    min_baskets: int = 3

    def check(self) -> None:
        super().check()
        _at_least(self, "min_baskets", 2, "one validation + one test basket")


@dataclasses.dataclass(frozen=True)
class NextBasketConfig(RankingTaskConfig):
    """``task=next_basket``: global time cut-offs (null = from the data's span)."""

    name: str = "next_basket"
    targets: str = "basket"                 # the test query: a basket's end scored against the whole next basket
    valid_cutoff: str | int | None = None   # a date (or Unix seconds); null = from the data's span
    test_cutoff: str | int | None = None
    min_history_baskets: int = 1

    def check(self) -> None:
        super().check()
        _at_least(self, "min_history_baskets", 0, "0 keeps cold-start customers")
        vc = _time(self.GROUP, "valid_cutoff", self.valid_cutoff)
        tc = _time(self.GROUP, "test_cutoff", self.test_cutoff)
        if vc is not None and tc is not None and not vc < tc:
            raise ConfigError(f"task.valid_cutoff={self.valid_cutoff!r} must be before "
                              f"task.test_cutoff={self.test_cutoff!r}.")


@dataclasses.dataclass(frozen=True)
class ChurnConfig(TypedConfig):
    """``task=churn``: label = no purchase in ``[cutoff, cutoff + horizon)``."""

    GROUP: ClassVar[str] = "task"
    CHOICES: ClassVar[dict] = {"mode": tuple(m.value for m in protocols.ChurnMode), "encoder": ENCODERS,
                               "summary_form": tuple(SUMMARY_FORMS)}

    name: str = "churn"
    monitor: str | None = None
    encoder: str = "cutoff_relative"  # ages and positions relative to the scoring date
    cutoff: str | int | None = None   # null = the last day in the data minus the horizon
    horizon: str | int = "8W"         # a duration ("8W", "56D") or seconds
    mode: str = "temporal"            # temporal | holdout_customers
    train_stride: str | int | None = "1W"   # rolling training cut-offs every stride; null = one
    windows_per_customer: int = 4     # labelled cut-offs per customer per pass (0 = all)
    recent_half_life: str | int | None = None   # a pass draws a customer's cut-offs with weight 2^(-age / half-life), age before the latest training cut-off; null = uniform
    history_summary: bool = True      # the model's default: the churn head also reads the whole history's RFM summary
    summary_form: str = DEFAULT_SUMMARY_FORM   # rates: per-30-day rates, overdue ratio (stationary over cut-offs) | counts: the first version
    summary_bgnbd: bool = False       # the summary also carries BG/NBD's P(alive), P(no purchase), expected purchases (parameters fitted on the training histories)
    refit: bool = False               # temporal: train on the labels up to the test cut-off for trainer.max_epochs passes
    baselines: tuple[str, ...] = ("recency_frequency", "rfm", "bgnbd")

    def check(self) -> None:
        _time(self.GROUP, "cutoff", self.cutoff)
        _time(self.GROUP, "train_stride", self.train_stride, duration=True)
        _time(self.GROUP, "horizon", self.horizon, duration=True)
        _at_least(self, "windows_per_customer", 0, "labelled cut-offs per customer per pass, 0 = all")
        if _time(self.GROUP, "recent_half_life", self.recent_half_life, duration=True) is not None:
            if self.train_stride is None or self.windows_per_customer == 0:
                raise ConfigError(
                    f"task.recent_half_life={self.recent_half_life!r} weights which of a customer's rolling "
                    f"cut-offs a pass draws; it needs task.train_stride (rolling cut-offs) and "
                    f"task.windows_per_customer >= 1 (got train_stride={self.train_stride!r}, "
                    f"windows_per_customer={self.windows_per_customer}), otherwise every cut-off is used.")
        if self.summary_bgnbd and not self.history_summary:
            raise ConfigError("task.summary_bgnbd=true adds BG/NBD columns to the churn head's history summary, "
                              "but task.history_summary=false: set task.history_summary=true or "
                              "task.summary_bgnbd=false.")
        if self.refit and self.mode != protocols.ChurnMode.TEMPORAL.value:
            raise ConfigError(f"task.refit=true moves the training labels up to the test cut-off; it needs "
                              f"task.mode=temporal, got task.mode={self.mode!r}.")


TASK_CONFIGS: dict[str, type[TypedConfig]] = {
    "next_item": NextItemConfig, "next_basket": NextBasketConfig, "churn": ChurnConfig}
