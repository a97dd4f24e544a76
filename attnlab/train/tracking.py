"""Experiment tracking: Weights & Biases (offline by default) or nothing.

``logger=wandb`` (default) writes an offline run under the Hydra output dir; sync it
later with ``wandb sync <dir>``. Set ``logger.mode=online`` (with ``WANDB_API_KEY``)
to stream. ``logger=none`` tracks nothing. Tests use ``mode=disabled``/``none`` and
never touch the network.

What a W&B run holds (:func:`define_axes`; ``attnlab.train.loop`` logs it):

* ``train/loss`` and ``train/lr`` every ``logger.log_every_steps`` optimisation steps
  (loss averaged over those steps), against ``trainer/step``;
* per epoch, against the integer ``epoch``: ``valid/<metric>`` (the monitor's summary is
  its best value), ``epoch/train_loss`` (mean over the epoch);
* per epoch, in the ``perf/`` section (like W&B's system panels, against ``epoch``):
  ``perf/train_events_per_s`` and ``perf/peak_rss_mb``;
* counts (``valid/n``, ``valid/planted/n``, ...) in the run summary only, never as curves;
* at the end: the test metrics as a ``wandb.Table`` and in the summary (``test/<contender>/<metric>``),
  learning-curve and attention images.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class NullTracker:
    """Tracks nothing; same interface as :class:`WandbTracker`."""

    wants_media = False  # images (learning curves, attention heatmaps) are not built for it

    def __init__(self):
        self.logged: list[tuple[int | None, dict[str, Any]]] = []
        self.summary: dict[str, Any] = {}
        self.tables: dict[str, tuple[list[str], list[list[Any]]]] = {}
        self.images: dict[str, Any] = {}

    def log(self, metrics: dict[str, Any], *, step: int | None = None) -> None:
        self.logged.append((step, dict(metrics)))

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        """A table (e.g. the final test metrics, one row per contender)."""
        self.tables[key] = (list(columns), [list(r) for r in rows])

    def log_figure(self, key: str, figure) -> None:
        """A matplotlib figure, logged as an image (closed afterwards)."""
        self.images[key] = figure

    def set_summary(self, values: dict[str, Any]) -> None:
        self.summary.update(values)

    def define_metric(self, name: str, **kwargs: Any) -> None:
        """An x-axis / summary rule (``wandb.define_metric``); nothing for this tracker."""

    def finish(self) -> None:
        pass


STEP_AXIS = "trainer/step"
EPOCH_AXIS = "epoch"


def is_count(key: str) -> bool:
    """``n``, ``planted/n``, ``n_repeat``, ...: a count, a summary value rather than a curve."""
    leaf = key.rsplit("/", 1)[-1]
    return leaf == "n" or leaf.startswith("n_")


def define_axes(tracker, *, monitor: str) -> None:
    """The run's x-axes: step-level ``train/*`` against ``trainer/step``; ``valid/*``,
    ``epoch/*`` and ``perf/*`` against the integer ``epoch``; the monitor summarised by its
    best (max) value."""
    tracker.define_metric(STEP_AXIS)
    tracker.define_metric(EPOCH_AXIS)
    tracker.define_metric("train/*", step_metric=STEP_AXIS)
    for section in ("valid", "epoch", "perf"):
        tracker.define_metric(f"{section}/*", step_metric=EPOCH_AXIS)
    tracker.define_metric(f"valid/{monitor}", step_metric=EPOCH_AXIS, summary="max")


class WandbTracker(NullTracker):
    """One W&B run per job: resolved config, git SHA and data fingerprint attached."""

    wants_media = True  # worth computing images (attention heatmaps) for

    def __init__(
        self,
        *,
        project: str,
        mode: str,
        config: dict[str, Any],
        directory: str,
        group: str | None = None,
        tags: list[str] | None = None,
        name: str | None = None,
        job_type: str | None = None,
    ):
        super().__init__()
        import wandb

        self._run = wandb.init(
            project=project, mode=mode, config=config, dir=directory, group=group,
            tags=tags or [], name=name, job_type=job_type, reinit="finish_previous",
        )
        log.info("W&B run %s (mode=%s) in %s", self._run.id, mode, directory)

    def log(self, metrics, *, step=None):
        super().log(metrics, step=step)
        self._run.log(metrics, step=step)

    def log_table(self, key, columns, rows):
        super().log_table(key, columns, rows)
        import wandb

        self._run.log({key: wandb.Table(columns=list(columns), data=[list(r) for r in rows])})

    def log_figure(self, key, figure):
        super().log_figure(key, figure)
        import wandb

        self._run.log({key: wandb.Image(_png(figure))})

    def set_summary(self, values):
        super().set_summary(values)
        for k, v in values.items():
            self._run.summary[k] = v

    def define_metric(self, name, **kwargs):
        self._run.define_metric(name, **kwargs)

    def finish(self):
        self._run.finish()


def learning_curves(history: list[dict[str, Any]], *, monitor: str, title: str = ""):
    """Training loss and the validation monitor per epoch (two panels); returns a
    matplotlib Figure (no pyplot: never touches a notebook's backend)."""
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(8, 3), layout="constrained")
    a, b = fig.subplots(1, 2)
    a.plot(epochs, [h["train_loss"] for h in history], marker="o")
    a.set(xlabel="epoch", ylabel="train loss", title="training loss")
    b.plot(epochs, [h.get(f"valid/{monitor}", float("nan")) for h in history], marker="o", color="C1")
    b.set(xlabel="epoch", ylabel=f"valid {monitor}", title=f"validation {monitor}")
    if title:
        fig.suptitle(title)
    return fig


def log_final(tracker, result, *, monitor: str, attention=None) -> None:
    """The end-of-run payload: the test metrics as a table (one row per contender) and in
    the summary (``test/<contender>/<metric>``); for trackers that want media, the
    learning curves and ``attention()`` (a Figure of one test customer's attention, or
    None for families without softmax weights) as images."""
    names = list(result.metrics)
    cols = sorted({k for d in result.metrics.values() for k in d})
    tracker.log_table("test/metrics", ["contender", *cols],
                      [[n, *[result.metrics[n].get(k) for k in cols]] for n in names])
    if tracker.wants_media:
        if result.history:
            p = result.provenance
            tracker.log_figure("plots/learning_curves", learning_curves(
                result.history, monitor=monitor,
                title=f"{p['model']} on {p['data']}/{p['task']}, seed {p['seed']}"))
        fig = attention() if attention is not None else None
        if fig is not None:
            tracker.log_figure("plots/attention", fig)
    tracker.set_summary({f"test/{m}/{k}": v for m, d in result.metrics.items() for k, v in d.items()})


def attention_heatmap(model, store, examples, *, task: str, row: int = 0):
    """The attention heatmap of one test customer (a Figure), or None for families without
    softmax weights."""
    from attnlab.explain import NoAttentionWeightsError, TimeReference, explain_example, plot_attention_heatmap

    if len(examples) == 0:
        return None
    ref = TimeReference.CUTOFF if task == "churn" else TimeReference.LATEST_EVENT
    try:
        explanation = explain_example(model, store, examples, row, time_reference=ref)
    except NoAttentionWeightsError as e:
        log.info("no attention heatmap: %s", e)
        return None
    return plot_attention_heatmap(explanation)


def _png(figure):
    """A matplotlib Figure rendered to a PIL image. ``wandb.Image(figure)`` itself
    touches ``matplotlib.pyplot``, which raises AttributeError in a process that never
    imported pyplot (our figures are pyplot-free ``Figure`` objects)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=100)
    buf.seek(0)
    return Image.open(buf)


def make_tracker(logger_cfg: dict[str, Any] | None, *, config: dict[str, Any], directory: str):
    """Build the tracker named by the ``logger`` config group (``name: wandb|none``)."""
    if not logger_cfg or logger_cfg.get("name", "none") == "none":
        return NullTracker()
    if logger_cfg["name"] != "wandb":
        raise ValueError(f"unknown logger {logger_cfg['name']!r}; use logger=wandb or logger=none.")
    return WandbTracker(
        project=logger_cfg.get("project", "attnlab"),
        mode=logger_cfg.get("mode", "offline"),
        config=config,
        directory=directory,
        group=logger_cfg.get("group"),
        tags=list(logger_cfg.get("tags") or []),
        name=logger_cfg.get("run_name"),
        job_type=logger_cfg.get("job_type"),
    )
