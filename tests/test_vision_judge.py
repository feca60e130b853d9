"""The vision judge against a scripted OpenAI-compatible server on loopback (a real process)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from support.servers import openai_stub
from t2iguard.core.errors import PolicyError
from t2iguard.core.pipeline import SafetyStack
from t2iguard.core.policy import policy_from_dict
from t2iguard.core.stage import ModelCache
from t2iguard.core.types import Action, Phase

GORE = json.dumps({"violence": {"score": 0.92, "reason": "a stabbing, blood"}, "hate": {"score": 0.0}})
CALM = json.dumps({"violence": {"score": 0.03, "reason": "a landscape"}, "hate": {"score": 0.01, "reason": ""}})


def _policy(base_url: str, **params: Any) -> Any:
    return policy_from_dict(
        {
            "name": "judge",
            "categories": {
                "violence": {"action": "block", "threshold": 0.5, "description": "graphic violence and gore"},
                "hate": {"action": "review", "threshold": 0.5, "description": "hate symbols"},
            },
            "stages": [
                {
                    "stage": "vision_judge",
                    "params": {
                        "endpoint": {"base_url": base_url, "model": "llavaguard", "timeout_s": 2, "max_retries": 1},
                        "categories": ["violence", "hate"],
                        **params,
                    },
                }
            ],
        }
    )


def test_per_image_verdicts_in_a_batch(tmp_path: Path) -> None:
    rules = [
        {"match": "Classify this image", "image_size": [64, 48], "reply": GORE},
        {"match": "Classify this image", "image_size": [48, 64], "reply": CALM},
    ]
    with openai_stub(tmp_path, rules, default='{"unexpected": true}') as srv:
        stack = SafetyStack(_policy(srv.base_url, include_prompt=True), models=ModelCache())
        gore, calm = Image.new("RGB", (64, 48), "red"), Image.new("RGB", (48, 64), "green")
        d_gore, d_calm = stack.check_images([gore, calm], prompt="a knife fight")
        assert d_gore.action == Action.BLOCK and d_gore.categories["violence"] == pytest.approx(0.92)
        assert "a stabbing, blood" in d_gore.reason
        assert d_calm.action == Action.ALLOW and d_calm.categories == {"violence": 0.03, "hate": 0.01}
        reqs = srv.requests()
        assert len(reqs) == 2
        system = reqs[0]["body"]["messages"][0]["content"]
        # the policy text is in the prompt, with the answer format
        assert "graphic violence and gore" in system and "hate symbols" in system and '"violence": {"score"' in system
        user = reqs[0]["body"]["messages"][1]["content"]
        assert "a knife fight" in user[0]["text"] and user[1]["image_url"]["url"].startswith("data:image/png;base64,")
        assert reqs[0]["body"]["model"] == "llavaguard"


def test_invalid_answers_are_retried_then_fail_closed(tmp_path: Path) -> None:
    rules = [
        {"match": "Classify", "image_size": [64, 48], "replies": ["I'd say it is violent.", GORE]},
        # a score outside [0, 1] and a missing category never validate
        {"match": "Classify", "image_size": [32, 32], "reply": '{"violence": {"score": 7}}'},
    ]
    with openai_stub(tmp_path, rules) as srv:
        stack = SafetyStack(_policy(srv.base_url), models=ModelCache())
        d = stack.check_image(Image.new("RGB", (64, 48)))
        assert d.action == Action.BLOCK and d.trace[0].evidence["attempts"] == 2
        bad = stack.check_image(Image.new("RGB", (32, 32)))
        assert bad.action == Action.BLOCK and bad.errors and "no valid JSON answer after 2 tries" in bad.errors[0]


def test_server_errors_and_timeouts_fail_closed_or_review(tmp_path: Path) -> None:
    rules = [
        {"match": "Classify", "image_size": [40, 40], "status": 500, "reply": "boom"},
        {"match": "Classify", "image_size": [50, 50], "reply": CALM, "delay_s": 4},
    ]
    with openai_stub(tmp_path, rules) as srv:
        policy = _policy(srv.base_url)
        stack = SafetyStack(policy, models=ModelCache())
        d = stack.check_image(Image.new("RGB", (40, 40)))
        assert d.action == Action.BLOCK and "HTTP 500" in d.errors[0]
        d = stack.check_image(Image.new("RGB", (50, 50)), phase=Phase.INPUT_IMAGE)
        assert d.action == Action.BLOCK and "no answer within" in d.errors[0]
        data = policy.model_dump(mode="json")
        data["stages"][0]["on_error"] = "review"
        reviewing = SafetyStack(policy_from_dict(data), models=ModelCache())
        assert reviewing.check_image(Image.new("RGB", (40, 40))).action == Action.REVIEW


def test_configuration_errors_are_clear() -> None:
    with pytest.raises(PolicyError, match="endpoint"):
        SafetyStack(policy_from_dict({"name": "x", "stages": [{"stage": "vision_judge", "params": {}}]}))
