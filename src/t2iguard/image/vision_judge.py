"""A vision-language model as a policy judge, over any OpenAI-compatible chat endpoint.

For categories no packaged classifier covers offline (violence, gore, hate symbols, self-harm
imagery), the image is sent to a multimodal chat model — vLLM or Ollama serving LlavaGuard
(Helff et al., *LlavaGuard: VLM-based Safeguards for Vision Dataset Curation and Safety
Assessment*, 2024), ShieldGemma 2 (Zeng et al., 2025), Qwen-VL, ... — with the policy text of
each category in the prompt, and must answer a JSON object with one validated verdict per
category (a score in [0, 1] and a short reason). Malformed answers are retried; an endpoint that
fails or never validates raises, and the pipeline fails closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, create_model

from t2iguard.core.decision import Finding, StageResult
from t2iguard.core.inputs import ImageItem
from t2iguard.core.llm import ChatClient, ChatEndpoint, image_part
from t2iguard.core.stage import ImageContext, ImageStage
from t2iguard.core.types import Category

DEFAULT_CATEGORIES = (Category.VIOLENCE, Category.SHOCKING, Category.HATE, Category.SELF_HARM, Category.ILLEGAL)

# What each category means for an image (the policy's own description is appended).
IMAGE_GUIDANCE: dict[Category, str] = {
    Category.SEXUAL: "nudity, sexual acts or sexualised depiction",
    Category.MINORS: "any sexualised or exploitative depiction of a child",
    Category.VIOLENCE: "graphic violence: wounds, blood, killing, torture, weapons used against people",
    Category.SELF_HARM: "self-injury, suicide, or eating disorders presented as desirable",
    Category.HATE: "hate symbols (e.g. swastikas, white-power insignia), slurs, dehumanising caricatures",
    Category.HARASSMENT: "humiliation, bullying or degradation of a person",
    Category.ILLEGAL: "drug use or manufacture, weapons trafficking, other crimes shown approvingly",
    Category.SHOCKING: "gore, corpses, mutilation, disgusting or disturbing imagery",
    Category.PUBLIC_FIGURE: "a recognisable real public figure",
    Category.PRIVATE_INDIVIDUAL: "a recognisable private person",
    Category.POLITICAL_MISINFORMATION: "fabricated political events presented as real",
}


class CategoryVerdict(BaseModel):
    model_config = ConfigDict(extra="ignore")

    score: float = Field(ge=0.0, le=1.0)
    reason: str = ""


def verdict_schema(categories: Sequence[Category]) -> type[BaseModel]:
    """A pydantic model requiring one :class:`CategoryVerdict` per category."""
    fields: dict[str, Any] = {str(c): (CategoryVerdict, ...) for c in categories}
    return create_model("ImageVerdict", __config__=ConfigDict(extra="ignore"), **fields)


class VisionJudgeStage(ImageStage):
    """Scores images per category with a multimodal chat model (LlavaGuard, ShieldGemma 2, ...)."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        endpoint: ChatEndpoint
        categories: list[Category] = Field(default_factory=lambda: list(DEFAULT_CATEGORIES))
        instructions: str = Field(default="", description="extra policy text for the judge")
        include_prompt: bool = Field(default=False, description="send the generation prompt as context")
        max_side: int = Field(default=768, ge=64, le=4096, description="images are downscaled to this side")
        concurrency: int = Field(default=4, ge=1, le=64)

    cost: ClassVar[str] = "remote"
    covers: ClassVar[frozenset[Category]] = frozenset(Category)

    @classmethod
    def covers_for(cls, params: BaseModel) -> frozenset[Category]:
        return frozenset(params.categories)  # type: ignore[attr-defined]

    def __init__(self, policy: Any, params: BaseModel, models: Any) -> None:
        super().__init__(policy, params, models)
        p: VisionJudgeStage.Params = params  # type: ignore[assignment]
        if not p.categories:
            raise ValueError("vision_judge needs at least one category")
        self.schema = verdict_schema(p.categories)

    def _client(self) -> ChatClient:
        p: VisionJudgeStage.Params = self.params  # type: ignore[assignment]
        return self.models.get(("chat", p.endpoint.model_dump_json()), lambda: ChatClient(p.endpoint))

    def system_prompt(self) -> str:
        p: VisionJudgeStage.Params = self.params  # type: ignore[assignment]
        lines = [
            "You are an image safety classifier. Judge the image against each policy category below.",
            "For every category give a score from 0 (clearly does not violate) to 1 (clearly violates), "
            "and a short reason. Judge only what is visible.",
            "",
            "Policy categories:",
        ]
        for c in p.categories:
            desc = self.policy.policy.category(c).description
            lines.append(f"- {c}: {IMAGE_GUIDANCE.get(c, '')}" + (f" ({desc})" if desc else ""))
        if p.instructions:
            lines += ["", p.instructions.strip()]
        example = ", ".join(f'"{c}": {{"score": 0.0, "reason": "..."}}' for c in p.categories)
        lines += ["", f"Answer with one JSON object and nothing else: {{{example}}}"]
        return "\n".join(lines)

    def judge(self, item: ImageItem, ctx: ImageContext) -> tuple[BaseModel, dict[str, Any]]:
        p: VisionJudgeStage.Params = self.params  # type: ignore[assignment]
        text = "Classify this image."
        if p.include_prompt and ctx.prompt:
            text += f" It was generated from the prompt: {ctx.prompt!r}."
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self.system_prompt()},
            {"role": "user", "content": [{"type": "text", "text": text}, image_part(item.image, max_side=p.max_side)]},
        ]
        return self._client().complete_json(messages, self.schema)

    def scan_batch(self, items: Sequence[ImageItem], ctx: ImageContext) -> list[StageResult]:
        p: VisionJudgeStage.Params = self.params  # type: ignore[assignment]
        if len(items) == 1:
            answers = [self.judge(items[0], ctx)]
        else:
            with ThreadPoolExecutor(max_workers=min(p.concurrency, len(items))) as pool:
                answers = list(pool.map(lambda it: self.judge(it, ctx), items))
        results = []
        for verdict, meta in answers:
            findings = []
            for c in p.categories:
                v: CategoryVerdict = getattr(verdict, str(c))
                findings.append(
                    Finding(
                        category=c,
                        score=v.score,
                        message=v.reason[:300] or None,
                        evidence={"judge": p.endpoint.model, "attempts": meta["attempts"]},
                    )
                )
            results.append(self.result(findings, phase=ctx.phase))
        return results
