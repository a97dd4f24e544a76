"""Property-based fuzz of the tabular source (issue 12, "Nothing silent").

Random small CSV / parquet files: encodings, separators, id types and magnitudes,
timestamp formats and ranges, surrounding whitespace, missing cells, duplicates. The
invariant: either a :class:`DataError` whose message names the file and a column (or,
for file-level problems, the option to set), or events whose count is the rows read
minus the counted dropping repairs and where every (customer, item, time) of the file
comes back exactly (ids compared as text, factorised ids through their kept key).
"""

from __future__ import annotations

import collections
import datetime as dt
import re

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnlab.data import DataError
from attnlab.data.sources import get_source

COLS = {"customer_id": "cust", "item_id": "prod", "timestamp": "when"}
ID_KINDS = ("small", "negative", "near_2_53", "near_int64_max", "beyond_int64", "text",
            "leading_zero", "decimal_zero")
INT_KINDS = ("small", "negative", "near_2_53", "near_int64_max")
TIME_KINDS = ("iso_date", "iso_time", "dmy", "mdy", "mon", "mixed", "offsets", "epoch_s",
              "epoch_ms", "out_of_range", "native")
ERROR_KINDS = (("wrong sep", "-separated, pass sep="), ("undecodable", "encoding="),
               ("missing id", "have no id"), ("all rows dropped", "no events:"),
               ("fewer than 2 events", "at least 2 events"),
               ("ambiguous dates", "are ambiguous"), ("epoch unit", "look like"),
               ("out-of-range time", "outside the supported range"),
               ("unparseable time", "unparseable timestamp"))
EPOCH = dt.datetime(1970, 1, 1)
T0 = int((dt.datetime(2000, 1, 1) - EPOCH).total_seconds())
T1 = int((dt.datetime(2030, 1, 1) - EPOCH).total_seconds())


def _id(kind: str, k: int) -> tuple[str, str]:
    """(text written to the file, the key it must come back as)."""
    text = {"small": str(k), "negative": str(-7 * (k + 1)), "near_2_53": str(2**53 + k),
            "near_int64_max": str(2**63 - 1 - k), "beyond_int64": str(10**21 + k),
            "text": ("cé" if k < 2 else f"c{k}"), "leading_zero": f"{k:03d}",
            "decimal_zero": f"{k}.0"}[kind]
    return text, (str(k) if kind == "decimal_zero" else text)


@st.composite
def cases(draw):
    n = draw(st.integers(1, 9))
    ck = draw(st.sampled_from(ID_KINDS))
    ik = draw(st.sampled_from([k for k in ID_KINDS if k != "negative"]))  # -1 is NO_ITEM
    tk = draw(st.sampled_from(TIME_KINDS))
    container = draw(st.sampled_from(["csv", "csv", "parquet"]))
    if tk == "native" and container == "csv":
        tk = "iso_time"
    rows = []
    for _ in range(n):
        c, i = draw(st.integers(0, 3)), draw(st.integers(0, 3))
        secs = draw(st.integers(T0, T1))
        if tk in ("iso_date", "dmy", "mdy", "mon", "mixed"):
            secs -= secs % 86400
        rows.append({"c": c, "i": i, "secs": secs, "ms": draw(st.integers(0, 999)),
                     "off": draw(st.sampled_from([0, 60, -330])),
                     "fmt": draw(st.sampled_from(["iso_date", "dmy", "mon"])),
                     "pad": draw(st.sampled_from(["", " ", "  "])),
                     "missing": draw(st.integers(0, 9)) == 0})
    dups = draw(st.lists(st.integers(0, n - 1), max_size=2))
    rows += [dict(rows[d], pad=draw(st.sampled_from(["", " "]))) for d in dups]
    return dict(rows=rows, ck=ck, ik=ik, tk=tk, container=container,
                sep=draw(st.sampled_from([",", ";", "\t", "|"])),
                pass_sep=draw(st.integers(0, 3)) > 0,
                encoding=draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"])),
                pass_encoding=draw(st.booleans()), unit=draw(st.sampled_from(["s", "ms"])),
                bad_row=draw(st.sampled_from(["9999-12-31", "0201-03-05"])),
                missing_ids=draw(st.sampled_from(["drop", "error"])),
                int_columns=draw(st.booleans()))


