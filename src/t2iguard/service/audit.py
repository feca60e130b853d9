"""Audit sinks: where every decision is recorded, durably, in the order it was taken.

:class:`JsonlAuditSink` is the dependency-free default (one JSON object per line, flushed and
fsynced before ``record`` returns). The gateway adds database-backed sinks.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

from t2iguard.core.decision import Decision


@runtime_checkable
class AuditSink(Protocol):
    def record(self, decision: Decision) -> None: ...


class JsonlAuditSink:
    """Append-only JSON-lines audit log. ``fsync=True`` makes a record durable on return."""

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._lock = threading.Lock()

    def record(self, decision: Decision) -> None:
        line = decision.model_dump_json() + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())


class MemoryAuditSink:
    """Keeps decisions in a list (for embedding and tests)."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []
        self._lock = threading.Lock()

    def record(self, decision: Decision) -> None:
        with self._lock:
            self.decisions.append(decision)
