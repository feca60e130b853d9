"""A scripted OpenAI-compatible chat server, run as a real process on loopback for tests.

    python tests/support/openai_server.py --rules rules.json --log requests.jsonl

prints ``PORT <n>`` on its first line, then serves ``POST /v1/chat/completions`` and
``GET /v1/models``. ``rules.json`` is a list of rules tried in order against the text of the user
turns::

    [{"match": "knife", "reply": "{\\"violence\\": 0.9}"},
     {"match": "retry", "replies": ["not json", "{\\"ok\\": true}"]},   # successive calls
     {"match": "slow", "reply": "{}", "delay_s": 5},
     {"match": "down", "status": 503, "reply": "overloaded"},
     {"match": "classify", "image_size": [64, 48], "reply": "..."}]   # a PNG part of that size

The first rule whose regex matches wins; ``--default`` is the reply when none does. Every request
body is appended to the ``--log`` file (JSON lines) so tests can check what was sent.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _png_size(url: str) -> tuple[int, int] | None:
    """(width, height) of a base64 PNG data URL, read from its IHDR chunk."""
    if not url.startswith("data:image/png;base64,"):
        return None
    try:
        head = base64.b64decode(url.split(",", 1)[1][:64] + "==", validate=False)[:24]
    except (ValueError, binascii.Error):
        return None
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", head[16:24])


def _user_text(body: dict[str, Any]) -> tuple[str, int, list[list[int]]]:
    """Text of every user turn (so a retry's correction turn still matches the rule), the
    number of image parts, and the sizes of the PNG images."""
    texts: list[str] = []
    images = 0
    sizes: list[list[int]] = []
    for msg in body.get("messages", []):
        if msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p.get("text", "") for p in content if p.get("type") == "text"]
            for p in content:
                if p.get("type") == "image_url":
                    images += 1
                    size = _png_size(str(p.get("image_url", {}).get("url", "")))
                    if size:
                        sizes.append(list(size))
    return "\n".join(texts), images, sizes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--rules", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--default", default='{"verdicts": []}')
    args = ap.parse_args()
    with open(args.rules, encoding="utf-8") as fh:
        rules = json.load(fh)
    counters: dict[int, int] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *a: Any) -> None:  # quiet
            pass

        def _send(self, status: int, payload: Any) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": "stub", "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                self._send(400, {"error": {"message": "invalid JSON body"}})
                return
            with lock, open(args.log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"path": self.path, "body": body, "headers": dict(self.headers)}) + "\n")
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            text, images, sizes = _user_text(body)
            reply, status, delay = args.default, 200, 0.0
            for i, rule in enumerate(rules):
                if re.search(rule.get("match", ""), text, re.IGNORECASE | re.DOTALL):
                    if "min_images" in rule and images < rule["min_images"]:
                        continue
                    if "image_size" in rule and list(rule["image_size"]) not in sizes:
                        continue
                    if "replies" in rule:
                        with lock:
                            n = counters.get(i, 0)
                            counters[i] = n + 1
                        reply = rule["replies"][min(n, len(rule["replies"]) - 1)]
                    else:
                        reply = rule.get("reply", reply)
                    status = int(rule.get("status", 200))
                    delay = float(rule.get("delay_s", 0.0))
                    break
            if delay:
                time.sleep(delay)
            if status != 200:
                self._send(status, {"error": {"message": reply}})
                return
            self._send(
                200,
                {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion",
                    "model": body.get("model", "stub"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                },
            )

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
