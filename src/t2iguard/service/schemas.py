"""Request and response bodies of the gateway, in the shapes of the OpenAI Images API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

SIZE_PATTERN = r"^(auto|[0-9]{2,5}x[0-9]{2,5})$"


def _strict_bool(v: Any) -> Any:
    """JSON booleans only: ``0`` is not ``false`` (pydantic's lax mode would accept it)."""
    if not isinstance(v, bool):
        raise ValueError("must be a JSON boolean")
    return v


class _Forbid(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageGenerationRequest(_Forbid):
    """``POST /v1/images/generations``. Fields OpenAI defines but t2iguard does not use (``model``,
    ``quality``, ``style``, ...) are accepted and recorded; unknown fields are a 400."""

    prompt: str = Field(min_length=1, max_length=100_000)
    n: int = Field(default=1, ge=1, le=16, strict=True)  # JSON integers only: `true` is not 1
    size: str | None = Field(default=None, pattern=SIZE_PATTERN, max_length=16)
    response_format: Literal["url", "b64_json"] | None = None
    user: str | None = Field(default=None, max_length=256)
    model: str | None = Field(default=None, max_length=100)
    quality: str | None = Field(default=None, max_length=20)
    style: str | None = Field(default=None, max_length=20)
    background: str | None = Field(default=None, max_length=20)
    moderation: str | None = Field(default=None, max_length=20)
    output_format: Literal["png"] | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100, strict=True)
    safety_identifier: str | None = Field(default=None, max_length=256)
    stream: Annotated[Literal[False], BeforeValidator(_strict_bool)] | None = None


EDIT_FIELDS = frozenset(
    {
        "image",
        "image[]",
        "mask",
        "prompt",
        "n",
        "size",
        "response_format",
        "user",
        "model",
        "quality",
        "background",
        "input_fidelity",
        "output_format",
        "output_compression",
        "safety_identifier",
        "stream",
    }
)

EDIT_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image", "prompt"],
                    "additionalProperties": False,
                    "properties": {
                        "image": {"type": "string", "format": "binary", "description": "the image to edit"},
                        "mask": {"type": "string", "format": "binary", "description": "PNG; transparent = edit"},
                        "prompt": {"type": "string", "minLength": 1, "maxLength": 100000},
                        "n": {"type": "integer", "minimum": 1, "maximum": 16, "default": 1},
                        "size": {"type": "string", "pattern": SIZE_PATTERN},
                        "response_format": {"type": "string", "enum": ["url", "b64_json"]},
                        "user": {"type": "string", "maxLength": 256},
                        "model": {"type": "string", "maxLength": 100},
                    },
                }
            }
        },
    }
}

IMAGE_CHECK_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "additionalProperties": False,
                    "properties": {
                        "image": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 16,
                            "items": {"type": "string", "format": "binary"},
                            "description": "one or more images",
                        },
                        "phase": {"type": "string", "enum": ["input", "output"], "default": "input"},
                        "prompt": {"type": "string", "maxLength": 100000},
                    },
                }
            }
        },
    }
}


class ImageData(BaseModel):
    id: str
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class SafetyInfo(BaseModel):
    request_id: str
    decision_id: str
    action: str
    categories: list[str]
    reason: str


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    t2iguard: SafetyInfo


class ModerationRequest(_Forbid):
    input: str | list[str] = Field(description="one prompt or a list of prompts")
    model: str | None = Field(default=None, max_length=100)


class ModerationResult(BaseModel):
    flagged: bool
    action: str
    categories: dict[str, bool]
    category_scores: dict[str, float]
    decision: dict[str, Any]


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]


class ReportRequest(_Forbid):
    output_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=2000)


class ReportResponse(BaseModel):
    id: str
    status: str
    output_id: str


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    model_config = ConfigDict(extra="allow")


class ErrorResponse(BaseModel):
    error: ErrorBody


class KeyCreate(_Forbid):
    name: str = Field(default="", max_length=200)
    role: Literal["user", "reviewer", "admin"] = "user"
    policy: str | None = Field(default=None, max_length=100)


class KeyUpdate(_Forbid):
    role: Literal["user", "reviewer", "admin"] | None = None
    policy: str | None = Field(default=None, max_length=100)
    clear_policy: bool = False
    revoke: bool | None = None
    suspend_hours: float | None = Field(default=None, gt=0, le=24 * 365 * 10)
    suspend_indefinitely: bool = False
    lift: bool = False
    note: str = Field(default="", max_length=2000)


class ReviewActionRequest(_Forbid):
    action: Literal["approve", "reject", "escalate"]
    note: str = Field(default="", max_length=2000)


class LiftRequest(_Forbid):
    note: str = Field(default="", max_length=2000)
