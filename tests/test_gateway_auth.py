"""Every endpoint with no key, a wrong key, a revoked key, a suspended key and a lower role."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from support.gateway import LiveGateway, gateway_config, live_gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    tmp = tmp_path_factory.mktemp("gw-auth")
    cfg = gateway_config(tmp, rate_limit={"per_key_burst": 1000, "per_ip_burst": 5000})
    with live_gateway(cfg) as g:
        yield g


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(buf, format="PNG")
    return buf.getvalue()


# (method, path, role, request kwargs)
ENDPOINTS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("POST", "/v1/images/generations", "user", {"json": {"prompt": "a cat"}}),
    ("POST", "/v1/images/edits", "user", {"files": {"image": ("a.png", _png(), "image/png")}, "data": {"prompt": "x"}}),
    ("POST", "/v1/moderations", "user", {"json": {"input": "a cat"}}),
    ("POST", "/v1/moderations/images", "user", {"files": {"image": ("a.png", _png(), "image/png")}}),
    ("POST", "/v1/reports", "user", {"json": {"output_id": "img_x", "reason": "r"}}),
    ("GET", "/review/api/items", "reviewer", {}),
    ("GET", "/review/api/items/{item_id}", "reviewer", {}),
    ("GET", "/review/api/items/{item_id}/image", "reviewer", {}),
    ("POST", "/review/api/items/{item_id}/action", "reviewer", {"json": {"action": "approve"}}),
    ("POST", "/review/api/keys/{key_id}/lift", "reviewer", {"json": {}}),
    ("POST", "/admin/keys", "admin", {"json": {"name": "x"}}),
    ("GET", "/admin/keys", "admin", {}),
    ("GET", "/admin/keys/{key_id}", "admin", {}),
    ("POST", "/admin/keys/{key_id}", "admin", {"json": {"note": "x"}}),
    ("GET", "/admin/audit", "admin", {}),
    ("GET", "/admin/escalations/export", "admin", {"params": {"mark": "false"}}),
]
LOWER = {"user": None, "reviewer": "user", "admin": "reviewer"}
PUBLIC = {"/v1/images/files/{name}"}  # capability URLs: the unguessable id is the credential


def _call(gw: LiveGateway, method: str, path: str, kwargs: dict[str, Any], key: str | None) -> httpx.Response:
    url = gw.url + path.replace("{item_id}", "rev_none").replace("{key_id}", "key_000000000000")
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.request(method, url, headers=headers, timeout=60, **kwargs)


def test_every_api_route_is_in_the_matrix(gw: LiveGateway) -> None:
    schema = httpx.get(gw.url + "/openapi.json").json()
    routes = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops if p not in PUBLIC}
    assert routes == {(m, p) for m, p, _, _ in ENDPOINTS}


@pytest.mark.parametrize(("method", "path", "role", "kwargs"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS])
def test_auth_matrix(gw: LiveGateway, method: str, path: str, role: str, kwargs: dict[str, Any]) -> None:
    before = gw.store.count_audit()
    r = _call(gw, method, path, kwargs, None)
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"

    for wrong in ("sk-not-a-t2iguard-key", "t2g_000000000000_" + "x" * 43, gw.key(role)[:-2] + "zz"):
        r = _call(gw, method, path, kwargs, wrong)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", wrong

    r = httpx.request(method, gw.url + path, headers={"Authorization": "Basic abc"}, timeout=60)
    assert r.status_code == 401

    revoked = gw.key(role)
    gw.store.update_key(gw.key_id(revoked), actor="test", revoke=True)
    r = _call(gw, method, path, kwargs, revoked)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"

    suspended = gw.key(role)
    gw.store.update_key(gw.key_id(suspended), actor="test", suspend_hours=1, note="test suspension")
    r = _call(gw, method, path, kwargs, suspended)
    assert r.status_code == 403 and r.json()["error"]["code"] == "key_suspended"
    assert "test suspension" in r.json()["error"]["message"]

    lower = LOWER[role]
    if lower is not None:
        r = _call(gw, method, path, kwargs, gw.key(lower))
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_role"

    # the right key gets past authorization (a 2xx, or a 4xx about the request itself)
    r = _call(gw, method, path, kwargs, gw.key(role))
    assert r.status_code not in (401, 403), r.text
    # every refused request was audited too
    assert gw.store.count_audit() >= before + 6


def test_user_keys_cannot_read_other_keys_data(gw: LiveGateway) -> None:
    alice, bob = gw.key(), gw.key()
    r = httpx.post(
        gw.v1 + "/images/generations",
        json={"prompt": "a boat", "response_format": "b64_json"},
        headers={"Authorization": f"Bearer {alice}"},
    )
    out_id = r.json()["data"][0]["id"]
    # not downloadable (b64 responses are not kept), not reportable by bob, no admin/review reads for users
    assert httpx.get(f"{gw.v1}/images/files/{out_id}.png").status_code == 404
    rb = httpx.post(
        gw.v1 + "/reports", json={"output_id": out_id, "reason": "x"}, headers={"Authorization": f"Bearer {bob}"}
    )
    assert rb.status_code == 404
    for path in ("/admin/audit", "/review/api/items", f"/admin/keys/{gw.key_id(alice)}"):
        assert httpx.get(gw.url + path, headers={"Authorization": f"Bearer {bob}"}).status_code == 403


def test_secrets_are_stored_hashed(gw: LiveGateway) -> None:
    secret = gw.key()
    with gw.store.reader.connect() as conn:
        rows = conn.exec_driver_sql("SELECT secret_sha256 FROM api_keys").fetchall()
    assert all(secret not in row[0] for row in rows)
    assert any(len(row[0]) == 64 for row in rows)
