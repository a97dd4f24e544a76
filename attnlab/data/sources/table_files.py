"""Reading a CSV / Parquet file for the tabular source, refusing what would be mis-read:
a Parquet file named .csv, a directory, UTF-16/32 without a byte-order mark, a UTF-8 file
read with a single-byte encoding, a header that splits on another separator; and the
column mapping every table source (``tabular``, ``parquet_stream``) checks the same way."""

from __future__ import annotations

import codecs
from pathlib import Path

import pandas as pd

from attnlab.data.errors import DataError

NAME = "tabular"

MAPPING_KEYS = ("customer_id", "item_id", "timestamp", "basket_id", "quantity", "value",
                "unit_price", "event_type")
"""Canonical names a table source's ``columns`` mapping may use."""


def column_mapping(columns, *, where: str) -> tuple[dict[str, str], set[str]]:
    """``(mapped, unmapped)`` of a ``columns`` option: ``mapped`` holds the keys mapped to a
    file column; ``unmapped`` the keys set to ``false`` (never map them, not even by name);
    keys set to null are in neither (mapped by name when the file has such a column).
    Unknown keys, missing required keys, or both ``value`` and ``unit_price``: a
    :class:`DataError` prefixed with ``where``."""
    columns = dict(columns or {})
    unmapped = {k for k, v in columns.items() if v is False}
    mapped = {k: str(v) for k, v in columns.items() if v is not None and v is not False}
    unknown = [k for k in mapped if k not in MAPPING_KEYS]
    lacking = [k for k in ("customer_id", "item_id", "timestamp") if k not in mapped]
    if unknown or lacking:
        raise DataError(f"{where}: bad column mapping: unknown keys {unknown}, missing required keys "
                        f"{lacking}. Allowed keys: {list(MAPPING_KEYS)}.")
    if "value" in mapped and "unit_price" in mapped:
        raise DataError(f"{where}: map either 'value' or 'unit_price', not both.")
    return mapped, unmapped


REPAIR_CHOICES = {"on_missing_ids": ("error", "drop"), "duplicates": ("drop", "keep"),
                  "negative_quantity": ("return", "drop", "error")}
"""The repair options every table source takes, and their allowed values."""


def check_repair_options(source: str, **options: str) -> None:
    """A :class:`DataError` naming the option when a repair option (:data:`REPAIR_CHOICES`)
    has a value outside its choices."""
    for name, value in options.items():
        if value not in REPAIR_CHOICES[name]:
            raise DataError(f"[{source}] option {name}={value!r} is not one of {list(REPAIR_CHOICES[name])}.")


