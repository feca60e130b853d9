"""The gateway: an OpenAI-compatible HTTP API in front of a :class:`SafetyStack`.

Thin by design: handlers validate, authorize, run the stack in a worker thread and shape the
answer. Cross-cutting work happens in one ASGI middleware (:class:`AuditMiddleware`): the request
id, the body-size limit, and the audit record of **every** API request, written and committed when
the handler's response starts and before its first byte is sent. If the record cannot be written,
the response is replaced by a 503 and no content leaves (fail closed).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import anyio
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from t2iguard.core.decision import Decision
from t2iguard.core.errors import ConfigurationError, InputError
from t2iguard.core.inputs import ImageItem, load_image
from t2iguard.core.pipeline import GenerationOutcome, SafetyStack
from t2iguard.core.policy import Policy, default_policy, load_policy
from t2iguard.core.registry import StageRegistry
from t2iguard.core.stage import ModelCache
from t2iguard.core.types import Action, Category, Phase
from t2iguard.generate.base import GenerationRequest, Generator
from t2iguard.generate.factory import make_generator
from t2iguard.service import schemas as S
from t2iguard.service.config import GatewayConfig
from t2iguard.service.db import utcnow
from t2iguard.service.metrics import Metrics
from t2iguard.service.ratelimit import MemoryRateLimiter, RedisRateLimiter, Verdict, make_rate_limiter
from t2iguard.service.store import KeyInfo, OutputEntry, RequestCommit, Store, dumps_jsonl, new_id

log = logging.getLogger("t2iguard.gateway")
T = TypeVar("T")
AUDITED_PREFIXES = ("/v1/", "/admin/", "/review/api/")
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class ApiError(HTTPException):
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code", ...}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.body = {"message": message, "type": type, "param": param, "code": code, **extra}


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit:,} bytes", code="request_too_large")


def _error_response(exc: ApiError, request_id: str | None = None) -> JSONResponse:
    body = dict(exc.body)
    if request_id:
        body.setdefault("request_id", request_id)
    return JSONResponse({"error": body}, status_code=exc.status_code, headers=exc.headers)


@dataclass
class RequestState:
    """What a handler leaves for the audit middleware (``scope["state"]["t2iguard"]``)."""

    request_id: str
    t0: float
    ip: str | None
    client_request_id: str | None = None
    key: KeyInfo | None = None
    commit: RequestCommit | None = None
    error_code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    action: str | None = None


def _state(request: Request) -> RequestState:
    st = request.scope.get("state", {}).get("t2iguard")
    if st is None:  # routes outside AUDITED_PREFIXES
        st = RequestState(request_id=uuid.uuid4().hex, t0=time.perf_counter(), ip=_client_ip(request.scope, False))
        request.scope.setdefault("state", {})["t2iguard"] = st
    return st


def _client_ip(scope: Scope, trust_forwarded: bool) -> str | None:
    if trust_forwarded:
        for name, value in scope.get("headers", []):
            if name == b"x-forwarded-for":
                return value.decode("latin-1").split(",")[0].strip()[:64] or None
    client = scope.get("client")
    return str(client[0]) if client else None


class Gateway:
    """Everything the app needs, built once: config, store, limiter, stacks, metrics."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        store: Store | None = None,
        generator: Generator | None = None,
        limiter: MemoryRateLimiter | RedisRateLimiter | None = None,
        registry: StageRegistry | None = None,
        models: ModelCache | None = None,
    ) -> None:
        self.config = config
        self.registry = registry or StageRegistry()
        # what can be wrong in the configuration fails first, before anything is created on disk
        self.policies: dict[str | None, Policy] = {
            None: load_policy(config.policy) if config.policy else default_policy()
        }
        for name, path in config.policies.items():
            self.policies[name] = load_policy(path)
        self.generator = generator or make_generator(config.generator)
        self.store = store or Store(config.db_url)
        self.limiter = limiter or make_rate_limiter(config.redis_url)
        self.metrics = Metrics()
        self.models = models or ModelCache()  # shared by every stack (one copy of each model)
        self._stacks: dict[str | None, SafetyStack] = {}
        self.work = anyio.CapacityLimiter(config.workers)
        self.ready = False
        self.draining = False
        self.image_dir = config.image_dir
        self.image_dir.mkdir(parents=True, exist_ok=True)

    def stack(self, policy_name: str | None) -> SafetyStack:
        if policy_name not in self.policies:
            raise ApiError(
                500,
                f"the key's policy {policy_name!r} is not configured; refusing",
                code="policy_unavailable",
                type="server_error",
            )
        st = self._stacks.get(policy_name)
        if st is None:
            st = SafetyStack(
                self.policies[policy_name], registry=self.registry, models=self.models, generator=self.generator
            )
            self._stacks[policy_name] = st
        return st

    def build_stacks(self) -> None:
        for name in self.policies:
            st = self.stack(name)
            if self.config.warmup:
                st.warmup()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking stack work, in the bounded worker pool."""
        return await anyio.to_thread.run_sync(lambda: fn(*args), limiter=self.work)

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(lambda: fn(*args))

    async def limit(self, bucket: str, rate: float, burst: int) -> Verdict:
        if isinstance(self.limiter, MemoryRateLimiter):
            return self.limiter.acquire(bucket, rate, burst)
        return await anyio.to_thread.run_sync(self.limiter.acquire, bucket, rate, burst)

    # ---- auth ---------------------------------------------------------------------------------
    async def authorize(self, request: Request, role: str) -> KeyInfo:
        st = _state(request)
        rl = self.config.rate_limit
        if rl.enabled and st.ip:
            v = await self.limit(f"ip:{st.ip}", rl.per_ip_rps, rl.per_ip_burst)
            st.headers.update(v.headers("ip-requests"))
            if not v.allowed:
                self.metrics.rate_limited.labels("ip").inc()
                raise _rate_limited(v, "IP address")
        auth = request.headers.get("authorization", "")
        scheme, _, secret = auth.partition(" ")
        if not auth:
            raise ApiError(401, "no API key: send 'Authorization: Bearer <key>'", code="missing_api_key")
        if scheme.lower() != "bearer" or not secret.strip():
            raise ApiError(401, "malformed Authorization header; expected 'Bearer <key>'", code="invalid_api_key")
        key = await self.db(self.store.authenticate, secret.strip())
        if key is None or key.revoked:
            raise ApiError(401, "invalid or revoked API key", code="invalid_api_key")
        st.key = key
        if key.suspended():
            until = "until a reviewer lifts it" if key.suspended_indefinitely else f"until {key.suspended_until}"
            raise ApiError(
                403,
                f"this API key is suspended {until}: {key.suspension_reason or ''}".strip(),
                code="key_suspended",
                type="permission_error",
            )
        if not key.has_role(role):
            raise ApiError(
                403, f"this endpoint needs the '{role}' role", code="insufficient_role", type="permission_error"
            )
        if rl.enabled:
            v = await self.limit(f"key:{key.id}", rl.per_key_rps, rl.per_key_burst)
            st.headers.update(v.headers("requests"))
            if not v.allowed:
                self.metrics.rate_limited.labels("key").inc()
                raise _rate_limited(v, "API key")
        return key

    # ---- images -------------------------------------------------------------------------------
    def parse_size(self, size: str | None) -> tuple[int, int]:
        s = size or self.config.default_size
        if s == "auto":
            s = self.config.default_size
        w_s, _, h_s = s.partition("x")
        w, h = int(w_s), int(h_s)
        lo, hi = 64, self.config.max_side
        if not (lo <= w <= hi and lo <= h <= hi):
            raise ApiError(400, f"size {s} is outside {lo}..{hi} pixels per side", code="invalid_size", param="size")
        return w, h

    def check_n(self, n: int) -> None:
        if n > self.config.max_n:
            raise ApiError(
                400, f"n={n} is over this server's limit of {self.config.max_n}", code="invalid_n", param="n"
            )

    def save_image(self, image_id: str, data: bytes) -> str:
        day = utcnow().strftime("%Y-%m-%d")
        d = self.image_dir / day
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{image_id}.png"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
        tmp.replace(path)
        return str(path)


def _rate_limited(v: Verdict, what: str) -> ApiError:
    retry = max(1, int(v.retry_after_s + 0.999))
    return ApiError(
        429,
        f"rate limit of this {what} exceeded; retry after {retry} s",
        code="rate_limit_exceeded",
        type="rate_limit_error",
        headers={"Retry-After": str(retry)},
    )


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _decided(decision: Decision) -> tuple[list[str], str | None, str | None]:
    cats = [str(c) for c in decision.flagged]
    first = decision.decided_by[0] if decision.decided_by else None
    return cats, first.stage if first else None, str(first.phase) if first else None


def _refusal(decision: Decision, request_id: str) -> ApiError:
    cats, stage, phase = _decided(decision)
    held = decision.action == Action.REVIEW
    what = "held for human review" if held else "rejected by the safety system"
    return ApiError(
        400,
        f"Your request was {what}. {decision.reason}",
        code="content_policy_violation",
        param="prompt",
        action=str(decision.action),
        categories=cats,
        stage=stage,
        phase=phase,
        decision_id=decision.id,
        request_id=request_id,
    )


# ---- the middleware -----------------------------------------------------------------------------
class AuditMiddleware:
    """Request id, body-size limit, access log, metrics, and one committed audit record per API
    request before its response starts."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gw = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gw = self.gw
        path: str = scope.get("path", "")
        audited = path.startswith(AUDITED_PREFIXES)
        rid = ""
        for name, value in scope.get("headers", []):
            if name in (b"x-client-request-id", b"x-request-id"):
                cand = value.decode("latin-1")
                rid = cand if REQUEST_ID_RE.match(cand) else ""
                break
        st = RequestState(
            request_id=uuid.uuid4().hex,
            t0=time.perf_counter(),
            ip=_client_ip(scope, gw.config.trust_forwarded_for),
            client_request_id=rid or None,
        )
        scope.setdefault("state", {})["t2iguard"] = st
        started = False
        swallow = False
        status_sent = 0
        gw.metrics.in_flight.inc()

        async def send_wrapper(message: Message) -> None:
            nonlocal started, swallow, status_sent
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                if audited:
                    ok = await self._audit(scope, st, status)
                    if not ok:
                        swallow = True
                        err = ApiError(
                            503,
                            "the audit log is unavailable; nothing is returned until it is back",
                            code="audit_unavailable",
                            type="server_error",
                        )
                        resp = _error_response(err, st.request_id)
                        status = 503
                        await send(
                            {
                                "type": "http.response.start",
                                "status": 503,
                                "headers": [*resp.raw_headers, (b"x-request-id", st.request_id.encode())],
                            }
                        )
                        await send({"type": "http.response.body", "body": resp.body, "more_body": False})
                        status_sent = 503
                        return
                status_sent = status
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", st.request_id.encode()))
                if st.client_request_id:
                    headers.append((b"x-client-request-id", st.client_request_id.encode()))
                for k, v in st.headers.items():
                    headers.append((k.encode(), v.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and swallow:
                return
            await send(message)

        limit = gw.config.max_body_bytes
        received = 0

        async def receive_wrapper() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                await _error_response(BodyTooLarge(limit), st.request_id)(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        except Exception as exc:
            if started:
                raise
            if isinstance(exc, ApiError):
                err = exc
            else:
                log.exception("unhandled error", extra={"fields": {"request_id": st.request_id}})
                err = ApiError(500, "internal error", code="internal_error", type="server_error")
            await _error_response(err, st.request_id)(scope, receive, send_wrapper)
        finally:
            gw.metrics.in_flight.dec()
            elapsed = time.perf_counter() - st.t0
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            gw.metrics.requests.labels(endpoint, scope.get("method", ""), str(status_sent)).inc()
            gw.metrics.latency.labels(endpoint).observe(elapsed)
            if path not in ("/healthz", "/readyz", "/metrics"):
                log.info(
                    "request",
                    extra={
                        "fields": {
                            "request_id": st.request_id,
                            "method": scope.get("method"),
                            "path": path,
                            "status": status_sent,
                            "key_id": st.key.id if st.key else None,
                            "ip": st.ip,
                            "action": st.action,
                            "latency_ms": round(elapsed * 1000.0, 2),
                        }
                    },
                )

    async def _audit(self, scope: Scope, st: RequestState, status: int) -> bool:
        gw = self.gw
        route = scope.get("route")
        commit = st.commit or RequestCommit(audit={})
        audit = commit.audit
        audit.update(
            request_id=st.request_id,
            client_request_id=st.client_request_id,
            method=str(scope.get("method", ""))[:10],
            path=str(scope.get("path", ""))[:300],
            endpoint=(getattr(route, "path", None) or "unmatched")[:60],
            status=status,
            key_id=st.key.id if st.key else None,
            ip=st.ip,
            latency_ms=(time.perf_counter() - st.t0) * 1000.0,
        )
        audit.setdefault("error_code", st.error_code)
        audit.setdefault("categories", [])
        audit.setdefault("input_hashes", [])
        audit.setdefault("output_hashes", [])
        audit.setdefault("details", {})
        if status >= 400 and commit.outputs:
            commit.outputs = [o for o in commit.outputs if not o.released]
            audit["output_hashes"] = []
        try:
            outcome = await gw.db(gw.store.commit_request, commit)
        except Exception:
            gw.metrics.audit_failures.inc()
            log.exception("audit write failed", extra={"fields": {"request_id": st.request_id}})
            return False
        if outcome is not None and outcome.suspended:
            gw.metrics.suspensions.inc()
            log.warning(
                "key suspended",
                extra={
                    "fields": {
                        "key_id": audit.get("key_id"),
                        "strikes": round(outcome.total, 2),
                        "indefinitely": outcome.indefinitely,
                        "incident": outcome.incident_id,
                    }
                },
            )
        return True


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# ---- the app ------------------------------------------------------------------------------------
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": S.ErrorResponse, "description": desc}
    for code, desc in (
        (400, "invalid request, or refused by the safety policy (code content_policy_violation)"),
        (401, "missing or invalid API key"),
        (403, "suspended key or insufficient role"),
        (413, "request body too large"),
        (429, "rate limited (see Retry-After)"),
    )
}


def create_app(gateway: Gateway) -> FastAPI:
    gw = gateway
    cfg = gw.config

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        if cfg.migrate:
            await anyio.to_thread.run_sync(gw.store.migrate)
        await anyio.to_thread.run_sync(gw.build_stacks)
        purge = asyncio.create_task(_purge_loop(gw))
        gw.ready = True
        log.info("gateway ready", extra={"fields": {"generator": cfg.generator, "database": gw.store.dialect}})
        try:
            yield
        finally:
            gw.ready = False
            gw.draining = True
            purge.cancel()
            for st in gw._stacks.values():
                st.close()
            gw.limiter.close()
            gw.store.close()
            log.info("gateway stopped")

    app = FastAPI(
        title="t2iguard gateway",
        version="0.1.0",
        description="An OpenAI-compatible text-to-image safety gateway: every request is checked, "
        "explained and audited.",
        lifespan=lifespan,
    )
    app.state.gateway = gw
    app.add_middleware(AuditMiddleware, gateway=gw)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        st = _state(request)
        st.error_code = st.error_code or str(exc.body.get("code"))
        return _error_response(exc, st.request_id)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        st = _state(request)
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(
            exc.status_code, "http_error"
        )
        st.error_code = code
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # Starlette lists only the first route's methods; list every route's
            methods: set[str] = set()
            for route in request.app.router.routes:
                match, _ = route.matches(request.scope)
                if match != Match.NONE:
                    methods |= set(getattr(route, "methods", None) or ())
            if methods:
                headers["Allow"] = ", ".join(sorted(methods))
        return _error_response(ApiError(exc.status_code, str(exc.detail), code=code, headers=headers), st.request_id)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        st = _state(request)
        errs = exc.errors()
        parts = []
        param = None
        for e in errs[:5]:
            loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path")]
            param = param or (loc[0] if loc else None)
            msg = str(e.get("msg", "invalid"))
            if e.get("type") == "extra_forbidden":
                msg = "unknown field"
            parts.append(f"{'.'.join(loc) or 'body'}: {msg}")
        st.error_code = "invalid_request"
        return _error_response(
            ApiError(400, "invalid request: " + "; ".join(parts), code="invalid_request", param=param), st.request_id
        )

    def require(role: str) -> Callable[[Request], Awaitable[KeyInfo]]:
        async def dep(request: Request) -> KeyInfo:
            return await gw.authorize(request, role)

        return dep

    user_key = Depends(require("user"))
    reviewer_key = Depends(require("reviewer"))
    admin_key = Depends(require("admin"))

    # ---- operations -----------------------------------------------------------------------------
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        checks: dict[str, str] = {}
        ok = gw.ready and not gw.draining
        checks["startup"] = "ok" if gw.ready else ("draining" if gw.draining else "starting")
        try:
            await gw.db(gw.store.ping)
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            checks["database"] = f"error: {type(exc).__name__}"
            ok = False
        if isinstance(gw.limiter, RedisRateLimiter):
            try:
                await anyio.to_thread.run_sync(gw.limiter.ping)
                checks["redis"] = "ok"
            except Exception as exc:  # noqa: BLE001
                checks["redis"] = f"error: {type(exc).__name__}"
                ok = False
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(gw.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # ---- images ---------------------------------------------------------------------------------
    async def respond_images(
        request: Request,
        key: KeyInfo,
        stack: SafetyStack,
        outcome: GenerationOutcome,
        *,
        endpoint: str,
        response_format: str,
        input_hashes: list[str],
        details: dict[str, Any],
        upload: ImageItem | None = None,
    ) -> JSONResponse:
        st = _state(request)
        d = outcome.decision
        gw.metrics.observe_decision(endpoint, d)
        cats, stage, _ = _decided(d)
        st.action = str(d.action)
        now = utcnow()
        outputs: list[OutputEntry] = []
        data: list[dict[str, Any]] = []
        ret = cfg.retention
        if d.allowed and outcome.images:
            for i, img in enumerate(outcome.images):
                enc = outcome.encoded[i] if i < len(outcome.encoded) and outcome.encoded[i] else None
                png = enc if enc is not None else await gw.run(_png, img)
                oid = new_id("img")
                keep = response_format == "url" or ret.store_outputs
                expires = None
                if keep:
                    ttl = ret.output_days * 86400.0 if ret.store_outputs else 0.0
                    if response_format == "url":
                        ttl = max(ttl, float(ret.url_ttl_s))
                    expires = now + timedelta(seconds=ttl)
                path = await gw.db(gw.save_image, oid, png) if keep else None
                outputs.append(OutputEntry(oid, i, _sha(png), True, path, expires))
                item: dict[str, Any] = {"id": oid}
                if response_format == "url":
                    base = cfg.public_url or str(request.base_url).rstrip("/")
                    item["url"] = f"{base.rstrip('/')}/v1/images/files/{oid}.png"
                else:
                    item["b64_json"] = base64.b64encode(png).decode("ascii")
                if d.changes:
                    item["revised_prompt"] = d.prompt
                data.append(item)
        hold = None
        if d.action == Action.REVIEW:
            hold = d.reason
            for i, img in enumerate(outcome.withheld):
                png = await gw.run(_png, img)
                oid = new_id("img")
                path = await gw.db(gw.save_image, oid, png)
                outputs.append(OutputEntry(oid, i, _sha(png), False, path, None))
            if not outcome.withheld and upload is not None:  # an edit held before generation: keep the upload
                oid = new_id("img")
                png = await gw.run(_png, upload.image)
                path = await gw.db(gw.save_image, oid, png)
                outputs.append(OutputEntry(oid, -1, upload.sha256, False, path, None))
        pp = stack.policy.penalties
        penalize = [Category(c) for c in cats] if d.action == Action.BLOCK else []
        st.commit = RequestCommit(
            audit={
                "user": details.get("user"),
                "action": str(d.action),
                "decision_id": d.id,
                "categories": cats,
                "stage": stage,
                "input_hashes": input_hashes,
                "output_hashes": [o.sha256 for o in outputs if o.released],
                "decision": d.to_dict(),
                "details": {
                    **details,
                    "policy": stack.policy.name,
                    "withheld": [o.sha256 for o in outputs if not o.released],
                },
                "error_code": None if d.allowed else "content_policy_violation",
            },
            outputs=outputs,
            hold_reason=hold,
            penalize=penalize,
            penalties=pp,
        )
        if not d.allowed or not data:
            if d.allowed:  # allowed but nothing produced: fail closed with a clear error
                raise ApiError(500, "no image was produced", code="generation_failed", type="server_error")
            raise _refusal(d, st.request_id)
        body = {
            "created": int(now.timestamp()),
            "data": data,
            "t2iguard": {
                "request_id": st.request_id,
                "decision_id": d.id,
                "action": str(d.action),
                "categories": cats,
                "reason": d.reason,
            },
        }
        return JSONResponse(body)

    def _input_error(err: InputError, param: str) -> ApiError:
        return ApiError(400, f"{param}: {err.reason}", code=f"invalid_{param}", param=param)

    @app.post(
        "/v1/images/generations",
        response_model=S.ImagesResponse,
        responses=ERRORS,
        summary="Create images (OpenAI Images API), checked by the safety stack",
    )
    async def generations(body: S.ImageGenerationRequest, request: Request, key: KeyInfo = user_key) -> JSONResponse:
        gw.check_n(body.n)
        w, h = gw.parse_size(body.size)
        stack = gw.stack(key.policy)
        req = GenerationRequest(prompt=body.prompt, n=body.n, width=w, height=h, user=body.user or key.id)
        try:
            outcome = await gw.run(stack.generate, req)
        except InputError as err:
            raise _input_error(err, "prompt") from None
        return await respond_images(
            request,
            key,
            stack,
            outcome,
            endpoint="generations",
            response_format=body.response_format or "url",
            input_hashes=[_sha(body.prompt.encode("utf-8", "surrogatepass"))],
            details={"n": body.n, "size": f"{w}x{h}", "user": body.user, "model": body.model},
        )

    async def read_form(request: Request, allowed: frozenset[str]) -> Any:
        ctype = request.headers.get("content-type", "")
        if not ctype.lower().startswith("multipart/form-data"):
            raise ApiError(
                400, f"expected multipart/form-data, got {ctype or 'no content type'}", code="invalid_content_type"
            )
        try:
            form = await request.form(max_files=32, max_fields=64, max_part_size=1024 * 1024)
        except ApiError:
            raise
        except Exception as exc:  # noqa: BLE001 - any parser failure is the client's malformed body
            raise ApiError(400, f"malformed multipart body: {exc}", code="invalid_multipart") from None
        unknown = sorted(set(form.keys()) - allowed)
        if unknown:
            raise ApiError(400, f"unknown field(s): {', '.join(unknown[:5])}", code="invalid_request", param=unknown[0])
        return form

    async def read_upload(value: Any, name: str, policy: Policy) -> ImageItem:
        if not isinstance(value, UploadFile):
            raise ApiError(400, f"{name} must be a file upload", code=f"invalid_{name}", param=name)
        data = await value.read()
        try:
            return await gw.run(lambda: load_image(data, limits=policy.limits, source=name))
        except InputError as err:
            raise ApiError(400, f"{name}: {err.reason}", code="invalid_image", param=name) from None

    def form_str(form: Any, name: str, default: str | None = None, max_len: int = 100_000) -> str | None:
        v = form.get(name)
        if v is None:
            return default
        if not isinstance(v, str):
            raise ApiError(400, f"{name} must be a text field", code="invalid_request", param=name)
        if len(v) > max_len:
            raise ApiError(400, f"{name} is longer than {max_len}", code="invalid_request", param=name)
        return v

    def form_int(form: Any, name: str, default: int) -> int:
        v = form_str(form, name, None, 10)
        if v is None:
            return default
        try:
            n = int(v)
        except ValueError:
            raise ApiError(400, f"{name} must be an integer", code="invalid_request", param=name) from None
        if n < 1:
            raise ApiError(400, f"{name} must be >= 1", code=f"invalid_{name}", param=name)
        return n

    @app.post(
        "/v1/images/edits",
        response_model=S.ImagesResponse,
        responses=ERRORS,
        openapi_extra=S.EDIT_SCHEMA,
        summary="Edit an image (OpenAI Images API, multipart image + mask), checked by the safety stack",
    )
    async def edits(request: Request, key: KeyInfo = user_key) -> JSONResponse:
        form = await read_form(request, S.EDIT_FIELDS)
        stack = gw.stack(key.policy)
        images = form.getlist("image") + form.getlist("image[]")
        if not images:
            raise ApiError(400, "image is required", code="invalid_image", param="image")
        if len(images) > 1:
            raise ApiError(400, "one image per edit is supported", code="invalid_image", param="image")
        prompt = form_str(form, "prompt")
        if not prompt:
            raise ApiError(400, "prompt is required", code="invalid_prompt", param="prompt")
        n = form_int(form, "n", 1)
        gw.check_n(n)
        size = form_str(form, "size", None, 16)
        if size is not None and not re.match(S.SIZE_PATTERN, size):
            raise ApiError(400, "size must be WIDTHxHEIGHT or auto", code="invalid_size", param="size")
        fmt = form_str(form, "response_format", "url", 16)
        if fmt not in ("url", "b64_json"):
            raise ApiError(
                400, "response_format must be url or b64_json", code="invalid_request", param="response_format"
            )
        user = form_str(form, "user", None, 256)
        image = await read_upload(images[0], "image", stack.policy)
        mask = await read_upload(form["mask"], "mask", stack.policy) if form.get("mask") is not None else None
        if mask is not None and mask.size != image.size:
            raise ApiError(400, f"mask is {mask.size}, image is {image.size}: sizes must match", code="invalid_mask")
        w, h = gw.parse_size(size) if size else (image.width, image.height)
        if size is None:
            w = min(max(w, 64), cfg.max_side)
            h = min(max(h, 64), cfg.max_side)
        req = GenerationRequest(prompt=prompt, n=n, width=w, height=h, image=image, mask=mask, user=user or key.id)
        try:
            outcome = await gw.run(stack.generate, req)
        except InputError as err:
            raise _input_error(err, "prompt") from None
        hashes = [_sha(prompt.encode("utf-8", "surrogatepass")), image.sha256] + ([mask.sha256] if mask else [])
        return await respond_images(
            request,
            key,
            stack,
            outcome,
            endpoint="edits",
            response_format=fmt,
            input_hashes=hashes,
            details={"n": n, "size": f"{w}x{h}", "user": user, "model": form_str(form, "model", None, 100)},
            upload=image,
        )

    @app.get(
        "/v1/images/files/{name}",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, 404: {"model": S.ErrorResponse}},
        summary="Download an image",
    )
    async def image_file(name: str) -> Response:
        """Capability URL: the unguessable id is the credential (like OpenAI's signed URLs), and it
        expires with the retention policy. Only released images are served here."""
        oid = name.removesuffix(".png")
        if not re.fullmatch(r"img_[0-9a-f]{32}", oid):
            raise ApiError(404, "no such image", code="not_found")
        out = await gw.db(gw.store.get_output, oid)
        if out is None or not out.released or not out.path or (out.expires_at and out.expires_at < utcnow()):
            raise ApiError(404, "no such image, or it has expired", code="not_found")
        try:
            data = await gw.db(Path(out.path).read_bytes)
        except OSError:
            raise ApiError(404, "no such image, or it has expired", code="not_found") from None
        return Response(data, media_type="image/png")

    # ---- moderation checks ------------------------------------------------------------------------
    def moderation_result(d: Decision) -> dict[str, Any]:
        flagged_cats = {str(c) for c in d.flagged}
        return {
            "flagged": not d.allowed,
            "action": str(d.action),
            "categories": {str(c): (str(c) in flagged_cats) for c in Category},
            "category_scores": {str(c): float(d.categories.get(c, 0.0)) for c in Category},
            "decision": d.to_dict(),
        }

    def check_commit(
        request: Request, stack: SafetyStack, decisions: list[Decision], hashes: list[str], endpoint: str
    ) -> None:
        st = _state(request)
        worst = max(decisions, key=lambda d: d.action.severity)
        for d in decisions:
            gw.metrics.observe_decision(endpoint, d)
        cats = sorted({str(c) for d in decisions for c in d.flagged})
        st.action = str(worst.action)
        pp = stack.policy.penalties
        penalize = (
            [Category(c) for c in cats if any(d.action == Action.BLOCK for d in decisions)]
            if pp.apply_to_checks
            else [Category(c) for c in cats if pp.is_immediate(Category(c)) or pp.is_escalated(Category(c))]
        )
        st.commit = RequestCommit(
            audit={
                "action": str(worst.action),
                "decision_id": worst.id,
                "categories": cats,
                "stage": worst.decided_by[0].stage if worst.decided_by else None,
                "input_hashes": hashes,
                "decision": worst.to_dict(),
                "details": {"policy": stack.policy.name, "decisions": [d.id for d in decisions]},
            },
            penalize=penalize,
            penalties=pp,
        )

    @app.post("/v1/moderations", response_model=S.ModerationResponse, responses=ERRORS, summary="Check prompts")
    async def moderate_prompts(
        body: S.ModerationRequest, request: Request, key: KeyInfo = user_key
    ) -> S.ModerationResponse:
        stack = gw.stack(key.policy)
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if not texts or len(texts) > 256:
            raise ApiError(400, "input must hold 1..256 prompts", code="invalid_input", param="input")
        results = await gw.run(lambda: stack.check_prompts(texts, user=key.id))
        bad = [(i, r) for i, r in enumerate(results) if isinstance(r, InputError)]
        if bad:
            i, err = bad[0]
            raise ApiError(400, f"input[{i}]: {err.reason}", code="invalid_input", param="input")
        decisions = [r for r in results if isinstance(r, Decision)]
        check_commit(
            request, stack, decisions, [_sha(t.encode("utf-8", "surrogatepass")) for t in texts], "moderations"
        )
        return S.ModerationResponse(
            id=f"modr-{_state(request).request_id}",
            model=f"t2iguard:{stack.policy.name}",
            results=[S.ModerationResult(**moderation_result(d)) for d in decisions],
        )

    @app.post(
        "/v1/moderations/images",
        response_model=S.ModerationResponse,
        responses=ERRORS,
        openapi_extra=S.IMAGE_CHECK_SCHEMA,
        summary="Check uploaded images (multipart)",
    )
    async def moderate_images(request: Request, key: KeyInfo = user_key) -> S.ModerationResponse:
        form = await read_form(request, frozenset({"image", "image[]", "phase", "prompt"}))
        stack = gw.stack(key.policy)
        uploads = form.getlist("image") + form.getlist("image[]")
        if not uploads:
            raise ApiError(400, "image is required", code="invalid_image", param="image")
        if len(uploads) > stack.policy.limits.max_images:
            raise ApiError(400, f"at most {stack.policy.limits.max_images} images", code="invalid_image", param="image")
        phase_s = form_str(form, "phase", "input", 10)
        phase = {"input": Phase.INPUT_IMAGE, "output": Phase.OUTPUT_IMAGE}.get(phase_s or "")
        if phase is None:
            raise ApiError(400, "phase must be input or output", code="invalid_request", param="phase")
        prompt = form_str(form, "prompt")
        items = [await read_upload(u, "image", stack.policy) for u in uploads]
        results = await gw.run(lambda: stack.check_images(items, phase=phase, prompt=prompt))
        decisions = [r for r in results if isinstance(r, Decision)]
        check_commit(request, stack, decisions, [it.sha256 for it in items], "moderations_images")
        return S.ModerationResponse(
            id=f"modr-{_state(request).request_id}",
            model=f"t2iguard:{stack.policy.name}",
            results=[S.ModerationResult(**moderation_result(d)) for d in decisions],
        )

    # ---- reports ----------------------------------------------------------------------------------
    @app.post("/v1/reports", response_model=S.ReportResponse, status_code=201, responses={**ERRORS, 404: ERRORS[400]})
    async def report(body: S.ReportRequest, request: Request, key: KeyInfo = user_key) -> S.ReportResponse:
        """Report an output (by the id returned with it) for human review."""
        item = await gw.db(gw.store.create_report, body.output_id, key, body.reason)
        if item is None:
            raise ApiError(404, "no output with that id for this key", code="not_found", param="output_id")
        _state(request).commit = RequestCommit(audit={"details": {"report": item, "output_id": body.output_id}})
        return S.ReportResponse(id=item, status="open", output_id=body.output_id)

    # ---- review -----------------------------------------------------------------------------------
    @app.get("/review", response_class=HTMLResponse, include_in_schema=False)
    async def review_page() -> HTMLResponse:
        html = resources.files("t2iguard.service").joinpath("static/review.html").read_text(encoding="utf-8")
        return HTMLResponse(html)

    @app.get("/review/api/items", responses=ERRORS)
    async def review_items(
        status: str = Query("open", pattern="^(open|approved|rejected|escalated|all)$"),
        limit: int = Query(100, ge=1, le=500),
        key: KeyInfo = reviewer_key,
    ) -> dict[str, Any]:
        items = await gw.db(lambda: gw.store.review_items(None if status == "all" else status, limit))
        return {"items": items}

    @app.get("/review/api/items/{item_id}", responses={**ERRORS, 404: ERRORS[400]})
    async def review_item(item_id: str, key: KeyInfo = reviewer_key) -> dict[str, Any]:
        item = await gw.db(gw.store.review_item, item_id)
        if item is None:
            raise ApiError(404, "no such review item", code="not_found")
        return item

    @app.get(
        "/review/api/items/{item_id}/image",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, **ERRORS, 404: ERRORS[400]},
    )
    async def review_image(item_id: str, key: KeyInfo = reviewer_key) -> Response:
        item = await gw.db(gw.store.review_item, item_id)
        if item is None or not item.get("output_id"):
            raise ApiError(404, "this item has no image", code="not_found")
        out = await gw.db(gw.store.get_output, item["output_id"])
        if out is None or not out.path:
            raise ApiError(404, "the image is no longer stored", code="not_found")
        try:
            data = await gw.db(Path(out.path).read_bytes)
        except OSError:
            raise ApiError(404, "the image is no longer stored", code="not_found") from None
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.post("/review/api/items/{item_id}/action", responses={**ERRORS, 404: ERRORS[400]})
    async def review_action(
        item_id: str, body: S.ReviewActionRequest, request: Request, key: KeyInfo = reviewer_key
    ) -> dict[str, Any]:
        item = await gw.db(gw.store.review_act, item_id, key.id, body.action, body.note)
        if item is None:
            raise ApiError(404, "no such review item", code="not_found")
        _state(request).commit = RequestCommit(
            audit={"action": None, "details": {"review_item": item_id, "review_action": body.action, "note": body.note}}
        )
        return item

    @app.post("/review/api/keys/{key_id}/lift", responses={**ERRORS, 404: ERRORS[400]})
    async def lift(key_id: str, body: S.LiftRequest, request: Request, key: KeyInfo = reviewer_key) -> dict[str, Any]:
        """Lift a key's suspension (and reset its strikes)."""
        info = await gw.db(lambda: gw.store.update_key(key_id, actor=key.id, lift=True, note=body.note))
        if info is None:
            raise ApiError(404, "no such key", code="not_found")
        _state(request).commit = RequestCommit(audit={"details": {"lift": key_id, "note": body.note}})
        return info.public()

    # ---- admin ------------------------------------------------------------------------------------
    @app.post("/admin/keys", status_code=201, responses=ERRORS)
    async def create_key(body: S.KeyCreate, request: Request, key: KeyInfo = admin_key) -> dict[str, Any]:
        """Create a key. The secret is in this response only; the server keeps its hash."""
        if body.policy is not None and body.policy not in gw.policies:
            raise ApiError(400, f"unknown policy {body.policy!r}", code="invalid_policy", param="policy")
        info, secret = await gw.db(lambda: gw.store.create_key(body.name, body.role, body.policy))
        _state(request).commit = RequestCommit(audit={"details": {"created_key": info.id, "role": info.role}})
        return {**info.public(), "secret": secret}

    @app.get("/admin/keys", responses=ERRORS)
    async def list_keys(key: KeyInfo = admin_key) -> dict[str, Any]:
        keys = await gw.db(gw.store.list_keys)
        return {"keys": [k.public() for k in keys]}

    @app.get("/admin/keys/{key_id}", responses={**ERRORS, 404: ERRORS[400]})
    async def get_key(key_id: str, key: KeyInfo = admin_key) -> dict[str, Any]:
        info = await gw.db(gw.store.get_key, key_id)
        if info is None:
            raise ApiError(404, "no such key", code="not_found")
        strikes = await gw.db(gw.store.strikes, key_id)
        return {**info.public(), "strikes": strikes}

    @app.post("/admin/keys/{key_id}", responses={**ERRORS, 404: ERRORS[400]})
    async def update_key(key_id: str, body: S.KeyUpdate, request: Request, key: KeyInfo = admin_key) -> dict[str, Any]:
        if body.policy is not None and body.policy not in gw.policies:
            raise ApiError(400, f"unknown policy {body.policy!r}", code="invalid_policy", param="policy")
        info = await gw.db(
            lambda: gw.store.update_key(
                key_id,
                actor=key.id,
                role=body.role,
                policy=body.policy,
                clear_policy=body.clear_policy,
                revoke=body.revoke,
                suspend_hours=body.suspend_hours,
                suspend_indefinitely=body.suspend_indefinitely,
                lift=body.lift,
                note=body.note,
            )
        )
        if info is None:
            raise ApiError(404, "no such key", code="not_found")
        _state(request).commit = RequestCommit(audit={"details": {"updated_key": key_id, **body.model_dump()}})
        return info.public()

    @app.get("/admin/audit", responses=ERRORS)
    async def audit_log(
        key_id: str | None = Query(None, max_length=32),
        after: int = Query(0, ge=0, le=2**62),
        limit: int = Query(100, ge=1, le=1000),
        key: KeyInfo = admin_key,
    ) -> dict[str, Any]:
        records = await gw.db(lambda: gw.store.audit_records(key_id=key_id, limit=limit, after_seq=after))
        return {"records": records}

    @app.get(
        "/admin/escalations/export",
        response_class=Response,
        responses={200: {"content": {"application/x-ndjson": {}}}, **ERRORS},
    )
    async def export(
        request: Request,
        include_exported: bool = Query(False),
        mark: bool = Query(True),
        key: KeyInfo = admin_key,
    ) -> Response:
        """Incidents as JSON Lines in the ``t2iguard-escalation/1`` format (see README)."""
        records = await gw.db(lambda: list(gw.store.export_incidents(include_exported=include_exported, mark=mark)))
        _state(request).commit = RequestCommit(audit={"details": {"exported": [r["incident_id"] for r in records]}})
        return Response(dumps_jsonl(iter(records)), media_type="application/x-ndjson")

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """The published schema, tightened to this server's configured limits."""
        schema = default_openapi()
        if not schema.get("x-t2iguard-limits"):
            props = schema["components"]["schemas"]["ImageGenerationRequest"]["properties"]
            props["n"]["maximum"] = cfg.max_n
            edit = schema["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]["multipart/form-data"]
            edit["schema"]["properties"]["n"]["maximum"] = cfg.max_n
            schema["x-t2iguard-limits"] = {
                "max_n": cfg.max_n,
                "max_side": cfg.max_side,
                "max_body_bytes": cfg.max_body_bytes,
            }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _purge_loop(gw: Gateway, every_s: float = 600.0) -> None:
    while True:
        try:
            n = await gw.db(gw.store.purge_expired)
            if n:
                log.info("retention purge", extra={"fields": {"removed": n}})
        except Exception:
            log.exception("retention purge failed")
        await asyncio.sleep(every_s)


def build_app(
    config: GatewayConfig,
    *,
    store: Store | None = None,
    generator: Generator | None = None,
) -> FastAPI:
    try:
        gw = Gateway(config, store=store, generator=generator)
    except (ConfigurationError, OSError) as exc:
        raise ConfigurationError(f"cannot start the gateway: {exc}") from exc
    return create_app(gw)
