"""Watermarks and C2PA manifests: embed -> read back, sign -> verify -> tamper -> verify fails,
the provenance stages in the pipeline, and the ``t2iguard provenance`` commands."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("imwatermark")
pytest.importorskip("c2pa")
skimage_data = pytest.importorskip("skimage.data")

from t2iguard.cli.main import app  # noqa: E402
from t2iguard.core.errors import InputError  # noqa: E402
from t2iguard.core.pipeline import SafetyStack  # noqa: E402
from t2iguard.core.policy import policy_from_dict  # noqa: E402
from t2iguard.core.stage import ModelCache  # noqa: E402
from t2iguard.generate.base import GenerationRequest  # noqa: E402
from t2iguard.image.provenance.certs import make_test_credentials  # noqa: E402
from t2iguard.image.provenance.manifest import Signer, build_manifest, verify  # noqa: E402
from t2iguard.image.provenance.watermark import KNOWN_MARKS, WatermarkCodec, crc16, payload_bits  # noqa: E402

DECISION = "3f2a9c0d1e7b4a5c9d8e7f6a5b4c3d2e"


def photo(name: str = "astronaut", size: int = 512) -> Image.Image:
    return Image.fromarray(getattr(skimage_data, name)()).convert("RGB").resize((size, size))


def test_crc_and_payload_layout() -> None:
    bits = payload_bits(DECISION, "dwtDctSvd")
    assert len(bits) == 64 and bits[48:] == crc16(bits[:48])
    assert len(payload_bits(DECISION, "rivaGan")) == 32
    with pytest.raises(ValueError, match="hex digits"):
        payload_bits("not-hex-at-all", "dwtDct")


@pytest.mark.parametrize(("method", "image"), [("dwtDctSvd", "astronaut"), ("dwtDct", "camera")])
def test_watermark_round_trip_and_unmarked_images(method: str, image: str) -> None:
    codec = WatermarkCodec(method)  # type: ignore[arg-type]
    img = photo(image)
    marked = codec.embed(img, DECISION)
    psnr = 10 * np.log10(255**2 / np.mean((np.asarray(marked, float) - np.asarray(img, float)) ** 2))
    assert psnr > 35  # invisible
    det = codec.detect(marked)
    assert det.found and det.payload == DECISION[:12]
    assert det.bit_accuracy(payload_bits(DECISION, method)) == 1.0  # type: ignore[arg-type]
    clean = codec.detect(img)
    assert not clean.found and clean.payload is None


def test_detector_recognises_stable_diffusion_marks() -> None:
    codec = WatermarkCodec("dwtDct")
    sdxl = codec.embed_bits(photo("camera"), KNOWN_MARKS["stable-diffusion-xl"])
    assert "stable-diffusion-xl" in codec.detect(sdxl).known_marks
    assert codec.detect(photo("camera")).known_marks == {}


def test_small_images_are_refused_clearly() -> None:
    with pytest.raises(InputError, match="at least 256x256"):
        WatermarkCodec("dwtDctSvd").embed(Image.new("RGB", (200, 200)), DECISION)


@pytest.mark.slow
def test_rivagan_round_trip() -> None:
    codec = WatermarkCodec("rivaGan")
    img = photo(size=256)
    det = codec.detect(codec.embed(img, DECISION))
    assert det.found and det.payload == DECISION[:4]


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_c2pa_sign_verify_tamper() -> None:
    cred = make_test_credentials()
    signer = Signer(cred.chain_pem, cred.key_pem)
    manifest = build_manifest(
        title="x.png", decision_id=DECISION, policy={"name": "p", "version": "7"}, generator="tiny"
    )
    signed = signer.sign(_png(photo(size=64)), "image/png", manifest)
    rep = verify(signed)
    assert rep["state"] == "Valid" and rep["valid"] and rep["ai_generated"]
    assert rep["decision"]["decision_id"] == DECISION and rep["decision"]["policy"]["version"] == "7"
    assert verify(signed, trust_anchors=cred.ca_pem)["state"] == "Trusted"
    other = make_test_credentials(org="someone else")
    assert verify(signed, trust_anchors=other.ca_pem)["state"] != "Trusted"
    # change one pixel byte inside the image data: the hash no longer matches
    tampered = bytearray(signed)
    tampered[signed.find(b"IDAT") + 20] ^= 0x01
    bad = verify(bytes(tampered))
    assert bad["state"] == "Invalid" and not bad["valid"]
    assert any(f["code"] == "assertion.dataHash.mismatch" for f in bad["failures"])
    # re-encoding the pixels drops the manifest altogether
    assert verify(_png(Image.open(io.BytesIO(signed))))["state"] == "none"


def test_c2pa_signs_jpeg_too() -> None:
    cred = make_test_credentials()
    buf = io.BytesIO()
    photo(size=64).save(buf, "JPEG", quality=90)
    manifest = build_manifest(title="x.jpg", decision_id=DECISION, policy=None, generator=None)
    manifest["format"] = "image/jpeg"
    assert verify(Signer(cred.chain_pem, cred.key_pem).sign(buf.getvalue(), "image/jpeg", manifest))["valid"]


class _PhotoGenerator:
    name = "photo-stub"

    def generate(self, request: GenerationRequest):  # type: ignore[no-untyped-def]
        from t2iguard.generate.base import GenerationResult

        return GenerationResult(images=[photo()], seed=1)


def test_pipeline_marks_and_signs_released_images(tmp_path: Path) -> None:
    paths = make_test_credentials().write(tmp_path / "pki")
    policy = policy_from_dict(
        {
            "name": "prov",
            "version": "3",
            "stages": [
                {"stage": "watermark", "params": {"method": "dwtDctSvd", "verify": True}},
                {"stage": "c2pa", "params": {"cert_chain": str(paths["chain"]), "private_key": str(paths["key"])}},
            ],
        }
    )
    stack = SafetyStack(policy, models=ModelCache(), generator=_PhotoGenerator())
    out = stack.generate(GenerationRequest(prompt="a lighthouse"))
    d = out.decision
    assert d.allowed and len(out.images) == 1 and out.encoded[0] is not None
    assert d.images[0].watermark == f"dwtDctSvd:{d.id[:12]}"
    rep = verify(out.encoded[0], trust_anchors=paths["ca"].read_text())
    assert rep["state"] == "Trusted"
    assert rep["decision"]["decision_id"] == d.id and rep["decision"]["policy"]["version"] == "3"
    assert rep["decision"]["watermark"] == f"dwtDctSvd:{d.id[:12]}"
    # the signed bytes carry the watermarked pixels
    assert WatermarkCodec("dwtDctSvd").detect(Image.open(io.BytesIO(out.encoded[0]))).payload == d.id[:12]

    # CLI: verify reports both, and finds the decision in an audit log
    img_path = tmp_path / "out.png"
    img_path.write_bytes(out.encoded[0])
    audit = tmp_path / "audit.jsonl"
    audit.write_text(d.model_dump_json() + "\n")
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["provenance", "verify", "--json", str(img_path), "--trust-anchors", str(paths["ca"]), "--audit", str(audit)],
    )
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout.splitlines()[0])
    svd = next(w for w in rep["watermark"] if w["method"] == "dwtDctSvd")
    assert svd["found"] and svd["payload"] == d.id[:12] and svd["audit"][0]["id"] == d.id
    assert rep["c2pa"]["state"] == "Trusted"
    # tamper: flip a pixel byte; the manifest check fails, the watermark survives
    data = bytearray(out.encoded[0])
    data[data.find(b"IDAT") + 40] ^= 0x01
    img_path.write_bytes(bytes(data))
    res = runner.invoke(app, ["provenance", "verify", str(img_path)])
    assert res.exit_code in (0, 1)
    assert "Invalid" in res.stdout or "error" in res.output


def test_cli_mark_sign_verify(tmp_path: Path) -> None:
    runner = CliRunner()
    src = tmp_path / "in.png"
    photo().save(src)
    assert runner.invoke(app, ["provenance", "test-cert", str(tmp_path / "pki")]).exit_code == 0
    marked = tmp_path / "marked.png"
    res = runner.invoke(app, ["provenance", "mark", str(src), "-o", str(marked), "--payload", DECISION])
    assert res.exit_code == 0, res.output
    signed = tmp_path / "signed.png"
    res = runner.invoke(
        app,
        [
            "provenance",
            "sign",
            str(marked),
            "-o",
            str(signed),
            "--decision-id",
            DECISION,
            "--cert",
            str(tmp_path / "pki/chain.pem"),
            "--key",
            str(tmp_path / "pki/signer.key"),
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["provenance", "verify", str(signed), str(src), str(tmp_path / "missing.png")])
    lines = res.stdout.splitlines()
    assert res.exit_code == 1  # one input was missing; the others are still reported
    assert f"dwtDctSvd={DECISION[:12]}" in lines[0] and "c2pa Valid" in lines[0]
    assert "watermark none; c2pa none" in lines[1]


def test_embedding_retries_with_headroom_where_the_mark_clips() -> None:
    codec = WatermarkCodec("dwtDctSvd")
    white = Image.new("RGB", (512, 512), (255, 255, 255))
    assert codec.detect(codec.embed(white, DECISION, verify=False)).payload is None  # clipped away
    marked = codec.embed(white, DECISION)  # read back, retried with range headroom
    assert codec.detect(marked).payload == DECISION[:12]
    assert np.asarray(marked).min() > 200  # still white to the eye


def test_c2pa_key_from_environment_and_missing_key_fails_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = make_test_credentials().write(tmp_path / "pki")
    cfg = {"stage": "c2pa", "params": {"cert_chain": str(paths["chain"]), "private_key_env": "T2I_TEST_C2PA_KEY"}}
    policy = policy_from_dict({"name": "env", "stages": [cfg]})
    monkeypatch.setenv("T2I_TEST_C2PA_KEY", paths["key"].read_text())
    out = SafetyStack(policy, models=ModelCache(), generator=_PhotoGenerator()).generate(GenerationRequest(prompt="x"))
    assert out.decision.allowed and verify(out.encoded[0])["valid"]
    monkeypatch.delenv("T2I_TEST_C2PA_KEY")
    out = SafetyStack(policy, models=ModelCache(), generator=_PhotoGenerator()).generate(GenerationRequest(prompt="x"))
    assert out.decision.action == "block" and out.images == []
    assert "T2I_TEST_C2PA_KEY" in out.decision.errors[0]
