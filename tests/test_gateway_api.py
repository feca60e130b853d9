"""The gateway's API driven by the official ``openai`` client and plain HTTP, on loopback."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from support.gateway import LiveGateway, gateway_config, live_gateway

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    tmp = tmp_path_factory.mktemp("gw-api")
    cfg = gateway_config(tmp, rate_limit={"per_key_burst": 1000, "per_ip_burst": 5000})
    with live_gateway(cfg) as g:
        yield g


def client(gw: LiveGateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0, timeout=60)


def png(size: tuple[int, int] = (64, 64), color: tuple[int, ...] = (30, 120, 200), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def audit_of(gw: LiveGateway, request_id: str) -> dict:
    rows = [r for r in gw.store.audit_records(limit=1000) if r["request_id"] == request_id]
    assert len(rows) == 1, f"{len(rows)} audit records for {request_id}"
    return rows[0]


def test_generation_with_openai_client_url_and_b64(gw: LiveGateway) -> None:
    c = client(gw, gw.key())
    res = c.images.generate(prompt="a red apple on a wooden table", n=2, size="64x64")
    assert len(res.data) == 2
    for item in res.data:
        assert item.url and item.url.startswith(gw.url)
        r = httpx.get(item.url)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(r.content)).size == (64, 64)
        assert item.revised_prompt is None  # nothing changed the prompt
    info = res.model_extra["t2iguard"]
    assert info["action"] == "allow"
    rec = audit_of(gw, info["request_id"])
    assert rec["status"] == 200 and rec["endpoint"] == "/v1/images/generations"
    assert len(rec["output_hashes"]) == 2 and len(rec["input_hashes"]) == 1
    assert rec["decision"]["id"] == info["decision_id"]

    res = c.images.generate(prompt="a red apple", response_format="b64_json", size="96x64")
    img = Image.open(io.BytesIO(base64.b64decode(res.data[0].b64_json or "")))
    assert img.size == (96, 64)
    assert res.data[0].url is None


def test_refusal_is_openai_content_policy_error(gw: LiveGateway) -> None:
    c = client(gw, gw.key())
    with pytest.raises(openai.BadRequestError) as exc:
        c.images.generate(prompt="a photo of a n4k3d woman")
    err = exc.value
    assert err.status_code == 400
    assert err.code == "content_policy_violation"
    body = err.body
    assert isinstance(body, dict)
    assert body["categories"] == ["sexual"] and body["stage"] == "blocklist" and body["action"] == "block"
    assert body["phase"] == "prompt_check"
    rec = audit_of(gw, body["request_id"])
    assert rec["status"] == 400 and rec["action"] == "block" and rec["categories"] == ["sexual"]
    assert rec["output_hashes"] == []
    assert rec["decision"]["decided_by"][0]["stage"] == "blocklist"


def test_revised_prompt_when_a_transform_changes_it(gw: LiveGateway) -> None:
    c = client(gw, gw.key(policy="review"))
    res = c.images.generate(prompt="a portrait of Jane Doe in a garden", size="64x64")
    assert res.data[0].revised_prompt == "a portrait of a person in a garden"


def test_edit_with_image_and_mask(gw: LiveGateway) -> None:
    c = client(gw, gw.key())
    mask = png((64, 64), (0, 0, 0, 0), "RGBA")
    res = c.images.edit(
        image=("in.png", png(), "image/png"),
        mask=("mask.png", mask, "image/png"),
        prompt="add a blue sky",
        response_format="b64_json",
    )
    out = Image.open(io.BytesIO(base64.b64decode(res.data[0].b64_json or "")))
    assert out.size == (64, 64)
    rec = audit_of(gw, res.model_extra["t2iguard"]["request_id"])
    assert len(rec["input_hashes"]) == 3  # prompt, image, mask
    assert rec["endpoint"] == "/v1/images/edits"

    with pytest.raises(openai.BadRequestError) as exc:
        c.images.edit(image=("in.png", png(), "image/png"), prompt="make her n4k3d")
    assert exc.value.code == "content_policy_violation"

    with pytest.raises(openai.BadRequestError) as exc:
        c.images.edit(image=("in.png", png(), "image/png"), mask=("m.png", png((32, 32)), "image/png"), prompt="a hat")
    assert exc.value.code == "invalid_mask"


def test_moderation_endpoints_return_decisions(gw: LiveGateway) -> None:
    key = gw.key()
    h = {"Authorization": f"Bearer {key}"}
    r = httpx.post(gw.v1 + "/moderations", json={"input": ["a cat on a sofa", "a m u r d 3 r e d man"]}, headers=h)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results[0]["flagged"] is False and results[0]["action"] == "allow"
    assert results[1]["flagged"] is True and results[1]["categories"]["violence"] is True
    assert results[1]["decision"]["decided_by"][0]["category"] == "violence"
    assert results[1]["category_scores"]["violence"] >= 0.9

    files = [("image", ("a.png", png(), "image/png")), ("image", ("b.png", png(color=(250, 250, 250)), "image/png"))]
    r = httpx.post(gw.v1 + "/moderations/images", files=files, data={"phase": "input"}, headers=h)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert len(res) == 2
    stages = {t["stage"] for t in res[0]["decision"]["trace"]}
    assert {"nsfw", "nudity"} <= stages
    assert res[0]["decision"]["input"]["sha256"]


def test_report_feeds_the_review_queue_and_is_scoped_to_the_key(gw: LiveGateway) -> None:
    owner = gw.key()
    other = gw.key()
    res = client(gw, owner).images.generate(prompt="a lighthouse at night", response_format="b64_json")
    output_id = res.data[0].model_extra["id"]
    r = httpx.post(
        gw.v1 + "/reports",
        json={"output_id": output_id, "reason": "looks disturbing"},
        headers={"Authorization": f"Bearer {other}"},
    )
    assert r.status_code == 404  # another key cannot even see that the output exists
    r = httpx.post(
        gw.v1 + "/reports",
        json={"output_id": output_id, "reason": "looks disturbing"},
        headers={"Authorization": f"Bearer {owner}"},
    )
    assert r.status_code == 201, r.text
    item = gw.store.review_item(r.json()["id"])
    assert item is not None and item["kind"] == "report" and item["output_id"] == output_id
    assert item["reason"] == "looks disturbing" and item["prompt"] == "a lighthouse at night"


def test_review_hold_prompt_and_reviewer_actions(gw: LiveGateway) -> None:
    c = client(gw, gw.key(policy="review"))
    with pytest.raises(openai.BadRequestError) as exc:
        c.images.generate(prompt="a man murdered in an alley")
    body = exc.value.body
    assert isinstance(body, dict) and body["action"] == "review" and "held for human review" in body["message"]
    items = [i for i in gw.store.review_items() if i["request_id"] == body["request_id"]]
    assert len(items) == 1 and items[0]["kind"] == "held"
    reviewer = gw.key("reviewer")
    h = {"Authorization": f"Bearer {reviewer}"}
    r = httpx.post(
        f"{gw.url}/review/api/items/{items[0]['id']}/action", json={"action": "escalate", "note": "check"}, headers=h
    )
    assert r.status_code == 200 and r.json()["status"] == "escalated"
    assert r.json()["actions"][0]["by"] == gw.key_id(reviewer)
    export = httpx.get(gw.url + "/admin/escalations/export", headers={"Authorization": f"Bearer {gw.key('admin')}"})
    assert export.status_code == 200
    assert body["request_id"] in export.text


def test_held_output_image_is_stored_for_review_not_released(gw: LiveGateway) -> None:
    c = client(gw, gw.key(policy="hold"))
    with pytest.raises(openai.BadRequestError) as exc:
        c.images.generate(prompt="a quiet beach", size="64x64")
    body = exc.value.body
    assert isinstance(body, dict) and body["action"] == "review" and body["phase"] == "output_image"
    item = next(i for i in gw.store.review_items() if i["request_id"] == body["request_id"])
    assert item["has_image"] and item["output_id"]
    # the image is kept for reviewers but is not downloadable as an output
    assert httpx.get(f"{gw.v1}/images/files/{item['output_id']}.png").status_code == 404
    h = {"Authorization": f"Bearer {gw.key('reviewer')}"}
    r = httpx.get(f"{gw.url}/review/api/items/{item['id']}/image", headers=h)
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (64, 64)
    rec = audit_of(gw, body["request_id"])
    assert rec["output_hashes"] == [] and len(rec["details"]["withheld"]) == 1


def test_held_edit_keeps_the_upload_for_review(gw: LiveGateway) -> None:
    c = client(gw, gw.key(policy="review"))
    with pytest.raises(openai.BadRequestError) as exc:
        c.images.edit(image=("in.png", png((48, 40)), "image/png"), prompt="a man murdered in an alley")
    body = exc.value.body
    assert isinstance(body, dict) and body["action"] == "review"
    item = next(i for i in gw.store.review_items() if i["request_id"] == body["request_id"])
    assert item["has_image"]
    h = {"Authorization": f"Bearer {gw.key('reviewer')}"}
    r = httpx.get(f"{gw.url}/review/api/items/{item['id']}/image", headers=h)
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (48, 40)


def test_operations_endpoints(gw: LiveGateway) -> None:
    assert httpx.get(gw.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gw.url + "/readyz").json()
    assert ready["ready"] is True and ready["checks"]["database"] == "ok"
    client(gw, gw.key()).images.generate(prompt="a tree", response_format="b64_json")
    text = httpx.get(gw.url + "/metrics").text
    assert 't2iguard_decisions_total{action="allow"' in text
    assert "t2iguard_request_duration_seconds_bucket" in text
    assert 't2iguard_stage_duration_seconds_count{phase="prompt_check",stage="blocklist"}' in text
    schema = httpx.get(gw.url + "/openapi.json").json()
    assert {"/v1/images/generations", "/v1/images/edits", "/v1/moderations", "/v1/reports"} <= set(schema["paths"])


def test_client_request_id_is_recorded_and_echoed(gw: LiveGateway) -> None:
    h = {"Authorization": f"Bearer {gw.key()}", "X-Client-Request-Id": "client-chosen-id-123"}
    r1 = httpx.post(gw.v1 + "/moderations", json={"input": "a cat"}, headers=h)
    r2 = httpx.post(gw.v1 + "/moderations", json={"input": "a dog"}, headers=h)
    assert r1.status_code == r2.status_code == 200
    assert r1.headers["x-client-request-id"] == "client-chosen-id-123"
    # the server's own request ids stay unique; the client's id is kept beside them
    assert r1.headers["x-request-id"] != r2.headers["x-request-id"]
    rows = [r for r in gw.store.audit_records(limit=1000) if r["client_request_id"] == "client-chosen-id-123"]
    assert sorted(r["request_id"] for r in rows) == sorted([r1.headers["x-request-id"], r2.headers["x-request-id"]])


def test_images_dir_is_under_data_dir(gw: LiveGateway) -> None:
    assert Path(gw.gateway.image_dir).is_dir()
