"""``http:URL`` — a remote text-to-image service: an OpenAI-compatible images endpoint or
AUTOMATIC1111's web UI API.

* OpenAI images contract (``URL`` is the API base, e.g. ``http://host:8000/v1``):
  ``POST {URL}/images/generations`` (JSON) and, for edits, ``POST {URL}/images/edits``
  (multipart: ``image``, ``mask`` — transparent where the image is to be edited — and ``prompt``),
  answered with ``{"data": [{"b64_json": ...}]}`` (or ``url`` entries, fetched from the same
  client). The key comes from ``api_key=``, ``$T2IGUARD_IMAGES_API_KEY`` or ``$OPENAI_API_KEY``.
* AUTOMATIC1111 (``URL`` contains ``/sdapi``, or ``api="a1111"``): ``POST /sdapi/v1/txt2img`` and
  ``/sdapi/v1/img2img`` (``init_images``, ``mask``: white = repaint), answered with
  ``{"images": [base64 PNG, ...], "info": "{...}"}``.

Safety guidance cannot steer a remote sampler: A1111 gets the safety concept as its negative
prompt (the baseline SLD compares against); the OpenAI contract has no such field, so a
regeneration there is a fresh request, and the metadata says which was done.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from PIL import Image

from t2iguard.core.errors import ConfigurationError
from t2iguard.core.types import Category
from t2iguard.generate.base import GenerationRequest, GenerationResult, SafetyGuidance


def _png_b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class HTTPGenerator:
    """A remote images API (OpenAI-compatible or AUTOMATIC1111) behind :class:`Generator`."""

    name = "http"
    default_size = 512

    def __init__(
        self,
        url: str = "",
        *,
        api: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        steps: int | None = None,
        guidance_scale: float | None = None,
        concepts: dict[Category, str] | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        if not url:
            raise ConfigurationError("the http backend needs a URL: http:http://host:port/v1")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"http backend: {url!r} is not an http(s) URL")
        self.api = api or ("a1111" if "/sdapi" in parts.path else "openai")
        if self.api not in ("openai", "a1111"):
            raise ConfigurationError(f"http backend: api must be 'openai' or 'a1111', got {self.api!r}")
        base = url.split("/sdapi")[0] if self.api == "a1111" else url
        self.base = base.rstrip("/")
        self.model = model
        self.api_key = (
            api_key
            or os.environ.get("T2IGUARD_IMAGES_API_KEY")
            or (os.environ.get("OPENAI_API_KEY") if self.api == "openai" else None)
        )
        self.steps = steps
        self.guidance_scale = guidance_scale
        from t2iguard.generate.diffusers_backend import CATEGORY_CONCEPTS

        self.concepts = dict(CATEGORY_CONCEPTS if concepts is None else concepts)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.client = client or httpx.Client(timeout=timeout_s, headers=headers)

    def close(self) -> None:
        self.client.close()

    def safety_concept(self, safety: SafetyGuidance) -> str:
        if safety.concepts:
            return ", ".join(safety.concepts)
        return ", ".join(self.concepts[c] for c in safety.categories if c in self.concepts)

    # ---- HTTP -------------------------------------------------------------------------------
    def _check(self, resp: httpx.Response) -> Any:
        if resp.status_code >= 400:
            raise RuntimeError(
                f"{resp.request.method} {resp.request.url} -> HTTP {resp.status_code}: {resp.text[:300]}"
            )
        try:
            return resp.json()
        except json.JSONDecodeError as exc:
            raise RuntimeError(f"{resp.request.url} did not answer JSON: {resp.text[:200]!r}") from exc

    def _decode(self, data: str) -> Image.Image:
        if data.startswith("data:"):
            data = data.split(",", 1)[1]
        try:
            img = Image.open(io.BytesIO(base64.b64decode(data, validate=False)))
            img.load()
        except Exception as exc:  # PIL raises several types for bad data
            raise RuntimeError(f"the images endpoint returned an undecodable image: {exc}") from exc
        return img.convert("RGB")

    def generate(self, request: GenerationRequest) -> GenerationResult:
        if not 1 <= request.n <= 16:
            raise ValueError(f"n must be between 1 and 16, got {request.n}")
        t0 = time.perf_counter()
        if self.api == "a1111":
            images, seed, meta = self._a1111(request)
        else:
            images, seed, meta = self._openai(request)
        if not images:
            raise RuntimeError("the images endpoint returned no images")
        meta.update(backend=self.name, api=self.api, latency_ms=round((time.perf_counter() - t0) * 1000.0, 1))
        return GenerationResult(images=images, seed=seed, metadata=meta)

    def _openai(self, request: GenerationRequest) -> tuple[list[Image.Image], int | None, dict[str, Any]]:
        size = f"{request.width}x{request.height}"
        meta: dict[str, Any] = {"mode": "edit" if request.image is not None else "txt2img", "size": size}
        if request.safety is not None:
            meta["safety_guidance"] = {
                "method": "unsupported",
                "reason": "the OpenAI images contract has no guidance or negative prompt; regenerated as a new request",
                "strength": request.safety.strength,
            }
        if request.image is None:
            body: dict[str, Any] = {
                "prompt": request.prompt,
                "n": request.n,
                "size": size,
                "response_format": "b64_json",
            }
            if self.model:
                body["model"] = self.model
            if request.user:
                body["user"] = request.user
            data = self._check(self.client.post(f"{self.base}/images/generations", json=body))
        else:
            files: dict[str, tuple[str, bytes, str]] = {
                "image": ("image.png", _png(request.image.image.convert("RGB")), "image/png")
            }
            if request.mask is not None:
                # OpenAI masks: alpha 0 where the image should be edited (our masks: white = edit)
                m = request.mask.image.convert("L").resize(request.image.image.size)
                rgba = Image.new("RGBA", m.size, (0, 0, 0, 255))
                rgba.putalpha(m.point(lambda v: 0 if v >= 128 else 255))
                files["mask"] = ("mask.png", _png(rgba), "image/png")
            form = {"prompt": request.prompt, "n": str(request.n), "size": size, "response_format": "b64_json"}
            if self.model:
                form["model"] = self.model
            data = self._check(self.client.post(f"{self.base}/images/edits", data=form, files=files))
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise RuntimeError(f"the images endpoint answered without a 'data' list: {str(data)[:200]}")
        images = []
        for it in items:
            if isinstance(it, dict) and it.get("b64_json"):
                images.append(self._decode(str(it["b64_json"])))
            elif isinstance(it, dict) and it.get("url"):
                r = self.client.get(str(it["url"]))
                if r.status_code >= 400:
                    raise RuntimeError(f"fetching {it['url']} -> HTTP {r.status_code}")
                images.append(self._decode(base64.b64encode(r.content).decode("ascii")))
            else:
                raise RuntimeError("an image entry has neither b64_json nor url")
        if items and isinstance(items[0], dict) and items[0].get("revised_prompt"):
            meta["revised_prompt"] = items[0]["revised_prompt"]
        return images, None, meta

    def _a1111(self, request: GenerationRequest) -> tuple[list[Image.Image], int | None, dict[str, Any]]:
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        negative = request.negative_prompt or ""
        meta: dict[str, Any] = {"mode": "txt2img" if request.image is None else "img2img"}
        if request.safety is not None:
            concept = self.safety_concept(request.safety)
            negative = f"{negative}, {concept}" if negative else concept
            meta["safety_guidance"] = {
                "method": "negative_prompt",
                "concept": concept,
                "strength": request.safety.strength,
            }
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": negative,
            "seed": seed,
            "width": request.width,
            "height": request.height,
            "batch_size": request.n,
            "n_iter": 1,
        }
        if request.steps or self.steps:
            body["steps"] = request.steps or self.steps
        scale = request.guidance_scale if request.guidance_scale is not None else self.guidance_scale
        if scale is not None:
            body["cfg_scale"] = scale
        if request.image is None:
            endpoint = "txt2img"
        else:
            endpoint = "img2img"
            body["init_images"] = [_png_b64(request.image.image.convert("RGB"))]
            body["denoising_strength"] = request.strength if request.strength is not None else 0.75
            if request.mask is not None:
                meta["mode"] = "inpaint"
                body["mask"] = _png_b64(request.mask.image.convert("L"))
                body["inpainting_fill"] = 1  # start from the original content
        data = self._check(self.client.post(f"{self.base}/sdapi/v1/{endpoint}", json=body))
        raw = data.get("images") if isinstance(data, dict) else None
        if not isinstance(raw, list):
            raise RuntimeError(f"the A1111 API answered without an 'images' list: {str(data)[:200]}")
        images = [self._decode(str(b)) for b in raw[: request.n]]
        info = data.get("info")
        if isinstance(info, str):
            try:
                parsed = json.loads(info)
                seed = int(parsed.get("seed", seed))
            except (json.JSONDecodeError, TypeError, ValueError):
                pass
        meta["seeds"] = [seed + i for i in range(len(images))]
        return images, seed, meta
