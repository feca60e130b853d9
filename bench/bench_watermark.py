"""Watermark robustness and false detections, per method.

    python bench/bench_watermark.py [--images 24] [--riva-images 6] [--unmarked 1000] [--riva-unmarked 200]

Robustness: payload bit accuracy (and exact payload recovery, i.e. the CRC-16 passes and the id
matches) after JPEG q90/q75/q50, resize 0.5x (decoded at the new size, and rescaled back),
centre crop keeping 90 % of each side, brightness +/-20 %, on 512x512 photos. False detections:
the share of unmarked images on which the detector reports a payload (the CRC-16 passes).
Writes ``bench/results/watermark.json``, ``watermark.md`` and ``watermark.png``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance
from rich.progress import track

sys.path.insert(0, str(Path(__file__).parent))
from t2iguard.core.errors import StageError
from t2iguard.image.provenance.watermark import METHODS, WatermarkCodec, payload_bits
from unmarked import photo_set, unmarked

RESULTS = Path(__file__).parent / "results"


def jpeg(q: int) -> Callable[[Image.Image], Image.Image]:
    def f(img: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")

    return f


def resize(factor: float, back: bool) -> Callable[[Image.Image], Image.Image]:
    def f(img: Image.Image) -> Image.Image:
        small = img.resize((int(img.width * factor), int(img.height * factor)), Image.Resampling.BICUBIC)
        return small.resize(img.size, Image.Resampling.BICUBIC) if back else small

    return f


def crop(keep: float) -> Callable[[Image.Image], Image.Image]:
    def f(img: Image.Image) -> Image.Image:
        w, h = int(img.width * keep), int(img.height * keep)
        x, y = (img.width - w) // 2, (img.height - h) // 2
        return img.crop((x, y, x + w, y + h))

    return f


def brightness(factor: float) -> Callable[[Image.Image], Image.Image]:
    return lambda img: ImageEnhance.Brightness(img).enhance(factor)


ATTACKS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "none": lambda img: img,
    "jpeg q90": jpeg(90),
    "jpeg q75": jpeg(75),
    "jpeg q50": jpeg(50),
    "resize 0.5x": resize(0.5, back=False),
    "resize 0.5x, back to 1x": resize(0.5, back=True),
    "crop 10 %": crop(0.9),
    "brightness +20 %": brightness(1.2),
    "brightness -20 %": brightness(0.8),
}


def robustness(method: str, images: list[Image.Image], verify: bool = True) -> dict[str, dict[str, float]]:
    """Mean bit accuracy / recovery per attack. ``verify`` embeds as the stage does (read back,
    retry with range headroom)."""
    codec = WatermarkCodec(method)  # type: ignore[arg-type]
    failed = 0
    out: dict[str, dict[str, list[float]]] = {a: {"bit_accuracy": [], "recovered": []} for a in ATTACKS}
    psnr = []
    for i, img in enumerate(track(images, description=f"{method} robustness")):
        payload = f"{(i * 2654435761) % 2**64:016x}{i:016x}"
        expected = payload_bits(payload, method)  # type: ignore[arg-type]
        try:
            marked = codec.embed(img, payload, verify=verify)
        except StageError:  # the stage fails closed on such images; here: measure the plain mark
            failed += 1
            marked = codec.embed(img, payload, verify=False)
        psnr.append(10 * np.log10(255**2 / np.mean((np.asarray(marked, float) - np.asarray(img, float)) ** 2)))
        n = len(payload_bits(payload, method)) // 4 - 4  # hex digits of the id part
        for name, attack in ATTACKS.items():
            attacked = attack(marked)
            try:
                det = codec.detect(attacked, known_marks=False)
                acc, ok = det.bit_accuracy(expected), float(det.payload == payload[:n])
            except Exception:  # noqa: BLE001 - e.g. too small after resizing: counts as lost
                acc, ok = 0.5, 0.0
            out[name]["bit_accuracy"].append(acc)
            out[name]["recovered"].append(ok)
    res = {a: {k: float(np.mean(v)) for k, v in d.items()} for a, d in out.items()}
    res["_psnr_db"] = {"mean": float(np.mean(psnr)), "min": float(np.min(psnr))}
    res["_unmarkable"] = {"images": float(failed)}
    return res


def false_detections(method: str, n: int, size: int) -> dict[str, float]:
    codec = WatermarkCodec(method)  # type: ignore[arg-type]
    hits, total, t0 = 0, 0, time.perf_counter()
    by_kind: dict[str, list[int]] = {}
    for kind, img in track(unmarked(n, size=size), total=n, description=f"{method} unmarked"):
        found = codec.detect(img, known_marks=False).found
        hits += found
        total += 1
        by_kind.setdefault(kind, []).append(int(found))
    return {
        "images": total,
        "size": size,
        "false_detections": hits,
        "rate": hits / max(1, total),
        "by_kind": {k: {"images": len(v), "false": sum(v)} for k, v in by_kind.items()},
        "seconds_per_image": (time.perf_counter() - t0) / max(1, total),
    }


def markdown(results: dict) -> str:
    methods = list(results["robustness"])
    lines = [
        "### Watermark robustness (bit accuracy / payload recovered)",
        "",
        "| attack | " + " | ".join(f"{m} (n={results['images'][m]})" for m in methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for a in ATTACKS:
        cells = [
            f"{results['robustness'][m][a]['bit_accuracy']:.3f} / {results['robustness'][m][a]['recovered']:.0%}"
            for m in methods
        ]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    unmarkable = [results["robustness"][m].get("_unmarkable") for m in methods]
    lines.append(
        "| images the stage cannot mark (fails closed) | "
        + " | ".join(f"{u['images']:.0f}" if u else "-" for u in unmarkable)
        + " |"
    )
    lines.append(
        "| PSNR of the mark (mean, dB) | "
        + " | ".join(f"{results['robustness'][m]['_psnr_db']['mean']:.1f}" for m in methods)
        + " |"
    )
    lines += [
        "",
        "### False detections on unmarked images",
        "",
        "| method | images | size | false detections | rate |",
        "|---|---|---|---|---|",
    ]
    for m, r in results["false_detections"].items():
        lines.append(f"| {m} | {r['images']} | {r['size']}px | {r['false_detections']} | {r['rate']:.4f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """Bit accuracy per attack and method (a PNG for reports)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    methods = list(results["robustness"])
    attacks = list(ATTACKS)
    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / max(1, len(methods))
    for k, m in enumerate(methods):
        vals = [results["robustness"][m][a]["bit_accuracy"] for a in attacks]
        ax.bar(np.arange(len(attacks)) + k * width, vals, width, label=f"{m} (n={results['images'][m]})")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(attacks)) + width * (len(methods) - 1) / 2, attacks, rotation=30, ha="right")
    ax.set_ylabel("payload bit accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("invisible-watermark robustness, 512x512 photos")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--riva-images", type=int, default=6, help="rivaGan takes seconds per image on CPU")
    ap.add_argument("--unmarked", type=int, default=1000)
    ap.add_argument("--riva-unmarked", type=int, default=200)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot and table from watermark.json")
    ap.add_argument("--merge", action="store_true", help="update the methods run in an existing watermark.json")
    ap.add_argument("--no-unmarked", action="store_true", help="robustness only (keeps merged false detections)")
    args = ap.parse_args()
    if args.plot_only:
        saved = json.loads((args.out / "watermark.json").read_text())
        plot(saved, args.out / "watermark.png")
        (args.out / "watermark.md").write_text(markdown(saved))
        return
    methods = [m for m in args.methods.split(",") if m]
    photos = photo_set(args.images)
    results: dict = {"images": {}, "robustness": {}, "false_detections": {}}
    if args.merge and (args.out / "watermark.json").is_file():
        results = json.loads((args.out / "watermark.json").read_text())
    for m in methods:
        imgs = photos[: args.riva_images] if m == "rivaGan" else photos
        results["images"][m] = len(imgs)
        results["robustness"][m] = robustness(m, imgs)
        if not args.no_unmarked:
            n, size = (args.riva_unmarked, 256) if m == "rivaGan" else (args.unmarked, 512)
            results["false_detections"][m] = false_detections(m, n, size)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "watermark.json").write_text(json.dumps(results, indent=2))
        (args.out / "watermark.md").write_text(markdown(results))
        plot(results, args.out / "watermark.png")
    print(markdown(results))


if __name__ == "__main__":
    main()
