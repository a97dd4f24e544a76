"""Export a split exactly as attnlab evaluates it: Parquet files and RecBole atomic files.

    from attnlab.data.export import export_split
    manifest = export_split(store, split, "exports/cj-next_item")      # docs/export.md

``out_dir`` after an export (every file written atomically, ``manifest.json`` last):

* ``train_events.parquet``: every event training may read (rule below), one row per event.
* ``valid_queries.parquet`` / ``test_queries.parquet`` (and ``train_queries.parquet`` for
  churn): one row per prediction point, in the split's row order (column ``row``), with
  the original customer id, the cut-off, the visible history and the targets (original
  item ids) or the churn label.
* ``recbole/<name>/``: ``<name>.{train,valid,test}.inter`` and ``recbole.yaml``
  (next_item and next_basket; RecBole has no churn task).
* ``manifest.json``: protocol, data fingerprint, row counts, what was left out of which
  file and why, the leakage checks, and what each file holds.

Training events. A :class:`~attnlab.data.splits.Split` lets training read
``[offsets[c], train_end[c])``, and a churn training row ``m`` ``[offsets[c], end[m])``.
``train_events`` is their union per customer (:func:`training_end`): for next_item every
event before the customer's validation basket, for next_basket every event before the
validation cut-off, for churn every event before the validation cut-off (temporal) or
before the cut-off for training customers (holdout).

Leakage. :func:`check_no_leakage` raises :class:`LeakageError` before anything is written
when, for a validation or test query of customer ``c`` with cut-off ``t``, (1) a target's
basket (the basket of the target item's first purchase at or after the query's history
end) has an event among ``c``'s training events (the target or a same-basket item), or
(2) ``c`` has a training event at or after ``t`` (this also covers churn label windows).
A next_basket test query does see the validation basket (it lies before the test
cut-off); that is the query's history, not training data, and not in ``train_events``.
"""

from attnlab.data.export.core import EXPORT_VERSION, ExportFormat, check_formats, describe, export_split
from attnlab.data.export.leakage import LeakageError, check_no_leakage, training_end
from attnlab.data.export.recbole import RECBOLE_HEADER

__all__ = [
    "EXPORT_VERSION", "RECBOLE_HEADER", "ExportFormat", "LeakageError", "check_formats", "check_no_leakage",
    "describe", "export_split", "training_end",
]
