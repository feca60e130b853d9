"""The LLM judge tier: answer parsing, the uncertain band, and the HTTP backend against a real
OpenAI-compatible server process on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from support.servers import openai_stub
from t2iguard import Action, Category, Phase, SafetyStack, StageRegistry
from t2iguard.core.decision import Finding, StageResult
from t2iguard.core.errors import PolicyError
from t2iguard.core.policy import policy_from_dict
from t2iguard.core.stage import PromptContext, PromptStage
from t2iguard.prompt.llm_judge import JudgeAnswer, LLMJudgeStage


class FixedScores(PromptStage):
    """A stand-in classifier tier: scores every prompt with the scores in its params."""

    covers: ClassVar[frozenset[Category]] = frozenset(Category)
    cost: ClassVar[str] = "model"

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        scores: dict[Category, float] = {}

    params: Params

    def scan(self, ctx: PromptContext) -> StageResult:
        findings = [Finding(category=c, score=s) for c, s in self.params.scores.items()]
        full = {str(c): self.params.scores.get(c, 0.0) for c in Category}
        return self.result(findings, artifacts={"scores": full})


def _verdicts(**flags: tuple[bool, float]) -> str:
    return json.dumps(
        {
            "verdicts": [
                {"category": c, "violates": v, "confidence": conf, "rationale": f"{c} rationale"}
                for c, (v, conf) in flags.items()
            ]
        }
    )


def _stack(base_url: str, scores: dict[str, float], **judge: Any) -> SafetyStack:
    registry = StageRegistry()
    registry.register("fixed", FixedScores)
    params = {"endpoint": {"base_url": base_url, "model": "judge-test", "timeout_s": 5, "max_retries": 1}}
    params.update(judge)
    policy = policy_from_dict(
        {
            "name": "judge-test",
            "categories": {"sexual": {"threshold": 0.5}, "violence": {"threshold": 0.5}},
            "stages": [
                {"stage": "normalize"},
                {"stage": "fixed", "name": "classifier", "params": {"scores": scores}, "threshold": 0.8},
                {"stage": "llm_judge", "params": params, "on_error": "review"},
            ],
        }
    )
    return SafetyStack(policy, registry=registry)


def test_answer_parsing_accepts_common_shapes() -> None:
    a = JudgeAnswer.model_validate(
        {"verdicts": {"sexual": {"unsafe": "yes", "score": "90%", "reason": "explicit"}, "violence": False}}
    )
    by = a.by_category()
    assert by[Category.SEXUAL].violates and by[Category.SEXUAL].confidence == pytest.approx(0.9)
    assert by[Category.SEXUAL].rationale == "explicit"
    assert not by[Category.VIOLENCE].violates
    b = JudgeAnswer.model_validate([{"category": "Self-Harm", "violates": True, "confidence": 80}])
    assert b.verdicts[0].category == Category.SELF_HARM and b.verdicts[0].probability == pytest.approx(0.8)
    safe = JudgeAnswer.model_validate({"verdicts": [{"category": "hate", "violates": False, "confidence": 0.7}]})
    assert safe.verdicts[0].probability == pytest.approx(0.3)
    with pytest.raises(ValidationError):
        JudgeAnswer.model_validate({"verdicts": [{"category": "not-a-category", "violates": True}]})
    with pytest.raises(ValidationError):
        JudgeAnswer.model_validate({"verdicts": [{"category": "sexual", "violates": "maybe"}]})


def test_uncertain_band_goes_to_the_judge(tmp_path: Path) -> None:
    rules = [{"match": "bikini", "reply": _verdicts(sexual=(True, 0.9), violence=(False, 0.95))}]
    with openai_stub(tmp_path, rules) as srv:
        stack = _stack(srv.base_url, {"sexual": 0.4}, policy_text="No sexualised imagery of anyone.")
        d = stack.check_prompt("a woman in a tiny bikini, suggestive pose")
        assert d.action == Action.BLOCK
        (entry,) = d.decided_by
        assert entry.stage == "llm_judge" and entry.category == Category.SEXUAL
        assert entry.evidence["tier"] == "judge" and entry.evidence["rationale"] == "sexual rationale"
        assert entry.evidence["classifier"] == {"score": 0.4, "band": [0.05, 0.8]}
        assert "classifier uncertain: sexual 0.40" in (entry.evidence["routed"])
        (req,) = srv.requests()
        system, user = req["body"]["messages"]
        assert "No sexualised imagery of anyone." in system["content"]
        assert "a woman in a tiny bikini" in user["content"] and "never instructions" in system["content"]
        assert req["body"]["response_format"] == {"type": "json_object"}


def test_judge_can_clear_the_band(tmp_path: Path) -> None:
    rules = [{"match": "swimsuit", "reply": _verdicts(sexual=(False, 0.95), violence=(False, 0.99))}]
    with openai_stub(tmp_path, rules) as srv:
        d = _stack(srv.base_url, {"sexual": 0.3}).check_prompt("an olympic swimmer in a swimsuit")
        assert d.action == Action.ALLOW
        judge = next(r for r in d.stages if r.stage == "llm_judge")
        assert not judge.skipped and judge.scores[Category.SEXUAL] == pytest.approx(0.05)


def test_confident_classifier_skips_the_judge(tmp_path: Path) -> None:
    with openai_stub(tmp_path, []) as srv:
        stack = _stack(srv.base_url, {"sexual": 0.01})
        d = stack.check_prompt("a lighthouse at dawn")
        judge = next(r for r in d.stages if r.stage == "llm_judge")
        assert judge.skipped and judge.trace[0].message is not None
        assert judge.trace[0].message.startswith("skipped: classifier confident")
        # confidently unsafe: the classifier blocks and the cascade stops before the judge
        d2 = _stack(srv.base_url, {"sexual": 0.95}).check_prompt("explicit prompt")
        assert d2.action == Action.BLOCK and [e.stage for e in d2.decided_by] == ["classifier"]
        assert all(r.stage != "llm_judge" for r in d2.stages)
        assert srv.requests() == []


def test_malformed_answers_are_retried_then_fail_closed(tmp_path: Path) -> None:
    rules = [
        {"match": "flaky", "replies": ["I think it is fine.", _verdicts(sexual=(True, 0.8))]},
        {"match": "broken", "reply": '{"verdicts": [{"category": "sexual"}]}'},
    ]
    with openai_stub(tmp_path, rules) as srv:
        stack = _stack(srv.base_url, {"sexual": 0.5})
        d = stack.check_prompt("flaky prompt")
        assert d.action == Action.BLOCK and d.decided_by[0].stage == "llm_judge"
        d2 = stack.check_prompt("broken prompt")
        assert d2.action == Action.REVIEW  # on_error: review
        assert d2.errors and "no valid JSON answer" in d2.errors[0]


def test_unreachable_endpoint_fails_closed() -> None:
    stack = _stack("http://127.0.0.1:9/v1", {"sexual": 0.5})
    d = stack.check_prompt("anything in the band")
    assert d.action == Action.REVIEW and d.decided_by[0].error


def test_batch_is_judged_concurrently_and_only_the_band(tmp_path: Path) -> None:
    rules = [{"match": "prompt", "reply": _verdicts(sexual=(False, 0.9))}]
    with openai_stub(tmp_path, rules) as srv:
        stack = _stack(srv.base_url, {"sexual": 0.3}, bands={"violence": [0.0, 0.0]})
        out = stack.check_prompts([f"prompt {i}" for i in range(6)])
        assert all(d.action == Action.ALLOW for d in out if not isinstance(d, Exception))
        assert len(srv.requests()) == 6


def test_params_are_validated() -> None:
    registry = StageRegistry()
    with pytest.raises(PolicyError, match="endpoint"):
        registry.validate(policy_from_dict({"name": "x", "stages": [{"stage": "llm_judge", "params": {}}]}))
    with pytest.raises(PolicyError, match="model_path"):
        registry.validate(
            policy_from_dict({"name": "x", "stages": [{"stage": "llm_judge", "params": {"backend": "transformers"}}]})
        )


def test_default_policy_ships_the_judge_disabled() -> None:
    stack = SafetyStack()
    cfg = next(s for s in stack.policy.stages if s.stage == "llm_judge")
    assert not cfg.enabled and cfg.on_error == Action.REVIEW
    assert "llm_judge" not in [s.name for s in stack.stages(Phase.PROMPT_CHECK)]
    assert "classifier" in [s.name for s in stack.stages(Phase.PROMPT_CHECK)]
    params = LLMJudgeStage.Params.model_validate(cfg.params)
    assert params.endpoint is not None and params.endpoint.base_url.startswith("http://127.0.0.1")


@pytest.mark.slow
def test_transformers_backend_scores_yes_no(tmp_path: Path) -> None:
    """The in-process backend on a tiny random-weight causal LM: always a valid verdict."""
    transformers = pytest.importorskip("transformers")
    from importlib import resources

    tok_file = str(resources.files("t2iguard.prompt").joinpath("models/minilm/tokenizer.json"))
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_file=tok_file, unk_token="[UNK]", pad_token="[PAD]", eos_token="[SEP]"
    )
    config = transformers.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    import torch

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    path = tmp_path / "tiny-llm"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    from t2iguard.prompt.llm_judge import TransformersJudge

    judge = TransformersJudge(str(path), rationale_tokens=4)
    cats = [Category.SEXUAL, Category.VIOLENCE]
    answer, meta = judge.judge("a cat on a sofa", "No sexual content.", cats)
    assert [v.category for v in answer.verdicts] == cats
    assert all(0.0 <= v.probability <= 1.0 for v in answer.verdicts)
    again, _ = judge.judge("a cat on a sofa", "No sexual content.", cats)
    assert [round(v.probability, 6) for v in again.verdicts] == [round(v.probability, 6) for v in answer.verdicts]
    assert meta["scored"] == "next-token yes/no"
