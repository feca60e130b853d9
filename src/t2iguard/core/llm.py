"""A small client for OpenAI-compatible chat endpoints that must answer in validated JSON.

The LLM judge, the LLM prompt rewriter and the vision judge all talk to "any OpenAI-compatible
chat endpoint" — vLLM, Ollama, llama.cpp's server, or a hosted API — the ecosystem's convention.
:class:`ChatClient` sends ``/v1/chat/completions`` requests (text and image parts), asks for JSON
(``response_format``), extracts the first JSON object from the reply even when a model wraps it in
prose or code fences, validates it against a pydantic model, and retries a bounded number of times
on malformed answers. Anything else — a timeout, an HTTP error, a reply that never validates —
raises :class:`LLMError`, which the pipeline turns into a fail-closed verdict.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from t2iguard.core.errors import StageError

M = TypeVar("M", bound=BaseModel)

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


class LLMError(StageError):
    """The endpoint failed or never produced a valid answer."""


class ChatEndpoint(BaseModel):
    """Where and how to reach a chat model. ``api_key_env`` names an environment variable, so
    keys never sit in policy files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(description="e.g. http://127.0.0.1:8000/v1")
    model: str
    api_key_env: str | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=512, ge=1)
    json_mode: bool = Field(default=True, description="send response_format={'type': 'json_object'}")


def image_part(image: Image.Image, *, max_side: int = 1024, fmt: str = "PNG") -> dict[str, Any]:
    """An OpenAI ``image_url`` content part holding ``image`` as a base64 data URL."""
    img = image.convert("RGB")
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    b64 = base64.b64encode(buf.getvalue()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:image/{fmt.lower()};base64,{b64}"}}


def extract_json(text: str) -> Any:
    """The first JSON object in ``text`` (bare, in a code fence, or embedded in prose)."""
    text = text.strip()
    candidates = [text, *(m.group(1).strip() for m in _FENCE.finditer(text))]
    for c in candidates:
        try:
            return json.loads(c)
        except json.JSONDecodeError:
            pass
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch == "{":
            try:
                obj, _ = decoder.raw_decode(text[i:])
                return obj
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON object in the reply")


class ChatClient:
    """Synchronous client for one endpoint. Thread-safe (one pooled ``httpx.Client``)."""

    def __init__(self, endpoint: ChatEndpoint, *, transport: httpx.BaseTransport | None = None) -> None:
        self.endpoint = endpoint
        headers = {"Content-Type": "application/json"}
        if endpoint.api_key_env:
            key = os.environ.get(endpoint.api_key_env)
            if not key:
                raise LLMError(f"environment variable {endpoint.api_key_env} (API key) is not set")
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(
            base_url=endpoint.base_url.rstrip("/"),
            headers=headers,
            timeout=endpoint.timeout_s,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def chat(self, messages: Sequence[dict[str, Any]], *, json_mode: bool | None = None) -> str:
        """One completion; returns the assistant's text."""
        ep = self.endpoint
        body: dict[str, Any] = {
            "model": ep.model,
            "messages": list(messages),
            "temperature": ep.temperature,
            "max_tokens": ep.max_tokens,
        }
        if ep.json_mode if json_mode is None else json_mode:
            body["response_format"] = {"type": "json_object"}
        try:
            resp = self._http.post("/chat/completions", json=body)
        except httpx.TimeoutException:
            raise LLMError(f"{ep.base_url}: no answer within {ep.timeout_s:g}s") from None
        except httpx.HTTPError as exc:
            raise LLMError(f"{ep.base_url}: {type(exc).__name__}: {exc}") from None
        if resp.status_code != 200:
            raise LLMError(f"{ep.base_url}: HTTP {resp.status_code}: {resp.text[:300]}")
        try:
            content = resp.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise LLMError(f"{ep.base_url}: not an OpenAI chat completion: {resp.text[:300]}") from None
        if not isinstance(content, str):
            raise LLMError(f"{ep.base_url}: the completion has no text content")
        return content

    def complete_json(self, messages: Sequence[dict[str, Any]], schema: type[M]) -> tuple[M, dict[str, Any]]:
        """Ask until the reply validates against ``schema`` (at most ``max_retries`` more times).

        Returns the parsed model and metadata (attempts, latency, raw text of the last reply).
        """
        ep = self.endpoint
        msgs = list(messages)
        last_error = ""
        t0 = time.perf_counter()
        for attempt in range(ep.max_retries + 1):
            text = self.chat(msgs)
            try:
                parsed = schema.model_validate(extract_json(text))
                meta = {"attempts": attempt + 1, "latency_ms": (time.perf_counter() - t0) * 1000, "raw": text}
                return parsed, meta
            except (ValueError, ValidationError) as exc:
                last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                msgs = [
                    *messages,
                    {"role": "assistant", "content": text},
                    {
                        "role": "user",
                        "content": "Your answer was not valid JSON for the required schema "
                        f"({last_error}). Reply with the JSON object only.",
                    },
                ]
        raise LLMError(f"{ep.base_url}: no valid JSON answer after {ep.max_retries + 1} tries: {last_error}")
