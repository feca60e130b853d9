"""Storage and limit backends: SQLite (WAL, migrations), real PostgreSQL and real Redis.

PostgreSQL and Redis tests read ``T2IGUARD_TEST_POSTGRES_URL`` / ``T2IGUARD_TEST_REDIS_URL``
(``.ci/services.sh start`` starts both and exports them; ``.ci/run`` does this in CI).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from support.gateway import LiveGateway, gateway_config, live_gateway
from t2iguard.service.ratelimit import RedisRateLimiter
from t2iguard.service.store import Store

PG_URL = os.environ.get("T2IGUARD_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("T2IGUARD_TEST_REDIS_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="T2IGUARD_TEST_POSTGRES_URL is not set (run .ci/services.sh start)")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="T2IGUARD_TEST_REDIS_URL is not set (run .ci/services.sh start)")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the test server, dropped afterwards."""
    assert PG_URL
    name = f"t2g_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def fast(tmp_path: Path, **kw: object) -> dict[str, object]:
    """Config overrides: the prompt-only test policy (storage is under test here, not the checks)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    return {"policy": str(tmp_path / "fast.yaml"), **kw}


def exercise(g: LiveGateway, clients: int = 8, per_client: int = 5) -> None:
    """Concurrent generations, refusals and a penalty; every request audited exactly once."""
    keys = [g.key() for _ in range(4)]

    def one(i: int) -> tuple[str, int]:
        prompt = "a photo of a n4k3d woman" if i % 5 == 0 else f"a landscape number {i}"
        cid = f"c-{i}"
        r = httpx.post(
            g.v1 + "/images/generations",
            json={"prompt": prompt, "response_format": "b64_json"},
            headers={"Authorization": f"Bearer {keys[i % len(keys)]}", "X-Client-Request-Id": cid},
            timeout=120,
        )
        return cid, r.status_code

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(clients * per_client)))
    assert {s for _, s in results} <= {200, 400}
    assert any(s == 200 for _, s in results) and any(s == 400 for _, s in results)
    records = g.store.audit_records(limit=10_000)
    by_client = {}
    for rec in records:
        if rec["client_request_id"]:
            by_client.setdefault(rec["client_request_id"], []).append(rec)
    for cid, status in results:
        assert len(by_client[cid]) == 1, cid
        assert by_client[cid][0]["status"] == status
    refused = [r for r in records if r["status"] == 400 and r["client_request_id"]]
    assert all(r["categories"] == ["sexual"] and r["decision"]["action"] == "block" for r in refused)


def test_sqlite_is_wal_and_migrated(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    store.migrate()
    assert store.current_revision() == "0001"
    with store.writer.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    store.downgrade("base")  # downgrade works too
    assert store.current_revision() is None
    store.migrate()
    store.close()


def test_sqlite_gateway_concurrency(tmp_path: Path) -> None:
    with live_gateway(gateway_config(tmp_path, **fast(tmp_path, rate_limit={"enabled": False}))) as g:
        exercise(g)


@needs_pg
def test_postgres_migrations_and_gateway(pg_url: str, tmp_path: Path) -> None:
    store = Store(pg_url)
    store.migrate()
    assert store.current_revision() == "0001"
    store.downgrade("base")
    assert store.current_revision() is None
    store.close()
    cfg = gateway_config(tmp_path, **fast(tmp_path, database_url=pg_url, rate_limit={"enabled": False}))
    with live_gateway(cfg) as g:
        assert g.store.dialect == "postgresql"
        exercise(g)
        # penalties on PostgreSQL: minors suspends at once (the "review" policy has penalties on)
        key = g.key(policy="review")
        r = httpx.post(
            g.v1 + "/images/generations", json={"prompt": "a naked child"}, headers={"Authorization": f"Bearer {key}"}
        )
        assert r.status_code == 400
        info = g.store.get_key(g.key_id(key))
        assert info is not None and info.suspended_indefinitely
        assert len(list(g.store.export_incidents(mark=False))) == 1


@needs_redis
def test_redis_limiter_is_shared_between_instances() -> None:
    a, b = RedisRateLimiter(REDIS_URL or ""), RedisRateLimiter(REDIS_URL or "")
    bucket = f"test:{uuid.uuid4().hex}"
    verdicts = [lim.acquire(bucket, 0.001, 4).allowed for lim in (a, b, a, b, a, b)]
    assert verdicts == [True, True, True, True, False, False]
    v = b.acquire(bucket, 0.001, 4)
    assert v.retry_after_s > 50 and v.remaining == 0
    a.close()
    b.close()


@needs_pg
@needs_redis
def test_two_replicas_share_limits_and_database(pg_url: str, tmp_path: Path) -> None:
    rl = {"per_key_rps": 0.001, "per_key_burst": 4, "per_ip_burst": 10_000}
    cfg = gateway_config(tmp_path / "a", database_url=pg_url, redis_url=REDIS_URL, rate_limit=rl)
    cfg_b = gateway_config(tmp_path / "b", database_url=pg_url, redis_url=REDIS_URL, rate_limit=rl)
    with live_gateway(cfg) as a, live_gateway(cfg_b) as b:
        key = a.key()  # created through replica A, used on both
        codes = []
        for g in (a, b, a, b, a, b):
            r = httpx.post(g.v1 + "/moderations", json={"input": "a cat"}, headers={"Authorization": f"Bearer {key}"})
            codes.append(r.status_code)
        assert codes == [200, 200, 200, 200, 429, 429]
        assert httpx.get(b.url + "/readyz").json()["checks"]["redis"] == "ok"
        assert a.store.count_audit() >= 6
