"""The gateway's persistent state behind one small API: keys, audit, penalties, review, incidents.

All methods are synchronous (the app calls them from worker threads). A request's audit record,
its outputs, a held item and the penalty it earns are written in **one** transaction
(:meth:`Store.commit_request`), committed before the response is sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from t2iguard.core.errors import ConfigurationError
from t2iguard.core.policy import PenaltyPolicy
from t2iguard.core.types import Category
from t2iguard.service.db import (
    MIGRATIONS,
    ApiKey,
    AuditRecord,
    Incident,
    Output,
    ReviewAction,
    ReviewItem,
    Strike,
    make_engines,
    utcnow,
)

ROLES = ("user", "reviewer", "admin")
ROLE_RANK = {r: i for i, r in enumerate(ROLES)}
KEY_PREFIX = "t2g"
REVIEW_ACTIONS = ("approve", "reject", "escalate")
ESCALATION_FORMAT = "t2iguard-escalation/1"
STRIKE_TOLERANCE = 0.05


def hash_secret(secret: str) -> str:
    """API keys are 256-bit random tokens, so a plain SHA-256 is the right hash (as for GitHub's
    tokens): no dictionary to slow down, and constant-time comparison of the digest."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    role: str
    policy: str | None
    revoked: bool
    suspended_until: datetime | None
    suspended_indefinitely: bool
    suspension_reason: str | None
    created_at: datetime

    def suspended(self, now: datetime | None = None) -> bool:
        if self.suspended_indefinitely:
            return True
        return self.suspended_until is not None and self.suspended_until > (now or utcnow())

    def has_role(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "policy": self.policy,
            "revoked": self.revoked,
            "suspended": self.suspended(),
            "suspended_until": self.suspended_until.isoformat() if self.suspended_until else None,
            "suspended_indefinitely": self.suspended_indefinitely,
            "suspension_reason": self.suspension_reason,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def of(cls, row: ApiKey) -> KeyInfo:
        return cls(
            id=row.id,
            name=row.name,
            role=row.role,
            policy=row.policy,
            revoked=row.revoked,
            suspended_until=row.suspended_until,
            suspended_indefinitely=row.suspended_indefinitely,
            suspension_reason=row.suspension_reason,
            created_at=row.created_at,
        )


@dataclass
class OutputEntry:
    id: str
    idx: int
    sha256: str
    released: bool
    path: str | None
    expires_at: datetime | None


@dataclass
class PenaltyOutcome:
    total: float
    added: dict[str, float]
    suspended: bool = False
    suspended_until: datetime | None = None
    indefinitely: bool = False
    incident_id: str | None = None


@dataclass
class RequestCommit:
    """Everything one request writes."""

    audit: dict[str, Any]
    outputs: list[OutputEntry] = field(default_factory=list)
    hold_reason: str | None = None
    penalize: list[Category] = field(default_factory=list)
    penalties: PenaltyPolicy | None = None


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.reader, self.writer = make_engines(url)

    @property
    def dialect(self) -> str:
        return self.writer.dialect.name

    # ---- schema ------------------------------------------------------------------------------
    def alembic_config(self) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` with the shipped Alembic migrations."""
        cfg = self.alembic_config()
        with self.writer.connect() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()

    def downgrade(self, revision: str) -> None:
        """Take the schema back to ``revision`` (``"base"``: drop every table)."""
        cfg = self.alembic_config()
        with self.writer.connect() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)
            conn.commit()

    def current_revision(self) -> str | None:
        with self.reader.connect() as conn:
            try:
                row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
            except Exception:  # noqa: BLE001 - no table yet
                return None
        return str(row[0]) if row else None

    def ping(self) -> None:
        with self.reader.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def close(self) -> None:
        self.reader.dispose()
        if self.writer is not self.reader:
            self.writer.dispose()

    def _write(self) -> Session:
        return Session(self.writer, expire_on_commit=False)

    def _read(self) -> Session:
        return Session(self.reader, expire_on_commit=False)

    # ---- keys --------------------------------------------------------------------------------
    def create_key(self, name: str = "", role: str = "user", policy: str | None = None) -> tuple[KeyInfo, str]:
        """Create a key; returns it and its secret (shown once, stored only as a hash)."""
        if role not in ROLES:
            raise ConfigurationError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        key_id = f"key_{secrets.token_hex(6)}"
        secret = f"{KEY_PREFIX}_{key_id[4:]}_{secrets.token_urlsafe(32)}"
        row = ApiKey(
            id=key_id,
            secret_sha256=hash_secret(secret),
            name=name[:200],
            role=role,
            policy=policy,
            created_at=utcnow(),
            revoked=False,
            suspended_indefinitely=False,
        )
        with self._write() as s, s.begin():
            s.add(row)
        return KeyInfo.of(row), secret

    def authenticate(self, secret: str) -> KeyInfo | None:
        """The key a secret belongs to (revoked keys included: the caller decides), or None."""
        parts = secret.split("_", 2)
        if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 12:
            return None
        with self._read() as s:
            row = s.get(ApiKey, f"key_{parts[1]}")
            if row is None or not hmac.compare_digest(row.secret_sha256, hash_secret(secret)):
                return None
            return KeyInfo.of(row)

    def get_key(self, key_id: str) -> KeyInfo | None:
        with self._read() as s:
            row = s.get(ApiKey, key_id)
            return KeyInfo.of(row) if row else None

    def list_keys(self) -> list[KeyInfo]:
        with self._read() as s:
            return [KeyInfo.of(r) for r in s.scalars(select(ApiKey).order_by(ApiKey.created_at))]

    def update_key(
        self,
        key_id: str,
        *,
        actor: str,
        role: str | None = None,
        policy: str | None = None,
        clear_policy: bool = False,
        revoke: bool | None = None,
        suspend_hours: float | None = None,
        suspend_indefinitely: bool = False,
        lift: bool = False,
        note: str = "",
    ) -> KeyInfo | None:
        """Change a key; every change is recorded as a review action by ``actor``."""
        with self._write() as s, s.begin():
            row = s.get(ApiKey, key_id)
            if row is None:
                return None
            done: list[str] = []
            if role is not None:
                if role not in ROLES:
                    raise ConfigurationError(f"unknown role {role!r}")
                row.role = role
                done.append(f"role={role}")
            if policy is not None or clear_policy:
                row.policy = None if clear_policy else policy
                done.append(f"policy={row.policy}")
            if revoke is not None:
                row.revoked = revoke
                done.append("revoke" if revoke else "unrevoke")
            if suspend_indefinitely or suspend_hours is not None:
                if suspend_indefinitely:
                    row.suspended_indefinitely = True
                else:
                    row.suspended_until = utcnow() + timedelta(hours=suspend_hours or 0)
                row.suspension_reason = note or f"suspended by {actor}"
                done.append("suspend")
            if lift:
                row.suspended_indefinitely = False
                row.suspended_until = None
                row.suspension_reason = None
                for strike in s.scalars(select(Strike).where(Strike.key_id == key_id)):
                    strike.points = 0.0
                    strike.updated_at = utcnow()
                done.append("lift")
            for what in done:
                s.add(
                    ReviewAction(
                        item_id=None,
                        subject_key_id=key_id,
                        reviewer_key_id=actor,
                        action=what.split("=")[0][:20],
                        note=(note + " " + what).strip(),
                        created_at=utcnow(),
                    )
                )
            return KeyInfo.of(row)

    # ---- one request -------------------------------------------------------------------------
    def commit_request(self, commit: RequestCommit) -> PenaltyOutcome | None:
        """Write a request's audit record, outputs, held item and penalty in one transaction."""
        now = utcnow()
        audit = commit.audit
        outcome: PenaltyOutcome | None = None
        with self._write() as s, s.begin():
            key_id = audit.get("key_id")
            if commit.penalize and commit.penalties is not None and commit.penalties.enabled and key_id:
                outcome = self._penalize(s, key_id, commit.penalize, commit.penalties, now, audit)
                if outcome.suspended:
                    audit.setdefault("details", {})["penalty"] = {
                        "total": outcome.total,
                        "suspended_until": outcome.suspended_until.isoformat() if outcome.suspended_until else None,
                        "indefinitely": outcome.indefinitely,
                        "incident": outcome.incident_id,
                    }
            s.add(AuditRecord(created_at=now, **audit))
            for o in commit.outputs:
                s.add(
                    Output(
                        id=o.id,
                        request_id=audit["request_id"],
                        key_id=key_id,
                        idx=o.idx,
                        sha256=o.sha256,
                        released=o.released,
                        path=o.path,
                        created_at=now,
                        expires_at=o.expires_at,
                    )
                )
            if commit.hold_reason is not None:
                held = [o for o in commit.outputs if not o.released]
                s.add(
                    ReviewItem(
                        id=new_id("rev"),
                        kind="held",
                        status="open",
                        request_id=audit["request_id"],
                        output_id=held[0].id if held else None,
                        key_id=key_id,
                        reason=commit.hold_reason,
                        created_at=now,
                    )
                )
        return outcome

    def _penalize(
        self,
        s: Session,
        key_id: str,
        categories: Sequence[Category],
        pp: PenaltyPolicy,
        now: datetime,
        audit: dict[str, Any],
    ) -> PenaltyOutcome:
        key = s.get(ApiKey, key_id, with_for_update=True)
        if key is None:
            return PenaltyOutcome(total=0.0, added={})
        rows = {r.category: r for r in s.scalars(select(Strike).where(Strike.key_id == key_id))}
        added: dict[str, float] = {}
        for cat in dict.fromkeys(categories):
            row = rows.get(str(cat))
            if row is None:
                row = Strike(key_id=key_id, category=str(cat), points=0.0, updated_at=now)
                s.add(row)
                rows[str(cat)] = row
            added[str(cat)] = pp.strikes_for(cat)
        total = 0.0
        for cat_name, row in rows.items():
            hours = max(0.0, (now - row.updated_at).total_seconds() / 3600.0)
            row.points = row.points * 0.5 ** (hours / pp.half_life_hours) + added.get(cat_name, 0.0)
            row.updated_at = now
            total += row.points
        outcome = PenaltyOutcome(total=total, added=added)
        immediate = [c for c in categories if pp.is_immediate(c)]
        reason = None
        if immediate:
            outcome.indefinitely = True
            reason = f"blocked for {', '.join(sorted(map(str, immediate)))}: suspended until a reviewer lifts it"
        else:
            # tolerance: N blocks within a short time reach an N-strike rule despite the decay
            reached = [r for r in pp.suspend if total >= r.strikes - STRIKE_TOLERANCE]
            if reached:
                rule = max(reached, key=lambda r: r.strikes)
                reason = f"{total:.1f} strikes >= {rule.strikes:g}"
                if rule.hours is None:
                    outcome.indefinitely = True
                    reason += ": suspended until a reviewer lifts it"
                else:
                    outcome.suspended_until = now + timedelta(hours=rule.hours)
                    reason += f": suspended for {rule.hours:g} h"
        if outcome.indefinitely:
            key.suspended_indefinitely = True
            key.suspension_reason = reason
            outcome.suspended = True
        elif outcome.suspended_until is not None:
            if key.suspended_until is None or key.suspended_until < outcome.suspended_until:
                key.suspended_until = outcome.suspended_until
            key.suspension_reason = reason
            outcome.suspended = True
        escalated = [str(c) for c in categories if pp.is_escalated(c)]
        if escalated:
            outcome.incident_id = self._incident(s, audit, escalated, trigger="automatic", now=now)
        return outcome

    def _incident(
        self, s: Session, audit: dict[str, Any], categories: list[str], *, trigger: str, now: datetime
    ) -> str:
        incident_id = new_id("inc")
        s.add(
            Incident(
                id=incident_id,
                created_at=now,
                request_id=audit.get("request_id"),
                key_id=audit.get("key_id"),
                ip=audit.get("ip"),
                trigger=trigger,
                categories=sorted(set(categories)),
                status="open",
            )
        )
        if trigger == "automatic":
            s.add(
                ReviewItem(
                    id=new_id("rev"),
                    kind="escalation",
                    status="open",
                    request_id=audit.get("request_id"),
                    key_id=audit.get("key_id"),
                    reason=f"automatic escalation ({', '.join(sorted(set(categories)))}); incident {incident_id}",
                    created_at=now,
                )
            )
        return incident_id

    def strikes(self, key_id: str) -> dict[str, float]:
        with self._read() as s:
            return {r.category: r.points for r in s.scalars(select(Strike).where(Strike.key_id == key_id))}

    # ---- outputs and reports -----------------------------------------------------------------
    def get_output(self, output_id: str) -> Output | None:
        with self._read() as s:
            return s.get(Output, output_id)

    def create_report(self, output_id: str, reporter: KeyInfo, reason: str) -> str | None:
        """File a report on an output the reporter's key produced (others' outputs: None)."""
        with self._write() as s, s.begin():
            out = s.get(Output, output_id)
            if out is None or (out.key_id != reporter.id and not reporter.has_role("reviewer")):
                return None
            item_id = new_id("rep")
            s.add(
                ReviewItem(
                    id=item_id,
                    kind="report",
                    status="open",
                    request_id=out.request_id,
                    output_id=out.id,
                    key_id=out.key_id,
                    reporter_key_id=reporter.id,
                    reason=reason,
                    created_at=utcnow(),
                )
            )
            # a reported output is kept until the report is resolved
            out.expires_at = None
            return item_id

    # ---- review ------------------------------------------------------------------------------
    def review_items(self, status: str | None = "open", limit: int = 100) -> list[dict[str, Any]]:
        with self._read() as s:
            q = select(ReviewItem).order_by(ReviewItem.created_at.desc()).limit(limit)
            if status:
                q = q.where(ReviewItem.status == status)
            items = list(s.scalars(q))
            return [self._item_dict(s, it) for it in items]

    def review_item(self, item_id: str) -> dict[str, Any] | None:
        with self._read() as s:
            it = s.get(ReviewItem, item_id)
            return self._item_dict(s, it, full=True) if it else None

    def _item_dict(self, s: Session, it: ReviewItem, *, full: bool = False) -> dict[str, Any]:
        rec = (
            s.scalars(select(AuditRecord).where(AuditRecord.request_id == it.request_id)).first()
            if it.request_id
            else None
        )
        decision = rec.decision if rec else None
        out = {
            "id": it.id,
            "kind": it.kind,
            "status": it.status,
            "reason": it.reason,
            "created_at": it.created_at.isoformat(),
            "resolved_at": it.resolved_at.isoformat() if it.resolved_at else None,
            "resolved_by": it.resolved_by,
            "key_id": it.key_id,
            "reporter_key_id": it.reporter_key_id,
            "request_id": it.request_id,
            "output_id": it.output_id,
            "has_image": False,
            "action": rec.action if rec else None,
            "categories": rec.categories if rec else [],
            "stage": rec.stage if rec else None,
            "prompt": (decision or {}).get("original_prompt") or (decision or {}).get("prompt"),
            "decision_reason": (decision or {}).get("reason"),
        }
        if it.output_id:
            o = s.get(Output, it.output_id)
            out["has_image"] = bool(o and o.path and Path(o.path).exists())
        if full:
            out["decision"] = decision
            out["actions"] = [
                {"action": a.action, "by": a.reviewer_key_id, "note": a.note, "at": a.created_at.isoformat()}
                for a in s.scalars(select(ReviewAction).where(ReviewAction.item_id == it.id).order_by(ReviewAction.id))
            ]
        return out

    def review_act(self, item_id: str, reviewer_id: str, action: str, note: str = "") -> dict[str, Any] | None:
        if action not in REVIEW_ACTIONS:
            raise ValueError(f"action must be one of {', '.join(REVIEW_ACTIONS)}")
        now = utcnow()
        with self._write() as s, s.begin():
            it = s.get(ReviewItem, item_id)
            if it is None:
                return None
            it.status = {"approve": "approved", "reject": "rejected", "escalate": "escalated"}[action]
            it.resolved_at = now
            it.resolved_by = reviewer_id
            s.add(
                ReviewAction(
                    item_id=item_id,
                    subject_key_id=it.key_id,
                    reviewer_key_id=reviewer_id,
                    action=action,
                    note=note,
                    created_at=now,
                )
            )
            if action == "escalate":
                rec = (
                    s.scalars(select(AuditRecord).where(AuditRecord.request_id == it.request_id)).first()
                    if it.request_id
                    else None
                )
                audit = {"request_id": it.request_id, "key_id": it.key_id, "ip": rec.ip if rec else None}
                cats = list(rec.categories) if rec and rec.categories else []
                self._incident(s, audit, cats or ["unspecified"], trigger="reviewer", now=now)
        return self.review_item(item_id)

    # ---- audit queries -----------------------------------------------------------------------
    def audit_records(self, *, key_id: str | None = None, limit: int = 100, after_seq: int = 0) -> list[dict[str, Any]]:
        with self._read() as s:
            q = select(AuditRecord).where(AuditRecord.seq > after_seq).order_by(AuditRecord.seq).limit(limit)
            if key_id:
                q = q.where(AuditRecord.key_id == key_id)
            return [_audit_dict(r) for r in s.scalars(q)]

    def audit_request_ids(self) -> list[str]:
        with self._read() as s:
            return list(s.scalars(select(AuditRecord.request_id)))

    def count_audit(self) -> int:
        with self._read() as s:
            return int(s.scalar(select(func.count()).select_from(AuditRecord)) or 0)

    # ---- escalation export -------------------------------------------------------------------
    def export_incidents(self, *, include_exported: bool = False, mark: bool = True) -> Iterator[dict[str, Any]]:
        """Incidents in the documented ``t2iguard-escalation/1`` format (see README)."""
        with self._write() as s, s.begin():
            q = select(Incident).order_by(Incident.created_at)
            if not include_exported:
                q = q.where(Incident.status == "open")
            incidents = list(s.scalars(q))
            out = []
            now = utcnow()
            for inc in incidents:
                rec = (
                    s.scalars(select(AuditRecord).where(AuditRecord.request_id == inc.request_id)).first()
                    if inc.request_id
                    else None
                )
                key = s.get(ApiKey, inc.key_id) if inc.key_id else None
                decision = rec.decision if rec else None
                out.append(
                    {
                        "format": ESCALATION_FORMAT,
                        "incident_id": inc.id,
                        "created_at": inc.created_at.isoformat(),
                        "exported_at": now.isoformat(),
                        "trigger": inc.trigger,
                        "categories": inc.categories,
                        "request": {
                            "request_id": inc.request_id,
                            "received_at": rec.created_at.isoformat() if rec else None,
                            "endpoint": rec.endpoint if rec else None,
                            "ip": inc.ip,
                            "user": rec.user if rec else None,
                        },
                        "account": {
                            "key_id": inc.key_id,
                            "key_name": key.name if key else None,
                            "key_created_at": key.created_at.isoformat() if key else None,
                        },
                        "input_sha256": rec.input_hashes if rec else [],
                        "output_sha256": rec.output_hashes if rec else [],
                        "decision": {
                            "id": rec.decision_id if rec else None,
                            "action": rec.action if rec else None,
                            "stage": rec.stage if rec else None,
                            "reason": (decision or {}).get("reason"),
                            "trace": (decision or {}).get("trace", []),
                        },
                    }
                )
                if mark:
                    s.execute(update(Incident).where(Incident.id == inc.id).values(status="exported", exported_at=now))
            return iter(out)

    # ---- retention ---------------------------------------------------------------------------
    def purge_expired(self, now: datetime | None = None) -> int:
        """Delete kept images whose retention ran out (held/reported ones have no expiry)."""
        t = now or utcnow()
        removed = 0
        with self._write() as s, s.begin():
            rows = list(
                s.scalars(
                    select(Output).where(
                        Output.expires_at.is_not(None), Output.expires_at < t, Output.path.is_not(None)
                    )
                )
            )
            for o in rows:
                if o.path:
                    Path(o.path).unlink(missing_ok=True)
                o.path = None
                removed += 1
        return removed


def _audit_dict(r: AuditRecord) -> dict[str, Any]:
    return {
        "seq": r.seq,
        "request_id": r.request_id,
        "client_request_id": r.client_request_id,
        "created_at": r.created_at.isoformat(),
        "method": r.method,
        "path": r.path,
        "endpoint": r.endpoint,
        "status": r.status,
        "key_id": r.key_id,
        "ip": r.ip,
        "user": r.user,
        "action": r.action,
        "decision_id": r.decision_id,
        "categories": r.categories,
        "stage": r.stage,
        "error_code": r.error_code,
        "input_hashes": r.input_hashes,
        "output_hashes": r.output_hashes,
        "details": r.details,
        "latency_ms": r.latency_ms,
        "decision": r.decision,
    }


def dumps_jsonl(records: Iterator[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
