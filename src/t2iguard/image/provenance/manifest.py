"""Signed C2PA manifests with ``c2pa-python`` (the Content Authenticity Initiative's SDK).

A manifest (C2PA Technical Specification 2.x) binds assertions to the image bytes with a hash and
an X.509 signature: here, that the image was produced by a generative model (the ``c2pa.created``
action with IPTC digital source type ``trainedAlgorithmicMedia``, as the spec's §18 and the
DALL·E 3 / Firefly manifests do), which generator produced it, and which t2iguard decision and
policy version released it. Any change to the pixels afterwards breaks the hash; verification
reports ``Invalid`` with the failing codes.

Bring your own certificate: ``cert_chain`` is a PEM file with the signing (end-entity) certificate
first, then its intermediates; ``private_key`` (or the environment variable named by
``private_key_env``) holds the leaf's PEM private key. The certificate must carry the
digitalSignature key usage and an extended key usage C2PA accepts (emailProtection,
documentSigning, or the C2PA claim-signing EKU); ``t2iguard provenance test-cert DIR`` writes a
throw-away chain for trials. Verifiers report ``Trusted`` only when the chain leads to a trust
anchor they were given.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from t2iguard import __version__
from t2iguard.core.errors import ConfigurationError, InputError, MissingDependencyError
from t2iguard.core.inputs import ImageItem
from t2iguard.core.stage import ImageContext, ProvenanceOutput, ProvenanceStage

AI_GENERATED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
DECISION_ASSERTION = "org.t2iguard.decision"
MIME = {"png": "image/png", "jpeg": "image/jpeg"}
ALGORITHMS = ("es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519")


def _c2pa() -> Any:
    try:
        import c2pa
    except ImportError as exc:
        raise MissingDependencyError("c2pa-python", "provenance", "C2PA manifests") from exc
    return c2pa


def _settings(c2pa: Any, *, thumbnail: bool = False, trust_anchors: str | None = None) -> Any:
    cfg: dict[str, Any] = {"builder": {"thumbnail": {"enabled": thumbnail}}}
    if trust_anchors:
        cfg["trust"] = {"trust_anchors": trust_anchors}
        cfg["verify"] = {"verify_trust": True}
    return c2pa.Context(settings=c2pa.Settings.from_dict(cfg))


def encode(image: Image.Image, fmt: str, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpeg":
        image.convert("RGB").save(buf, "JPEG", quality=quality)
    else:
        image.save(buf, "PNG")
    return buf.getvalue()


def build_manifest(
    *,
    title: str,
    decision_id: str | None,
    policy: dict[str, Any] | None,
    generator: str | None,
    watermark: str | None = None,
) -> dict[str, Any]:
    """The manifest definition t2iguard signs (no prompt: it may be personal data)."""
    action: dict[str, Any] = {"action": "c2pa.created", "digitalSourceType": AI_GENERATED}
    if generator:
        action["softwareAgent"] = {"name": generator}
    decision: dict[str, Any] = {"decision_id": decision_id, "policy": policy, "t2iguard": __version__}
    if watermark:
        decision["watermark"] = watermark
    return {
        "claim_generator_info": [{"name": "t2iguard", "version": __version__}],
        "title": title,
        "format": "image/png",
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [action]}},
            {"label": DECISION_ASSERTION, "data": decision},
        ],
    }


class Signer:
    """A C2PA signer from a PEM certificate chain and private key."""

    def __init__(self, chain_pem: str, key_pem: str, *, alg: str = "es256", tsa_url: str | None = None) -> None:
        if alg not in ALGORITHMS:
            raise ConfigurationError(f"unknown C2PA signing algorithm {alg!r}; one of {', '.join(ALGORITHMS)}")
        if "BEGIN CERTIFICATE" not in chain_pem:
            raise ConfigurationError("C2PA certificate chain is not PEM (no 'BEGIN CERTIFICATE')")
        if "PRIVATE KEY" not in key_pem:
            raise ConfigurationError("C2PA private key is not PEM (no 'PRIVATE KEY')")
        self.chain_pem, self.key_pem, self.alg, self.tsa_url = chain_pem, key_pem, alg, tsa_url

    @classmethod
    def from_files(cls, chain: str | Path, key: str | Path | None = None, **kw: Any) -> Signer:
        try:
            chain_pem = Path(chain).read_text()
        except OSError as exc:
            raise ConfigurationError(f"cannot read C2PA certificate chain {chain}: {exc}") from None
        key_env = kw.pop("key_env", None)
        if key is not None:
            try:
                key_pem = Path(key).read_text()
            except OSError as exc:
                raise ConfigurationError(f"cannot read C2PA private key {key}: {exc}") from None
        elif key_env:
            key_pem = os.environ.get(key_env, "")
            if not key_pem:
                raise ConfigurationError(f"environment variable {key_env} (C2PA private key) is not set")
        else:
            raise ConfigurationError("C2PA signing needs a private key file or environment variable")
        return cls(chain_pem, key_pem, **kw)

    def sign(self, data: bytes, mime: str, manifest: dict[str, Any], *, thumbnail: bool = False) -> bytes:
        """``data`` (an encoded image) with the signed manifest embedded."""
        c2pa = _c2pa()
        info = c2pa.C2paSignerInfo(self.alg, self.chain_pem.encode(), self.key_pem.encode(), self.tsa_url)
        try:
            signer = c2pa.Signer.from_info(info)
            out = io.BytesIO()
            with c2pa.Builder(manifest, context=_settings(c2pa, thumbnail=thumbnail)) as builder:
                builder.sign(signer, mime, io.BytesIO(data), out)
        except c2pa.C2paError as exc:
            raise ConfigurationError(f"C2PA signing failed: {exc}") from exc
        return out.getvalue()


def sniff_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise InputError("unsupported format for C2PA verification (PNG, JPEG or WebP)")


def verify(data: bytes, *, trust_anchors: str | None = None) -> dict[str, Any]:
    """Read and validate the manifest of an encoded image.

    ``state`` is ``none`` (no manifest), ``Invalid`` (a hash or signature check failed: the image
    or manifest was altered), ``Valid`` (intact, signer not checked against a trust list) or
    ``Trusted`` (intact and the chain leads to one of ``trust_anchors``).
    """
    c2pa = _c2pa()
    mime = sniff_mime(data)
    try:
        reader = c2pa.Reader(mime, io.BytesIO(data), context=_settings(c2pa, trust_anchors=trust_anchors))
    except c2pa.C2paError.ManifestNotFound:
        return {"state": "none", "valid": False, "failures": [], "manifest": None}
    except c2pa.C2paError as exc:
        return {"state": "Invalid", "valid": False, "failures": [{"code": "read.error", "explanation": str(exc)}]}
    with reader:
        state = reader.get_validation_state() or "Invalid"
        results = reader.get_validation_results() or {}
        active = reader.get_active_manifest() or {}
    failures = [
        f
        for f in (results.get("activeManifest") or {}).get("failure", [])
        if not (trust_anchors is None and f.get("code") == "signingCredential.untrusted")
    ]
    assertions = {a.get("label"): a.get("data") for a in active.get("assertions", [])}
    actions = (assertions.get("c2pa.actions.v2") or assertions.get("c2pa.actions") or {}).get("actions", [])
    return {
        "state": state,
        "valid": state in ("Valid", "Trusted") and not failures,
        "failures": [{"code": f.get("code"), "explanation": f.get("explanation")} for f in failures],
        "ai_generated": any(a.get("digitalSourceType") == AI_GENERATED for a in actions),
        "decision": assertions.get(DECISION_ASSERTION),
        "signer": active.get("signature_info"),
        "claim_generator": active.get("claim_generator_info"),
        "manifest": active.get("label"),
    }


class C2PAStage(ProvenanceStage):
    """Signs a C2PA manifest into each released image (returned as encoded bytes)."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        cert_chain: str = Field(description="PEM file: signing certificate first, then intermediates")
        private_key: str | None = Field(default=None, description="PEM file with the signing key")
        private_key_env: str | None = Field(default=None, description="environment variable holding the PEM key")
        alg: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = "es256"
        tsa_url: str | None = Field(default=None, description="RFC 3161 time-stamp authority, if any")
        format: Literal["png", "jpeg"] = "png"
        jpeg_quality: int = Field(default=95, ge=1, le=100)
        thumbnail: bool = False

    covers: ClassVar[frozenset[Any]] = frozenset()

    def _signer(self) -> Signer:
        p: C2PAStage.Params = self.params  # type: ignore[assignment]
        return self.models.get(
            ("c2pa-signer", p.cert_chain, p.private_key, p.private_key_env, p.alg),
            lambda: Signer.from_files(
                p.cert_chain, p.private_key, key_env=p.private_key_env, alg=p.alg, tsa_url=p.tsa_url
            ),
        )

    def warmup(self) -> None:
        self._signer()

    def apply(self, items: Sequence[ImageItem], payload: str, ctx: ImageContext) -> list[ProvenanceOutput]:
        p: C2PAStage.Params = self.params  # type: ignore[assignment]
        signer = self._signer()
        pol = self.policy.policy.ref.model_dump(mode="json")
        out = []
        for i, item in enumerate(items):
            manifest = build_manifest(
                title=f"{payload}-{i}.{'jpg' if p.format == 'jpeg' else 'png'}",
                decision_id=payload,
                policy=pol,
                generator=ctx.metadata.get("generator"),
                watermark=ctx.metadata.get("watermark"),
            )
            manifest["format"] = MIME[p.format]
            signed = signer.sign(
                encode(item.image, p.format, p.jpeg_quality), MIME[p.format], manifest, thumbnail=p.thumbnail
            )
            out.append(
                ProvenanceOutput(
                    image=item.image,
                    payload=None,  # the watermark stage's payload stays the image's record
                    encoded=signed,
                    details={"c2pa": json.dumps({"format": p.format, "bytes": len(signed)})},
                )
            )
        return out
