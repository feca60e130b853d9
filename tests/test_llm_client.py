"""The OpenAI-compatible JSON chat client against a real server process on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from support.servers import openai_stub
from t2iguard.core.llm import ChatClient, ChatEndpoint, LLMError, extract_json, image_part


class Verdict(BaseModel):
    category: str
    score: float


def test_extract_json_forms() -> None:
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json('Sure!\n```json\n{"a": 2}\n```') == {"a": 2}
    assert extract_json('The verdict is {"a": 3} as requested.') == {"a": 3}
    with pytest.raises(ValueError):
        extract_json("no json here")


def test_valid_answer_and_request_shape(tmp_path: Path) -> None:
    rules = [{"match": "knife", "reply": '```json\n{"category": "violence", "score": 0.9}\n```'}]
    with openai_stub(tmp_path, rules) as srv:
        client = ChatClient(ChatEndpoint(base_url=srv.base_url, model="judge-1"))
        verdict, meta = client.complete_json([{"role": "user", "content": "a knife fight"}], Verdict)
        assert verdict == Verdict(category="violence", score=0.9)
        assert meta["attempts"] == 1
        (req,) = srv.requests()
        assert req["path"] == "/v1/chat/completions"
        assert req["body"]["model"] == "judge-1"
        assert req["body"]["response_format"] == {"type": "json_object"}


def test_retries_until_valid_then_gives_up(tmp_path: Path) -> None:
    rules = [
        {"match": "flaky", "replies": ["I think it's fine", '{"category": "none", "score": 0.1}']},
        {"match": "broken", "reply": '{"category": "none"}'},
    ]
    with openai_stub(tmp_path, rules) as srv:
        client = ChatClient(ChatEndpoint(base_url=srv.base_url, model="m", max_retries=1))
        verdict, meta = client.complete_json([{"role": "user", "content": "flaky"}], Verdict)
        assert verdict.score == 0.1 and meta["attempts"] == 2
        with pytest.raises(LLMError, match="no valid JSON answer after 2 tries"):
            client.complete_json([{"role": "user", "content": "broken"}], Verdict)


def test_http_errors_and_timeouts_raise(tmp_path: Path) -> None:
    rules = [{"match": "down", "status": 503, "reply": "overloaded"}, {"match": "slow", "reply": "{}", "delay_s": 3}]
    with openai_stub(tmp_path, rules) as srv:
        client = ChatClient(ChatEndpoint(base_url=srv.base_url, model="m", timeout_s=0.5))
        with pytest.raises(LLMError, match="HTTP 503"):
            client.chat([{"role": "user", "content": "down"}])
        with pytest.raises(LLMError, match="no answer within"):
            client.chat([{"role": "user", "content": "slow"}])
    with pytest.raises(LLMError):
        ChatClient(ChatEndpoint(base_url="http://127.0.0.1:9/v1", model="m", timeout_s=1)).chat(
            [{"role": "user", "content": "x"}]
        )


def test_image_parts_are_sent(tmp_path: Path) -> None:
    from PIL import Image

    rules = [{"match": "describe", "min_images": 1, "reply": '{"category": "none", "score": 0.0}'}]
    with openai_stub(tmp_path, rules, default='{"category": "missing-image", "score": 1.0}') as srv:
        client = ChatClient(ChatEndpoint(base_url=srv.base_url, model="vlm"))
        msg = {"role": "user", "content": [{"type": "text", "text": "describe"}, image_part(Image.new("RGB", (8, 8)))]}
        verdict, _ = client.complete_json([msg], Verdict)
        assert verdict.category == "none"
        sent = srv.requests()[0]["body"]["messages"][0]["content"][1]["image_url"]["url"]
        assert sent.startswith("data:image/png;base64,")


def test_api_key_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LLMError, match="T2I_TEST_KEY"):
        ChatClient(ChatEndpoint(base_url="http://127.0.0.1:9/v1", model="m", api_key_env="T2I_TEST_KEY"))
    monkeypatch.setenv("T2I_TEST_KEY", "sk-test")
    with openai_stub(tmp_path, [{"match": ".", "reply": '{"category": "x", "score": 0}'}]) as srv:
        client = ChatClient(ChatEndpoint(base_url=srv.base_url, model="m", api_key_env="T2I_TEST_KEY"))
        client.complete_json([{"role": "user", "content": "hi"}], Verdict)
        assert srv.requests()[0]["headers"]["Authorization"] == "Bearer sk-test"
