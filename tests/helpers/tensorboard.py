"""Reading back the tensorboard event files the suite writes (TFRecord framing of ``Event`` protos)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from tensorboardX.proto.event_pb2 import Event


def read_events(log_dir: Path) -> list[Event]:
    """Every event record of the tensorboard files in ``log_dir`` (TFRecord framing: length, crc, data, crc)."""
    events = []
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            start = offset + 12  # 8-byte length, 4-byte crc of the length
            event = Event()
            event.ParseFromString(data[start : start + length])
            events.append(event)
            offset = start + length + 4  # 4-byte crc of the data
    return events


def summaries(log_dir: Path) -> dict[str, dict[int, Any]]:
    """tag → step → ``Summary.Value`` proto."""
    found: dict[str, dict[int, Any]] = {}
    for event in read_events(log_dir):
        for value in event.summary.value:
            found.setdefault(value.tag, {})[event.step] = value
    return found
