"""Timestamps: one format per column, inferred and verified on every row; numeric epochs
with their unit checked; the supported range enforced (see docs/data.md)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from attnlab.data.errors import DataError, fail

TIME_MIN = np.datetime64("1677-09-22T00:00:00", "s")
TIME_MAX = np.datetime64("2262-04-11T00:00:00", "s")
"""Supported timestamp range (datetime64[ns] holds 1677-09-21 .. 2262-04-11)."""

EPOCH_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
"""Seconds per unit of the epoch units a numeric timestamp column may be counted in."""


def unit_origin_seconds(unit: str, origin: str, *, where: str) -> tuple[float, float]:
    """``(seconds per unit, origin in Unix seconds)`` of numeric timestamps; a
    :class:`DataError` prefixed with ``where`` (the source and file) when pandas does not
    know the unit or the origin."""
    try:
        step = pd.Timedelta(1, unit=unit).total_seconds()
        base = 0.0 if origin == "unix" else (pd.Timestamp(origin) - pd.Timestamp("1970-01-01")).total_seconds()
    except (ValueError, TypeError, OverflowError) as err:
        raise DataError(f"{where}: timestamp_unit={unit!r} / timestamp_origin={origin!r} not understood "
                        f"({err}). Use a unit such as 's', 'ms', 'us', 'D' and an origin 'unix' or a "
                        "date.") from None
    return step, base


def outside_range(seconds: np.ndarray) -> np.ndarray:
    """``bool`` mask of Unix seconds outside :data:`TIME_MIN` .. :data:`TIME_MAX` (NaN too)."""
    lo, hi = float(TIME_MIN.astype(np.int64)), float(TIME_MAX.astype(np.int64))
    return ~((seconds >= lo) & (seconds <= hi))


def other_epoch_unit(magnitude: float, unit: str) -> str | None:
    """The epoch unit, other than ``unit``, that puts numbers of this median
    ``magnitude`` in 1990 .. 2043 (e.g. milliseconds read as seconds), or None."""
    for u, per in EPOCH_UNITS.items():
        if u != unit and 6.3e8 <= magnitude * per <= 2.3e9:
            return u
    return None


def wrong_epoch_unit(where: str, column: str, unit: str, magnitude: float, example: str,
                     other: str) -> DataError:
    """The error for numbers that look like epoch ``other`` read as ``unit`` (``where``:
    source and file; ``column``: the file's column name; ``example``: one row, named)."""
    return DataError(
        f"{where}: column '{column}' (timestamp): with timestamp_unit={unit!r} the median time is "
        f"{pd.Timestamp(magnitude * EPOCH_UNITS[unit], unit='s')}, but the magnitudes (median "
        f"{magnitude:.4g}, e.g. {example}) look like {other} since the Unix epoch: pass "
        f"timestamp_unit={other!r} (or timestamp_origin='1970-01-01' to keep these times as they are).")


def implausible_epoch(magnitude: float, unit: str) -> bool:
    """Numbers of this median ``magnitude`` in epoch ``unit`` put the median time before
    1973 or after 2100."""
    return not 1e8 <= magnitude * EPOCH_UNITS[unit] <= 4.1e9


_OFFSET = r"(?:Z|[+-]\d\d:?\d\d|UTC|GMT)$"


def _candidate_formats(uniq: pd.Index) -> list[str]:
    """``"ISO8601"`` plus the strftime formats guessed from a sample of distinct
    timestamp strings, both month-first and day-first readings (year-day-month orders
    are not considered)."""
    from pandas.tseries.api import guess_datetime_format

    n = len(uniq)
    pos = sorted(set(range(min(n, 50))) | set(np.linspace(0, n - 1, min(n, 50)).astype(int)))
    out: list[str] = ["ISO8601"]  # year-month-day with any precision / offset
    for i in pos:
        for dayfirst in (False, True):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fmt = guess_datetime_format(str(uniq[i]), dayfirst=dayfirst)
            except (ValueError, TypeError):  # pragma: no cover
                fmt = None
            if fmt is None or fmt in out:
                continue
            y, d, m = fmt.find("%Y"), fmt.find("%d"), fmt.find("%m")
            if -1 < y < d < m:  # "%Y-%d-%m": no one writes dates that way
                continue
            out.append(fmt)
    return out


def _parse_with(uniq: pd.Index, fmt: str) -> tuple[pd.DatetimeIndex | None, bool]:
    """Distinct strings parsed with one format (NaT where it does not match), and
    whether the rows carried different UTC offsets (then the result is in UTC)."""
    try:
        parsed = pd.to_datetime(uniq, format=fmt, errors="coerce")
        mixed = False
    except ValueError as err:
        if "Mixed timezones" not in str(err):
            return None, False
        parsed = pd.to_datetime(uniq, format=fmt, errors="coerce", utc=True)
        has_offset = pd.Series(uniq.astype(str)).str.strip().str.contains(_OFFSET).to_numpy()
        parsed = parsed.where(has_offset)  # a row without an offset cannot be placed
        mixed = True
    except (TypeError, OverflowError):  # pragma: no cover
        return None, False
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.tz_convert(None) if mixed else parsed.tz_localize(None)
    return parsed, mixed


def _check_range(parsed: np.ndarray, col, index, *, source, file, row_label, fix) -> None:
    vals = parsed.astype("datetime64[s]") if parsed.dtype != np.dtype("datetime64[ns]") \
        else parsed
    ok = np.isnat(vals) | ((vals >= TIME_MIN) & (vals <= TIME_MAX))
    if not ok.all():
        fail(source, file, "timestamp", ~ok, col, index, row_label,
              f"are outside the supported range {TIME_MIN} .. {TIME_MAX}", fix)


def _parse_strings(col: pd.Series, index, fmt: str | None, *, source, file, row_label,
                   repairs) -> np.ndarray:
    """One format for the whole column, checked on every row (see docs/data.md)."""
    text = col.astype(str).str.strip()
    codes, uniq = pd.factorize(text)
    uniq = pd.Index(uniq)
    opt = "timestamp_format"
    if fmt is not None:
        parsed, mixed = _parse_with(uniq, fmt)
        if parsed is None or parsed.isna().any():
            bad = (np.ones(len(uniq), bool) if parsed is None
                   else np.asarray(parsed.isna()))[codes]
            fail(source, file, "timestamp", bad, col, index, row_label,
                  f"have an unparseable timestamp: they do not match {opt}={fmt!r}",
                  f"Fix these rows, or pass the {opt} (strftime codes) that matches every "
                  "row of the file.")
    else:
        cands = _candidate_formats(uniq)
        results = {f: _parse_with(uniq, f) for f in cands}
        results = {f: r for f, r in results.items() if r[0] is not None}
        full = [f for f, (p, _) in results.items() if not p.isna().any()]
        if not full:
            if results:
                best = max(results, key=lambda f: int(results[f][0].notna().sum()))
                bad = np.asarray(results[best][0].isna())[codes]
                problem = (f"have an unparseable timestamp: they do not match {best!r}, the "
                           "format that parses the most rows (no single format parses every "
                           f"row; tried {cands})")
            else:
                bad = np.ones(len(col), bool)
                problem = "have an unparseable timestamp (no date format recognised)"
            fail(source, file, "timestamp", bad, col, index, row_label, problem,
                  f"The file must use one format: fix these rows, or pass {opt}="
                  "'%Y-%m-%d %H:%M:%S' (strftime codes) matching every row.")
        first = results[full[0]][0]
        rivals = [f for f in full[1:] if not results[f][0].equals(first)]
        if rivals:
            other = results[rivals[0]][0]
            diff = np.asarray(first != other)[codes]
            fmts = [full[0], *rivals]
            fail(source, file, "timestamp", diff, col, index, row_label,
                  f"are ambiguous: formats {fmts} each parse every row but give different "
                  f"dates (e.g. {first[np.flatnonzero(first != other)[0]]} with "
                  f"{fmts[0]!r} vs {other[np.flatnonzero(first != other)[0]]} with "
                  f"{fmts[1]!r})",
                  f"Pass {opt}={fmts[0]!r} or {opt}={fmts[1]!r} (whichever the file uses).")
        fmt = full[0]
        parsed, mixed = results[fmt]
    if mixed and repairs is not None:
        repairs.add("utc_offsets_to_utc", len(col),
                    "timestamps carry different UTC offsets: {count:,} converted to UTC "
                    "(tz-naive UTC times)")
    out = parsed.to_numpy()[codes]
    return out


def as_timestamp(df, *, source, file, row_label, timestamp_format=None,
                  repairs=None) -> np.ndarray:
    col = df["timestamp"]
    fix = ("Every event needs a time: fix or remove these rows, or pass "
           "timestamp_format='%Y-%m-%d %H:%M:%S' (strftime codes) matching the file.")
    missing = col.isna().to_numpy()
    if missing.any():
        fail(source, file, "timestamp", missing, col, df.index, row_label,
              "have a missing timestamp", fix)
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        col = col.dt.tz_localize(None)  # keep local wall-clock time
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        parsed = col.to_numpy()
    elif pd.api.types.is_numeric_dtype(col.dtype):
        fail(source, file, "timestamp", np.ones(len(col), bool), col, df.index, row_label,
              "are numbers, not dates",
              "Numeric times are ambiguous: convert them to datetimes first, or use the "
              "tabular source with timestamp_unit='s' (or 'ms', 'D').")
    else:
        parsed = _parse_strings(col, df.index, timestamp_format, source=source, file=file,
                                row_label=row_label, repairs=repairs)
    _check_range(parsed, df["timestamp"], df.index, source=source, file=file,
                 row_label=row_label,
                 fix="Fix or remove these rows (a typo in the year?); numeric epochs: check "
                     "timestamp_unit.")
    return parsed.astype("datetime64[ns]")
