"""A real images server on loopback for the ``http`` generator tests.

    python tests/support/images_server.py --log requests.jsonl

prints ``PORT <n>`` first, then serves the OpenAI images contract (``POST /v1/images/generations``
JSON, ``POST /v1/images/edits`` multipart; ``b64_json`` answers, ``url`` answers when
``response_format`` is ``url``) and AUTOMATIC1111's ``POST /sdapi/v1/txt2img`` and
``/sdapi/v1/img2img``. Images are scenes of the tiny model's emoji world drawn from the concepts
named in the prompt, minus those named in the negative prompt (as a sampler that honours negative
prompts would), so the stack's output checks see real content. Prompts containing ``http500``
get HTTP 500, ``garbage`` an undecodable image, ``empty`` no images. Every request (path, headers
of interest, body summary) is appended to ``--log`` as JSON lines.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import threading
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

from t2iguard.generate.tiny.concepts import CONCEPTS
from t2iguard.generate.tiny.world import compose


def _concepts_in(text: str) -> list[str]:
    low = f" {text.lower()} "
    return [c.key for c in CONCEPTS if any(f" {n} " in low.replace(",", " ") for n in c.names)]


def render(prompt: str, negative: str, seed: int, size: tuple[int, int]) -> Image.Image:
    keys = [k for k in _concepts_in(prompt) if k not in _concepts_in(negative)][:3]
    rng = random.Random(f"{prompt}/{seed}")
    if keys:
        img = compose(keys, rng).image
    else:
        img = Image.new("RGB", (64, 64), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    return img.resize(size)


def _b64png(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    lock = threading.Lock()
    stored: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *a: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj).encode())

        def _record(self, entry: dict[str, Any]) -> None:
            entry = {"path": self.path, "auth": self.headers.get("Authorization"), **entry}
            with lock, open(args.log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")

        def do_GET(self) -> None:
            if self.path.startswith("/files/") and self.path[7:] in stored:
                self._send(200, stored[self.path[7:]], "image/png")
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            ctype = self.headers.get("Content-Type", "")
            if ctype.startswith("multipart/form-data"):
                msg = BytesParser(policy=default_policy).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + raw)
                fields: dict[str, Any] = {}
                files: dict[str, bytes] = {}
                for part in msg.iter_parts():
                    name = part.get_param("name", header="content-disposition")
                    payload = part.get_payload(decode=True) or b""
                    if part.get_filename():
                        files[str(name)] = payload
                    else:
                        fields[str(name)] = payload.decode()
                body: dict[str, Any] = fields
            else:
                files = {}
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    self._json(400, {"error": "invalid JSON"})
                    return
            prompt = str(body.get("prompt", ""))
            self._record(
                {
                    "body": {k: v for k, v in body.items() if k not in ("init_images", "mask")},
                    "files": sorted(files),
                    "has_init": bool(body.get("init_images")),
                    "has_mask": bool(body.get("mask")) or "mask" in files,
                }
            )
            if "http500" in prompt:
                self._json(500, {"error": {"message": "server exploded"}})
                return
            if self.path.startswith("/v1/images/"):
                self._openai(body, files, prompt)
            elif self.path in ("/sdapi/v1/txt2img", "/sdapi/v1/img2img"):
                self._a1111(body, prompt)
            else:
                self._json(404, {"error": "not found"})

        def _openai(self, body: dict[str, Any], files: dict[str, bytes], prompt: str) -> None:
            if not prompt:
                self._json(400, {"error": {"message": "prompt is required"}})
                return
            n = int(body.get("n", 1))
            w, _, h = str(body.get("size", "64x64")).partition("x")
            size = (int(w), int(h))
            images = [render(prompt, "", i, size) for i in range(n)]
            if self.path.endswith("/edits"):
                if "image" not in files:
                    self._json(400, {"error": {"message": "image is required"}})
                    return
                base = Image.open(io.BytesIO(files["image"])).convert("RGB").resize(size)
                if "mask" in files:  # transparent = edit: paste the new content there only
                    alpha = Image.open(io.BytesIO(files["mask"])).convert("RGBA").getchannel("A").resize(size)
                    images = [Image.composite(base, im, alpha) for im in images]
            if "garbage" in prompt:
                self._json(200, {"created": 0, "data": [{"b64_json": "bm90IGFuIGltYWdl"}]})
                return
            if "empty" in prompt:
                self._json(200, {"created": 0, "data": []})
                return
            if body.get("response_format") == "url":
                data = []
                for i, im in enumerate(images):
                    key = f"{len(stored)}-{i}.png"
                    stored[key] = base64.b64decode(_b64png(im))
                    data.append({"url": f"http://{self.headers['Host']}/files/{key}"})
            else:
                data = [{"b64_json": _b64png(im), "revised_prompt": prompt} for im in images]
            self._json(200, {"created": 0, "data": data})

        def _a1111(self, body: dict[str, Any], prompt: str) -> None:
            n = int(body.get("batch_size", 1)) * int(body.get("n_iter", 1))
            seed = int(body.get("seed", -1))
            seed = 1234 if seed < 0 else seed
            size = (int(body.get("width", 512)), int(body.get("height", 512)))
            negative = str(body.get("negative_prompt", ""))
            images = [render(prompt, negative, seed + i, size) for i in range(n)]
            if body.get("init_images") and body.get("mask"):
                base = Image.open(io.BytesIO(base64.b64decode(body["init_images"][0]))).convert("RGB").resize(size)
                mask = Image.open(io.BytesIO(base64.b64decode(body["mask"]))).convert("L").resize(size)
                images = [Image.composite(im, base, mask) for im in images]
            if "garbage" in prompt:
                self._json(200, {"images": ["bm90IGFuIGltYWdl"], "info": "{}"})
                return
            info = json.dumps({"seed": seed, "all_seeds": [seed + i for i in range(n)]})
            self._json(200, {"images": [_b64png(im) for im in images], "parameters": {}, "info": info})

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
