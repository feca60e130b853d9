"""``t2iguard provenance``: read back watermarks and C2PA manifests, and mark or sign images."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from t2iguard.core.errors import ConfigurationError, InputError, T2IGuardError
from t2iguard.core.inputs import load_image

app = typer.Typer(help="Watermarks and C2PA manifests: verify, mark, sign.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="one JSON object per image (JSON Lines)")]
METHODS_HELP = "watermark methods to try, comma-separated: dwtDct, dwtDctSvd, rivaGan (slow on CPU)"


def _echo(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


def _err(msg: str) -> None:
    sys.stderr.write(f"error: {msg}\n")


def _audit_lookup(audit: Path, prefix: str) -> list[dict[str, Any]]:
    """Decisions in a JSON-lines audit log whose id starts with ``prefix``."""
    found = []
    with audit.open(encoding="utf-8") as fh:
        for line in fh:
            if f'"id":"{prefix}' in line.replace(" ", ""):
                d = json.loads(line)
                if str(d.get("id", "")).startswith(prefix):
                    found.append({"id": d["id"], "created_at": d.get("created_at"), "action": d.get("action")})
    return found


def verify_file(
    path: Path, *, methods: list[str], trust_anchors: str | None = None, audit: Path | None = None
) -> dict[str, Any]:
    """Watermark payloads and C2PA manifest validity of one image file."""
    from t2iguard.image.provenance.manifest import verify
    from t2iguard.image.provenance.watermark import WatermarkCodec

    item = load_image(path, source=str(path))
    data = item.encoded or path.read_bytes()
    report: dict[str, Any] = {"image": str(path), "sha256": item.sha256, "size": list(item.size)}
    marks = []
    for m in methods:
        try:
            det = WatermarkCodec(m).detect(item.image)  # type: ignore[arg-type]
        except InputError as exc:
            marks.append({"method": m, "found": False, "error": exc.reason})
            continue
        entry = det.to_dict()
        if audit is not None and det.payload:
            entry["audit"] = _audit_lookup(audit, det.payload)
        marks.append(entry)
    report["watermark"] = marks
    try:
        report["c2pa"] = verify(data, trust_anchors=trust_anchors)
    except InputError as exc:
        report["c2pa"] = {"state": "none", "valid": False, "error": exc.reason}
    return report


@app.command("verify")
def verify_cmd(
    images: Annotated[list[Path], typer.Argument(help="image file(s)")],
    as_json: JsonOpt = False,
    methods: Annotated[str, typer.Option("--methods", help=METHODS_HELP)] = "dwtDct,dwtDctSvd",
    trust_anchors: Annotated[
        Path | None, typer.Option("--trust-anchors", help="PEM file of CA certificates to trust for C2PA")
    ] = None,
    audit: Annotated[Path | None, typer.Option("--audit", help="JSON-lines audit log to look payloads up in")] = None,
) -> None:
    """Report each image's watermark payload and whether its C2PA manifest is valid."""
    anchors = trust_anchors.read_text() if trust_anchors else None
    wanted = [m.strip() for m in methods.split(",") if m.strip()]
    failed = False
    for path in images:
        try:
            rep = verify_file(path, methods=wanted, trust_anchors=anchors, audit=audit)
        except (T2IGuardError, OSError) as exc:
            failed = True
            if as_json:
                _echo({"image": str(path), "error": str(exc)})
            _err(str(exc))
            continue
        if as_json:
            _echo(rep)
            continue
        found = [w for w in rep["watermark"] if w.get("found")]
        known = sorted({k for w in rep["watermark"] for k in w.get("known_marks", {})})
        wm = ", ".join(f"{w['method']}={w['payload']}" for w in found) or "none"
        if known:
            wm += f" (also: {', '.join(known)})"
        c = rep["c2pa"]
        manifest = c["state"]
        if c.get("failures"):
            manifest += " (" + ", ".join(f["code"] for f in c["failures"]) + ")"
        if c.get("decision"):
            manifest += f"; decision {c['decision'].get('decision_id')}"
        sys.stdout.write(f"{path}: watermark {wm}; c2pa {manifest}\n")
    raise typer.Exit(1 if failed else 0)


@app.command("mark")
def mark_cmd(
    image: Annotated[Path, typer.Argument(help="image to watermark")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output file (PNG keeps the mark best)")],
    payload: Annotated[str, typer.Option(help="hex payload, e.g. a decision id")],
    method: Annotated[str, typer.Option(help="dwtDct, dwtDctSvd or rivaGan")] = "dwtDctSvd",
) -> None:
    """Embed an invisible watermark."""
    from t2iguard.image.provenance.watermark import WatermarkCodec

    try:
        marked = WatermarkCodec(method).embed(load_image(image).image, payload)  # type: ignore[arg-type]
        marked.save(out)
    except (T2IGuardError, ValueError, OSError) as exc:
        _err(str(exc))
        raise typer.Exit(1) from None
    sys.stdout.write(f"{out}\n")


@app.command("sign")
def sign_cmd(
    image: Annotated[Path, typer.Argument(help="PNG or JPEG image to sign")],
    out: Annotated[Path, typer.Option("--out", "-o")],
    cert: Annotated[Path, typer.Option(help="PEM chain: signing certificate first")],
    key: Annotated[Path, typer.Option(help="PEM private key of the signing certificate")],
    decision_id: Annotated[str | None, typer.Option(help="decision id to record")] = None,
    generator: Annotated[str | None, typer.Option(help="name of the generator")] = None,
    alg: Annotated[str, typer.Option(help="es256, es384, ps256, ed25519, ...")] = "es256",
) -> None:
    """Embed a signed C2PA manifest (AI-generated assertion, generator, decision id)."""
    from t2iguard.image.provenance.manifest import Signer, build_manifest, sniff_mime

    try:
        data = image.read_bytes()
        mime = sniff_mime(data)
        load_image(data, source=str(image))
        manifest = build_manifest(title=image.name, decision_id=decision_id, policy=None, generator=generator)
        manifest["format"] = mime
        out.write_bytes(Signer.from_files(cert, key, alg=alg).sign(data, mime, manifest))
    except (T2IGuardError, OSError) as exc:
        _err(str(exc))
        raise typer.Exit(1) from None
    sys.stdout.write(f"{out}\n")


@app.command("test-cert")
def test_cert_cmd(
    directory: Annotated[Path, typer.Argument(help="where to write chain.pem, signer.key, ca.pem")],
) -> None:
    """Write a throw-away test CA and signing certificate (for trials only; trusted by nobody)."""
    from t2iguard.image.provenance.certs import make_test_credentials

    try:
        paths = make_test_credentials().write(directory)
    except (ConfigurationError, OSError) as exc:
        _err(str(exc))
        raise typer.Exit(1) from None
    for name, p in paths.items():
        sys.stdout.write(f"{name}: {p}\n")