def _render(case) -> tuple[pd.DataFrame, list, dict, bool]:
    """File frame (text cells), expected (cust key, item key, time) per kept row, load
    options, and whether the file must be refused."""
    tk, rows = case["tk"], case["rows"]
    offsets = {r["off"] for r in rows}
    cells, expect, opts, must_fail = [], [], {}, False
    for r in rows:
        ct, ckey = _id(case["ck"], r["c"])
        it, ikey = _id(case["ik"], r["i"])
        t = EPOCH + dt.timedelta(seconds=r["secs"])
        true = pd.Timestamp(t)
        if tk == "iso_date":
            when = t.strftime("%Y-%m-%d")
        elif tk in ("iso_time", "native"):
            when = t.strftime("%Y-%m-%d %H:%M:%S")
        elif tk == "dmy":
            when = t.strftime("%d/%m/%Y")
        elif tk == "mdy":
            when = t.strftime("%m/%d/%Y")
        elif tk == "mon":
            when = t.strftime("%b %d %Y")
        elif tk == "mixed":
            when = t.strftime({"iso_date": "%Y-%m-%d", "dmy": "%d/%m/%Y",
                               "mon": "%b %d %Y"}[r["fmt"]])
        elif tk == "offsets":  # the written wall-clock time is t; its UTC is t - offset
            off = r["off"]
            sign, h, m = ("+" if off >= 0 else "-"), abs(off) // 60, abs(off) % 60
            when = t.strftime("%Y-%m-%dT%H:%M:%S") + ("Z" if off == 0 else f"{sign}{h:02d}{m:02d}")
            if len(offsets) > 1:
                true = pd.Timestamp(t - dt.timedelta(minutes=off))
        elif tk == "epoch_s":
            when = r["secs"]
            opts["timestamp_unit"] = case["unit"]
            must_fail |= case["unit"] == "ms"  # 2000..2030 read as ms: January 1970
        elif tk == "epoch_ms":
            when = r["secs"] * 1000 + r["ms"]
            true = pd.Timestamp(t) + pd.Timedelta(milliseconds=r["ms"])
            opts["timestamp_unit"] = case["unit"]
            must_fail |= case["unit"] == "s"
        else:  # out_of_range
            when = t.strftime("%Y-%m-%d")
        pad = r["pad"]
        cells.append({"cust": "" if r["missing"] else pad + ct + pad, "prod": pad + it,
                      "when": when})
        if not r["missing"]:
            expect.append((ckey, ikey, true))
    kept = [j for j, r in enumerate(rows) if not r["missing"]]
    if tk == "out_of_range" and kept:  # one kept row's year is wrong
        cells[kept[-1]]["when"] = case["bad_row"]
        expect = [e for e in expect if e != expect[-1]]
        must_fail = True
    frame = pd.DataFrame(cells)
    if any(r["missing"] for r in rows):
        must_fail |= case["missing_ids"] == "error"
        opts["on_missing_ids"] = case["missing_ids"]
    return frame, expect, opts, must_fail


def _write(case, frame, path) -> dict:
    opts = {}
    if case["container"] == "parquet":
        out = frame.copy()
        out["cust"] = out["cust"].replace("", None)
        if case["int_columns"]:  # exact int64 columns where the ids allow it
            for col, kind in (("cust", case["ck"]), ("prod", case["ik"])):
                if kind not in INT_KINDS:
                    continue
                try:
                    out[col] = out[col].astype("int64")
                except (ValueError, TypeError, OverflowError):
                    pass
        if case["tk"] == "native":
            out["when"] = pd.to_datetime(out["when"]).astype("datetime64[us]")
        elif case["tk"] not in ("epoch_s", "epoch_ms"):
            out["when"] = out["when"].astype(str)
        out.to_parquet(path)
        return opts
    sep = case["sep"]
    text = sep.join(frame.columns) + "\n" + "".join(
        sep.join(str(v) for v in row) + "\n" for row in frame.itertuples(index=False))
    path.write_bytes(text.encode(case["encoding"]))
    if case["pass_sep"] or sep == ",":
        opts["sep"] = sep
    if case["pass_encoding"]:
        opts["encoding"] = case["encoding"]
    return opts


def _keys(data, events, col, key_name, frame_name):
    feats = getattr(data, frame_name)
    if key_name in feats.columns:
        return [str(feats.loc[v, key_name]) for v in events[col]]
    return [str(v) for v in events[col]]


def test_fuzz_tabular_files_error_clearly_or_round_trip_exactly(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    stats = collections.Counter()

    @settings(max_examples=400, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=cases())
    def run(case):
        stats["tried"] += 1
        stats[f"time: {case['tk']}"] += 1
        stats[f"file: {case['container']}"] += 1
        frame, expect, opts, must_fail = _render(case)
        suffix = "parquet" if case["container"] == "parquet" else "csv"
        path = root / f"case{stats['tried']}.{suffix}"
        opts.update(_write(case, frame, path))
        if case["container"] == "csv" and case["sep"] != "," and "sep" not in opts:
            must_fail = True  # the header does not split on ','
        try:
            data = get_source("tabular").load(path=str(path), columns=COLS, **opts)
        except DataError as err:
            msg = str(err)
            stats["errors"] += 1
            kind = next((k for k, phrase in ERROR_KINDS if phrase in msg), "other")
            stats["error: " + kind] += 1
            names_column = bool(re.search(r"column(\(s\))? '?\[?'?(cust|prod|when|customer_id|"
                                          r"item_id|timestamp)", msg))
            names_option = bool(re.search(r"\b(sep=|encoding=|format=|on_missing_ids)", msg))
            assert path.name in msg, msg
            assert names_column or names_option, msg
            return
        stats["stores"] += 1
        rep = data.repairs
        dropped = sum(r.count for r in rep if r.message.startswith("dropped"))
        for r in rep:
            if r.count and r.code not in ("raw_rows",) and not r.code.startswith("default_"):
                stats["repair: " + r.code] += 1
        ev = data.events
        got = list(zip(_keys(data, ev, "customer_id", "customer_key", "customer_features"),
                       _keys(data, ev, "item_id", "item_key", "item_features"),
                       ev["timestamp"]))
        silent = (must_fail or rep.count("raw_rows") != len(frame)
                  or len(ev) != len(frame) - dropped
                  or collections.Counter(got) != collections.Counter(set(expect))
                  or ev["customer_id"].nunique() != len({e[0] for e in expect}))
        if silent:
            stats["silent"] += 1
        assert not silent, (case, got, expect)

    run()
    print("\nfuzz stats:", dict(sorted(stats.items())))
    assert stats["silent"] == 0
    assert stats["tried"] >= 100 and stats["errors"] >= 20 and stats["stores"] >= 20
