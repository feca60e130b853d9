"""Prometheus metrics and structured JSON logs of the gateway (one registry per app, no globals)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from t2iguard.core.decision import Decision

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "t2iguard_requests_total",
            "HTTP requests by endpoint and status",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "t2iguard_request_duration_seconds",
            "request latency",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "t2iguard_decisions_total",
            "safety decisions by endpoint, action, deciding stage and category",
            ["endpoint", "action", "stage", "category"],
            registry=r,
        )
        self.stage_latency = Histogram(
            "t2iguard_stage_duration_seconds", "stage latency", ["stage", "phase"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.in_flight = Gauge("t2iguard_in_flight_requests", "requests being served", registry=r)
        self.rate_limited = Counter("t2iguard_rate_limited_total", "requests refused with 429", ["scope"], registry=r)
        self.audit_failures = Counter(
            "t2iguard_audit_failures_total", "audit records that could not be written (responses withheld)", registry=r
        )
        self.suspensions = Counter("t2iguard_suspensions_total", "keys suspended by penalties", registry=r)

    def observe_decision(self, endpoint: str, decision: Decision) -> None:
        if decision.decided_by:
            seen = set()
            for e in decision.decided_by:
                label = (e.stage, str(e.category) if e.category else "")
                if label in seen:
                    continue
                seen.add(label)
                self.decisions.labels(endpoint, str(decision.action), label[0], label[1]).inc()
        else:
            self.decisions.labels(endpoint, str(decision.action), "", "").inc()
        for r in decision.stages:
            self.stage_latency.labels(r.stage, str(r.phase)).observe(max(0.0, r.latency_ms) / 1000.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg and any ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str = "info", json_logs: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_logs else logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for name in ("t2iguard", "uvicorn", "uvicorn.error"):
        log = logging.getLogger(name)
        log.handlers = [handler]
        log.setLevel(level.upper())
        log.propagate = False
    logging.getLogger("uvicorn.access").disabled = True
