"""The policy: per category and per stage, a threshold and an action.

A policy is a YAML file validated by pydantic (unknown keys are errors, not ignored). The
default policy ships in the package (``t2iguard/policies/default.yaml``) and documents every
field. Resolution of a (stage, category) pair: the stage's per-category rule, else the stage's
``threshold`` with the category's action, else the category's own threshold and action.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from t2iguard.core.decision import Finding, PolicyRef, TraceEntry
from t2iguard.core.errors import PolicyError
from t2iguard.core.types import Action, Category, Phase

ZERO_TOLERANCE = frozenset({Category.MINORS})
"""Categories that are always blocked and never rewritten, whatever a policy says."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CategoryPolicy(_Strict):
    """How a category is enforced by default, across all stages."""

    action: Action = Action.BLOCK
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    description: str = ""
    zero_tolerance: bool = False


class Band(_Strict):
    """A graded response below a stage's threshold: scores in ``[threshold, the rule's threshold)`` get
    ``action`` instead of ``allow``, e.g. ``regenerate`` (generate with safety guidance, then check the
    image) for the borderline prompts a stage would otherwise let through unguarded."""

    threshold: float = Field(ge=0.0, le=1.0)
    action: Action = Action.REGENERATE

    @field_validator("action")
    @classmethod
    def _not_allow(cls, v: Action) -> Action:
        if v == Action.ALLOW:
            raise ValueError("a band's action must do something: transform, regenerate, review or block")
        return v


class Rule(_Strict):
    """A stage's override for one category. ``enabled: false`` ignores the category there;
    ``band`` sets a milder action for scores just under the threshold."""

    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    action: Action | None = None
    enabled: bool = True
    band: Band | None = None


class StageConfig(_Strict):
    """One stage of the pipeline, as the policy configures it."""

    stage: str = Field(description="registry name of the stage implementation")
    name: str | None = Field(default=None, description="instance name; defaults to `stage`")
    enabled: bool = True
    params: dict[str, Any] = Field(default_factory=dict)
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    categories: dict[Category, Rule] = Field(default_factory=dict)
    on_error: Action | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    phases: list[Phase] | None = Field(
        default=None, description="phases this instance runs in; defaults to the stage's own"
    )

    @property
    def instance_name(self) -> str:
        return self.name or self.stage

    @field_validator("on_error")
    @classmethod
    def _fail_closed(cls, v: Action | None) -> Action | None:
        if v is not None and v < Action.REVIEW:
            raise ValueError("on_error must be 'review' or 'block' (checks fail closed)")
        return v


class Limits(_Strict):
    """Input limits. Inputs beyond them are rejected with a clear error before any model runs."""

    max_prompt_chars: int = Field(default=4000, gt=0)
    max_image_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=40_000_000, gt=0)
    max_image_side: int = Field(default=16_384, gt=0)
    max_images: int = Field(default=16, gt=0)


class RegenerationPolicy(_Strict):
    """Regeneration instead of refusal: retry with safety guidance at escalating strength."""

    max_attempts: int = Field(default=3, ge=1, le=20)
    time_budget_s: float = Field(default=120.0, gt=0)
    strengths: list[str] = Field(default_factory=lambda: ["medium", "strong", "max"])
    fallback: Action = Action.BLOCK
    new_seed: bool = True

    @field_validator("fallback")
    @classmethod
    def _fallback(cls, v: Action) -> Action:
        if v < Action.REVIEW:
            raise ValueError("regeneration fallback must be 'review' or 'block'")
        return v


class SuspensionRule(_Strict):
    """Suspend a key once its decayed strike total reaches ``strikes``: for ``hours``, or until a
    reviewer lifts it when ``hours`` is null."""

    strikes: float = Field(gt=0)
    hours: float | None = Field(default=None, gt=0)