_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
         (b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
_SEPARATORS = (",", ";", "\t", "|")


def _sniff_encoding(p: Path, head: bytes, encoding: str | None) -> str:
    """The text encoding to read ``p`` with: ``encoding`` when given, else from a
    byte-order mark (UTF-8/16/32), else UTF-8. Binary files are refused here."""
    if head.startswith(b"PAR1"):
        raise DataError(f"[{NAME}] {p}: this is a Parquet file (it starts with 'PAR1'), not "
                        "text. Pass format='parquet' (or rename it to .parquet).")
    if encoding is not None:
        _refuse_utf8_as_single_byte(p, encoding)
        return encoding
    for bom, enc in _BOMS:
        if head.startswith(bom):
            return enc
    if b"\x00" in head:
        raise DataError(f"[{NAME}] {p}: the file contains NUL bytes: UTF-16/32 text without a "
                        "byte-order mark, or not text at all. Pass encoding='utf-16-le' (or "
                        "the file's encoding), or format='parquet'.")
    return "utf-8"


def _refuse_utf8_as_single_byte(p: Path, encoding: str) -> None:
    """Refuses a single-byte ``encoding`` (latin-1, cp1252, ISO-8859-x) for a file that
    is valid UTF-8 with multi-byte characters: every such byte sequence would silently
    become mojibake ('café' -> 'cafÃ©'), splitting ids and feature values."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        return  # the reader names the unknown codec
    if not name.startswith(("iso8859", "latin", "cp125", "cp437", "cp850", "mac-")):
        return
    data = p.read_bytes()
    if data.isascii():
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # not UTF-8: a single-byte encoding is plausible
    line, word = next((n, w) for n, row in enumerate(text.splitlines(), 1)
                      for w in row.split() if not w.isascii())
    raise DataError(f"[{NAME}] {p}: encoding={encoding!r} was given, but the file is valid "
                    f"UTF-8 with multi-byte characters (line {line}: {word!r}); read as "
                    f"{encoding!r} it would become {word.encode().decode(encoding, 'replace')!r}. "
                    "Pass encoding='utf-8' (or leave encoding unset).")


def _sep_hint(p: Path, header: list[str], sep: str, wanted: list[str]) -> str:
    """A fix when the header did not split on ``sep`` but does on another separator."""
    if len(header) != 1:
        return ""
    for cand in _SEPARATORS:
        if cand != sep and cand in header[0]:
            parts = [h.strip() for h in header[0].split(cand)]
            if all(w in parts for w in wanted):
                return (f" The header has no {sep!r} but splits on {cand!r}: the file is "
                        f"{cand!r}-separated, pass sep={cand!r}.")
    return ""


def read_table(p: Path, fmt: str, usecols: list[str], sep: str,
          encoding: str | None) -> tuple[pd.DataFrame, str]:
    if not p.exists():
        raise DataError(f"[{NAME}] {p}: file not found. Check options.path.")
    if fmt == "parquet":
        try:
            df = pd.read_parquet(p)
        except Exception as err:  # noqa: BLE001 -- pyarrow raises many types
            raise DataError(f"[{NAME}] {p}: not a readable parquet file ({err}). "
                            "Pass format='csv' if it is text.") from None
        label = "row"
    else:
        if p.is_dir():
            raise DataError(f"[{NAME}] {p}: is a directory, not a CSV file. Point options.path "
                            "at the file (or pass format='parquet' for a parquet dataset "
                            "directory).")
        try:
            with open(p, "rb") as fh:
                head = fh.read(4096)
        except OSError as err:
            raise DataError(f"[{NAME}] {p}: cannot read the file ({err}).") from None
        enc = _sniff_encoding(p, head, encoding)
        try:
            df = pd.read_csv(p, sep=sep, dtype=str, keep_default_na=True,
                             skipinitialspace=True, encoding=enc)
        except pd.errors.EmptyDataError:
            raise DataError(f"[{NAME}] {p}: the file is empty; expected a header line "
                            "and one line per event.") from None
        except pd.errors.ParserError as err:
            raise DataError(f"[{NAME}] {p}: malformed CSV ({err}). Fix that line (quote "
                            f"fields containing the separator {sep!r}) or pass sep=...") from None
        except (UnicodeError, LookupError) as err:
            raise DataError(f"[{NAME}] {p}: cannot decode the file as {enc!r} ({err}). Pass "
                            "encoding='latin-1' (or the file's encoding).") from None
        except (ValueError, OSError) as err:
            raise DataError(f"[{NAME}] {p}: cannot read as CSV with sep={sep!r}, "
                            f"encoding={enc!r} ({err}). Check the sep/encoding/format "
                            "options.") from None
        df.index = df.index + 2  # file line numbers: line 1 is the header
        label = "line"
    missing = [c for c in usecols if c not in df.columns]
    if missing:
        hint = _sep_hint(p, [str(c) for c in df.columns], sep, missing) if fmt == "csv" else ""
        raise DataError(f"[{NAME}] {p}: column(s) {missing} named in the column mapping are "
                        f"not in the file; present: {list(df.columns)}. "
                        + (hint.strip() if hint else "Fix options.columns."))
    return df, label
