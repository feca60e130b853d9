"""Rate limits (429 + headers), strikes with decay, suspensions, minors escalation and its export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from support.gateway import LiveGateway, gateway_config, live_gateway
from t2iguard.core.policy import PenaltyPolicy, SuspensionRule, policy_from_dict
from t2iguard.core.types import Category
from t2iguard.service.db import Strike
from t2iguard.service.ratelimit import MemoryRateLimiter
from t2iguard.service.store import ESCALATION_FORMAT, RequestCommit, Store


def gen(gw: LiveGateway, key: str, prompt: str, **kw: object) -> httpx.Response:
    body = {"prompt": prompt, "response_format": "b64_json", **kw}
    return httpx.post(gw.v1 + "/images/generations", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    tmp = tmp_path_factory.mktemp("gw-pen")
    cfg = gateway_config(tmp, rate_limit={"per_key_rps": 0.001, "per_key_burst": 3, "per_ip_burst": 10_000})
    with live_gateway(cfg) as g:
        yield g


def test_key_rate_limit_429_with_retry_after_and_headers(gw: LiveGateway) -> None:
    key = gw.key()
    h = {"Authorization": f"Bearer {key}"}
    codes = []
    last = None
    for _ in range(5):
        last = httpx.post(gw.v1 + "/moderations", json={"input": "a cat"}, headers=h)
        codes.append(last.status_code)
    assert codes == [200, 200, 200, 429, 429]
    assert last is not None and last.status_code == 429
    assert int(last.headers["retry-after"]) >= 1
    assert last.headers["x-ratelimit-limit-requests"] == "3"
    assert last.headers["x-ratelimit-remaining-requests"] == "0"
    assert last.json()["error"]["code"] == "rate_limit_exceeded"
    # other keys have their own bucket
    assert (
        httpx.post(
            gw.v1 + "/moderations", json={"input": "a cat"}, headers={"Authorization": f"Bearer {gw.key()}"}
        ).status_code
        == 200
    )
    # refused requests are audited with their status
    recs = [r for r in gw.store.audit_records(key_id=gw.key_id(key), limit=100)]
    assert sorted(r["status"] for r in recs) == sorted(codes)


def test_ip_rate_limit(tmp_path: Path) -> None:
    cfg = gateway_config(tmp_path, rate_limit={"per_ip_rps": 0.001, "per_ip_burst": 2, "per_key_burst": 100})
    with live_gateway(cfg) as g:
        codes = [httpx.get(g.url + "/admin/keys").status_code for _ in range(4)]  # no key: still counted per IP
        assert codes[:2] == [401, 401] and codes[2:] == [429, 429]
        r = httpx.get(g.url + "/admin/keys")
        assert "x-ratelimit-limit-ip-requests" in r.headers and r.headers["retry-after"]


def test_token_bucket_refills() -> None:
    now = [100.0]
    lim = MemoryRateLimiter(clock=lambda: now[0])
    assert [lim.acquire("b", 2.0, 3).allowed for _ in range(4)] == [True, True, True, False]
    v = lim.acquire("b", 2.0, 3)
    assert not v.allowed and v.retry_after_s == pytest.approx(0.5) and v.remaining == 0
    now[0] += 0.5  # one token back
    assert lim.acquire("b", 2.0, 3).allowed and not lim.acquire("b", 2.0, 3).allowed
    now[0] += 60  # full again, never above the burst
    assert [lim.acquire("b", 2.0, 3).allowed for _ in range(4)] == [True, True, True, False]
    assert lim.acquire("other", 2.0, 3).allowed  # buckets are independent


def test_strikes_suspend_then_reviewer_lifts(tmp_path: Path) -> None:
    # the "review" policy suspends at 3 strikes for an hour
    cfg = gateway_config(tmp_path, rate_limit={"enabled": False})
    with live_gateway(cfg) as g:
        key = g.key(policy="review")
        kid = g.key_id(key)
        for _ in range(3):
            r = gen(g, key, "a photo of a n4k3d woman")
            assert r.status_code == 400 and r.json()["error"]["code"] == "content_policy_violation"
        r = gen(g, key, "a red apple")
        assert r.status_code == 403 and r.json()["error"]["code"] == "key_suspended"
        info = g.store.get_key(kid)
        assert info is not None and info.suspended() and not info.suspended_indefinitely
        assert info.suspended_until is not None
        assert "3.0 strikes >= 3" in (info.suspension_reason or "")
        assert g.store.strikes(kid)["sexual"] == pytest.approx(3.0, abs=0.01)
        reviewer = g.key("reviewer")
        r = httpx.post(
            f"{g.url}/review/api/keys/{kid}/lift",
            json={"note": "appeal"},
            headers={"Authorization": f"Bearer {reviewer}"},
        )
        assert r.status_code == 200 and r.json()["suspended"] is False
        assert gen(g, key, "a red apple").status_code == 200
        assert g.store.strikes(kid)["sexual"] == 0.0


def test_minors_block_suspends_at_once_and_escalates(tmp_path: Path) -> None:
    cfg = gateway_config(tmp_path, rate_limit={"enabled": False})
    with live_gateway(cfg) as g:
        key = g.key(name="bad actor")
        kid = g.key_id(key)
        r = gen(g, key, "a naked child", user="end-user-42")
        err = r.json()["error"]
        assert r.status_code == 400 and "minors" in err["categories"]
        info = g.store.get_key(kid)
        assert info is not None and info.suspended_indefinitely
        assert gen(g, key, "a red apple").status_code == 403
        items = [i for i in g.store.review_items() if i["kind"] == "escalation"]
        assert len(items) == 1 and items[0]["key_id"] == kid
        admin = g.key("admin")
        r = httpx.get(g.url + "/admin/escalations/export", headers={"Authorization": f"Bearer {admin}"})
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert len(lines) == 1
        inc = lines[0]
        assert inc["format"] == ESCALATION_FORMAT and inc["trigger"] == "automatic"
        assert "minors" in inc["categories"]
        assert inc["account"]["key_id"] == kid and inc["account"]["key_name"] == "bad actor"
        assert inc["request"]["ip"] == "127.0.0.1" and inc["request"]["user"] == "end-user-42"
        assert inc["request"]["request_id"] == err["request_id"]
        assert len(inc["input_sha256"]) == 1 and len(inc["input_sha256"][0]) == 64
        assert any(t["category"] == "minors" for t in inc["decision"]["trace"])
        # exported incidents are marked; a second export is empty unless asked for everything
        again = httpx.get(g.url + "/admin/escalations/export", headers={"Authorization": f"Bearer {admin}"})
        assert again.text == ""
        everything = httpx.get(
            g.url + "/admin/escalations/export",
            params={"include_exported": "true"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert len(everything.text.splitlines()) == 1


def test_moderation_checks_do_not_count_unless_configured(tmp_path: Path) -> None:
    cfg = gateway_config(tmp_path, rate_limit={"enabled": False})
    with live_gateway(cfg) as g:
        key = g.key(policy="review")
        for _ in range(4):
            r = httpx.post(
                g.v1 + "/moderations", json={"input": "n4k3d woman"}, headers={"Authorization": f"Bearer {key}"}
            )
            assert r.status_code == 200 and r.json()["results"][0]["flagged"]
        assert g.store.strikes(g.key_id(key)) == {}


def test_strike_decay(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.migrate()
    info, _ = store.create_key("k")
    pp = PenaltyPolicy(half_life_hours=1.0, suspend=[SuspensionRule(strikes=100)], strikes={Category.SEXUAL: 4.0})

    def block(i: int) -> None:
        store.commit_request(
            RequestCommit(
                audit={
                    "request_id": f"r{i}",
                    "method": "POST",
                    "path": "/",
                    "endpoint": "/",
                    "status": 400,
                    "key_id": info.id,
                    "categories": ["sexual"],
                    "input_hashes": [],
                    "output_hashes": [],
                    "details": {},
                    "latency_ms": 0.0,
                },
                penalize=[Category.SEXUAL],
                penalties=pp,
            )
        )

    block(0)
    assert store.strikes(info.id)["sexual"] == pytest.approx(4.0)
    # age the strikes by two half-lives: 4 -> 1, then a new block adds 4
    with store._write() as s, s.begin():
        row = s.get(Strike, (info.id, "sexual"))
        assert row is not None
        row.updated_at = row.updated_at - timedelta(hours=2)
    block(1)
    assert store.strikes(info.id)["sexual"] == pytest.approx(5.0, abs=0.01)
    store.close()


def test_policy_penalties_are_validated() -> None:
    with pytest.raises(Exception, match="strikes"):
        policy_from_dict({"name": "x", "penalties": {"strikes": {"sexual": -1}}})
    with pytest.raises(Exception, match="penalties"):
        policy_from_dict({"name": "x", "penalties": {"unknown": 1}})
    p = policy_from_dict({"name": "x", "penalties": {"immediate": [], "escalate": []}})
    # minors is zero tolerance: immediate and escalated whatever the file says
    assert p.penalties.is_immediate(Category.MINORS) and p.penalties.is_escalated(Category.MINORS)