class PenaltyPolicy(_Strict):
    """Strikes per blocked request, per category, decaying exponentially (used by the gateway).

    Each ``block`` adds ``strikes[category]`` (else ``default_strikes``) for every category that
    decided it; a key's total halves every ``half_life_hours``. The highest ``suspend`` rule the
    total reaches suspends the key. Zero-tolerance categories (``minors``) suspend at once until a
    reviewer lifts it and are flagged for escalation, whatever the rest says.
    """

    enabled: bool = True
    half_life_hours: float = Field(default=24.0, gt=0)
    default_strikes: float = Field(default=1.0, ge=0)
    strikes: dict[Category, float] = Field(default_factory=dict)
    suspend: list[SuspensionRule] = Field(
        default_factory=lambda: [SuspensionRule(strikes=5, hours=1), SuspensionRule(strikes=15, hours=None)]
    )
    immediate: list[Category] = Field(
        default_factory=lambda: [Category.MINORS], description="categories that suspend at once"
    )
    escalate: list[Category] = Field(
        default_factory=lambda: [Category.MINORS], description="categories flagged for reporting to authorities"
    )
    apply_to_checks: bool = Field(default=False, description="also count blocks from the moderation endpoints")

    @field_validator("strikes")
    @classmethod
    def _non_negative(cls, v: dict[Category, float]) -> dict[Category, float]:
        for cat, n in v.items():
            if n < 0:
                raise ValueError(f"strikes for '{cat}' must be >= 0")
        return v

    def strikes_for(self, category: Category) -> float:
        return self.strikes.get(category, self.default_strikes)

    def is_immediate(self, category: Category) -> bool:
        return category in ZERO_TOLERANCE or category in self.immediate

    def is_escalated(self, category: Category) -> bool:
        return category in ZERO_TOLERANCE or category in self.escalate


class StagePolicy:
    """The slice of a policy one stage instance needs to turn findings into actions."""

    def __init__(self, policy: Policy, config: StageConfig, phase: Phase) -> None:
        self.policy = policy
        self.config = config
        self.phase = phase
        self.name = config.instance_name

    def rule(self, category: Category) -> tuple[float, Action, bool]:
        """Return (threshold, action, enabled) for ``category`` at this stage."""
        cat = self.policy.category(category)
        rule = self.config.categories.get(category)
        threshold = cat.threshold if self.config.threshold is None else self.config.threshold
        action = cat.action
        enabled = True
        if rule is not None:
            threshold = rule.threshold if rule.threshold is not None else threshold
            action = rule.action or action
            enabled = rule.enabled
        if category in ZERO_TOLERANCE or cat.zero_tolerance:
            action = Action.BLOCK
            enabled = True
        return threshold, action, enabled

    def band(self, category: Category) -> Band | None:
        """The stage's graded-response band for ``category``, if any."""
        rule = self.config.categories.get(category)
        return None if rule is None else rule.band

    def judge(self, finding: Finding, threshold_scale: float = 1.0) -> TraceEntry:
        """Apply the policy to one finding; ``threshold_scale`` (in (0, 1]) makes the stage stricter for
        this input, e.g. for a prompt in disguise (the trace records the threshold applied)."""
        if not 0.0 < threshold_scale <= 1.0:
            raise ValueError(f"threshold_scale must be in (0, 1], got {threshold_scale}")
        threshold, action, enabled = self.rule(finding.category)
        threshold = round(threshold * threshold_scale, 6)
        hit = enabled and finding.score >= threshold
        message = finding.message
        if not enabled:
            message = (message + "; " if message else "") + "category disabled at this stage"
        band = self.band(finding.category)
        if enabled and not hit and band is not None:
            low = round(band.threshold * threshold_scale, 6)
            if finding.score >= low:
                note = f"in the band under the {action} threshold {threshold:g}"
                hit, action, threshold = True, band.action, low
                message = (message + "; " if message else "") + note
        return TraceEntry(
            stage=self.name,
            phase=self.phase,
            category=finding.category,
            score=round(finding.score, 6),
            threshold=threshold,
            action=action if hit else Action.ALLOW,
            evidence=finding.evidence,
            message=message,
        )

    @property
    def on_error(self) -> Action:
        return self.config.on_error or self.policy.on_error


