"""Read an offline W&B run file (``run-<id>.wandb``) back into protobuf records, so tests
can assert what was logged without a network or a W&B server.

The file is W&B's LevelDB-style log: a 7-byte header (``:W&B``, magic ``0xBEE1``,
version), then 32 KiB blocks of chunks, each with a 7-byte header (CRC-32, little-endian
length, type: 1 full, 2 first, 3 middle, 4 last). Each reassembled payload is a
``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
HEADER = 7


def read_records(path: str | Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, records, pending = HEADER, [], b""
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:  # block trailer padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if pos + HEADER + length > len(data):
            break  # the writer is mid-chunk (a file read while W&B still writes it): not a record yet
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        if kind in (1, 4):
            payload, pending = pending + chunk, b""
            rec = pb.Record()
            rec.ParseFromString(payload)
            records.append(rec)
        elif kind in (2, 3):
            pending += chunk
    return records


def complete_records(path: str | Path, timeout_s: float = 60.0) -> list[pb.Record]:
    """The records once the run's ``exit`` record is on disk. An offline ``run.finish()``
    can return before W&B's writer process has flushed the file (seen: a 7-byte file,
    complete a quarter second later), so a reader polls for the record finish() writes."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        records = read_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} has no exit record after {timeout_s:.0f} s "
                               f"({len(records)} records): the W&B run was not finished")
        time.sleep(0.2)


def logged(path: str | Path) -> dict:
    """``{"run": RunRecord, "config": {key: json}, "history": [{key: json}], "summary": {key: json},
    "metrics": {name or glob: MetricRecord}}`` (``metrics``: the ``define_metric`` rules)."""
    import json

    out = {"run": None, "config": {}, "history": [], "summary": {}, "metrics": {}}
    for r in complete_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "metric":
            out["metrics"][r.metric.name or r.metric.glob_name] = r.metric
        if kind == "run":
            out["run"] = r.run
            out["config"].update({u.key: json.loads(u.value_json) for u in r.run.config.update})
        elif kind == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            out["summary"].update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in r.summary.update})
    return out