class Policy(_Strict):
    """A complete policy. Build with :func:`load_policy` or :func:`default_policy`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str = "1"
    description: str = ""
    on_error: Action = Action.BLOCK
    short_circuit: bool = True
    limits: Limits = Field(default_factory=Limits)
    categories: dict[Category, CategoryPolicy] = Field(default_factory=dict)
    stages: list[StageConfig] = Field(default_factory=list)
    regeneration: RegenerationPolicy = Field(default_factory=RegenerationPolicy)
    penalties: PenaltyPolicy = Field(default_factory=PenaltyPolicy)
    source: str | None = Field(default=None, exclude=True)

    @field_validator("on_error")
    @classmethod
    def _on_error(cls, v: Action) -> Action:
        if v < Action.REVIEW:
            raise ValueError("on_error must be 'review' or 'block' (checks fail closed)")
        return v

    @model_validator(mode="after")
    def _check(self) -> Policy:
        for cat in ZERO_TOLERANCE:
            cp = self.categories.get(cat)
            if cp is not None and cp.action != Action.BLOCK:
                raise ValueError(f"category '{cat}' is zero tolerance: its action must be 'block', not '{cp.action}'")
        for name, cp in self.categories.items():
            if cp.zero_tolerance and cp.action != Action.BLOCK:
                raise ValueError(f"category '{name}' is zero_tolerance but its action is '{cp.action}'")
        seen: set[str] = set()
        for sc in self.stages:
            if sc.instance_name in seen:
                raise ValueError(f"stage name '{sc.instance_name}' is used twice; give one a distinct `name`")
            seen.add(sc.instance_name)
            for cat, rule in sc.categories.items():
                zt = cat in ZERO_TOLERANCE or self.category(cat).zero_tolerance
                if zt and rule.action is not None and rule.action != Action.BLOCK:
                    raise ValueError(
                        f"stage '{sc.instance_name}': category '{cat}' is zero tolerance; "
                        f"it cannot be set to '{rule.action}'"
                    )
                if zt and not rule.enabled:
                    raise ValueError(f"stage '{sc.instance_name}': zero-tolerance category '{cat}' cannot be disabled")
                if rule.band is not None:
                    if zt and rule.band.action != Action.BLOCK:
                        raise ValueError(
                            f"stage '{sc.instance_name}': category '{cat}' is zero tolerance; "
                            f"its band cannot be set to '{rule.band.action}'"
                        )
                    top = StagePolicy(self, sc, Phase.PROMPT_CHECK).rule(cat)[0]
                    if rule.band.threshold >= top:
                        raise ValueError(
                            f"stage '{sc.instance_name}': category '{cat}': the band's threshold "
                            f"{rule.band.threshold:g} must be under the stage's threshold {top:g}"
                        )
        return self

    def category(self, category: Category) -> CategoryPolicy:
        """The category's settings; a category the file omits is enforced with the defaults
        (block at 0.5), so forgetting a category fails closed."""
        found = self.categories.get(category)
        if found is not None:
            return found
        return CategoryPolicy(zero_tolerance=category in ZERO_TOLERANCE)

    def stage_policy(self, config: StageConfig, phase: Phase) -> StagePolicy:
        return StagePolicy(self, config, phase)

    @cached_property
    def sha256(self) -> str:
        dumped = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(dumped.encode()).hexdigest()

    @property
    def ref(self) -> PolicyRef:
        return PolicyRef(name=self.name, version=self.version, sha256=self.sha256)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=False), sort_keys=False, allow_unicode=True)


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid policy {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  - {loc}: {e['msg']}")
    return "\n".join(lines)


def policy_from_dict(data: Any, source: str = "<dict>") -> Policy:
    """Validate a parsed policy document."""
    if not isinstance(data, dict):
        raise PolicyError(f"invalid policy {source}: the document must be a mapping, got {type(data).__name__}")
    try:
        policy = Policy.model_validate({**data, "source": source})
    except ValidationError as err:
        raise PolicyError(_format_validation_error(err, source)) from None
    return policy


def load_policy(path: str | Path) -> Policy:
    """Load and validate a policy file (YAML)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(f"policy file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read policy file {p}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy file {p} is not valid YAML: {exc}") from None
    return policy_from_dict(data, str(p))


def default_policy_path() -> Path:
    return Path(str(resources.files("t2iguard.policies").joinpath("default.yaml")))


def default_policy() -> Policy:
    """The documented default policy shipped in the package."""
    return load_policy(default_policy_path())
