"""Stage registry: names in the policy file -> stage classes.

A new check is one new file plus one line in :data:`BUILTIN_STAGES`. Entries are import paths,
resolved on first use, so a stage whose optional dependency is missing costs nothing until a
policy asks for it. Third-party packages add stages through the ``t2iguard.stages`` entry-point
group.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from types import MappingProxyType

from pydantic import BaseModel, ValidationError

from t2iguard.core.errors import ConfigurationError, PolicyError
from t2iguard.core.policy import Policy, StageConfig
from t2iguard.core.stage import ModelCache, Stage
from t2iguard.core.types import Category, Phase

BUILTIN_STAGES: Mapping[str, str] = MappingProxyType(
    {
        # prompt checks
        "normalize": "t2iguard.prompt.normalize:NormalizeStage",
        "blocklist": "t2iguard.prompt.blocklist:BlocklistStage",
        # image checks
        "nsfw": "t2iguard.image.nsfw:OpenNSFWStage",
        "nudity": "t2iguard.image.nudity:NudeNetStage",
        "tiny_concepts": "t2iguard.image.tiny_concepts:TinyConceptStage",
    }
)

ENTRY_POINT_GROUP = "t2iguard.stages"


class StageRegistry:
    """Maps stage names to classes. Build one per application; there is no global registry."""

    def __init__(
        self,
        entries: Mapping[str, str | type[Stage]] | None = None,
        *,
        load_entry_points: bool = True,
    ) -> None:
        self._entries: dict[str, str | type[Stage]] = dict(BUILTIN_STAGES if entries is None else entries)
        if load_entry_points:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                self._entries.setdefault(ep.name, ep.value)

    def register(self, name: str, target: str | type[Stage]) -> None:
        if name in self._entries:
            raise ConfigurationError(f"stage name '{name}' is already registered")
        self._entries[name] = target

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> type[Stage]:
        """The stage class registered as ``name`` (imported on first use)."""
        try:
            target = self._entries[name]
        except KeyError:
            raise ConfigurationError(f"unknown stage '{name}'; registered stages: {', '.join(self.names())}") from None
        if isinstance(target, str):
            module_name, _, attr = target.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise ConfigurationError(f"stage '{name}' cannot be imported from {module_name}: {exc}") from exc
            cls = getattr(module, attr, None)
            if cls is None:
                raise ConfigurationError(f"stage '{name}': {module_name} has no attribute {attr}")
            target = cls
            self._entries[name] = cls
        if not (isinstance(target, type) and issubclass(target, Stage)):
            raise ConfigurationError(f"stage '{name}' is not a Stage subclass: {target!r}")
        return target

    def params(self, config: StageConfig) -> BaseModel:
        """Validate a stage's ``params`` against its ``Params`` model."""
        cls = self.get(config.stage)
        try:
            return cls.Params.model_validate(config.params)
        except ValidationError as err:
            lines = [f"stage '{config.instance_name}' ({config.stage}): invalid params"]
            for e in err.errors():
                loc = ".".join(str(p) for p in e["loc"]) or "(params)"
                lines.append(f"  - params.{loc}: {e['msg']}")
            raise PolicyError("\n".join(lines)) from None

    def build(self, config: StageConfig, policy: Policy, models: ModelCache) -> Stage:
        cls = self.get(config.stage)
        params = self.params(config)
        return cls(policy.stage_policy(config, cls.phases[0]), params, models)

    def validate(self, policy: Policy) -> list[str]:
        """Check every stage of ``policy`` exists and its params are valid.

        Returns warnings (e.g. categories no configured stage covers). Raises
        :class:`PolicyError` on errors.
        """
        problems: list[str] = []
        covered: set[str] = set()
        for sc in policy.stages:
            try:
                cls = self.get(sc.stage)
            except ConfigurationError as exc:
                problems.append(str(exc))
                continue
            try:
                self.params(sc)
            except PolicyError as exc:
                problems.append(str(exc))
            bad = [str(p) for p in (sc.phases or []) if p not in cls.phases]
            if bad:
                problems.append(
                    f"stage '{sc.instance_name}' cannot run in phase(s) {', '.join(bad)}; "
                    f"it supports {', '.join(str(p) for p in cls.phases)}"
                )
            if sc.enabled:
                covered.update(cls.covers)
        if problems:
            raise PolicyError(f"invalid policy {policy.source or policy.name}:\n" + "\n".join(problems))
        warnings = []
        enforced = [c for c in Category if policy.category(c).action.severity > 0]
        uncovered = sorted(str(c) for c in enforced if c not in covered)
        if uncovered:
            warnings.append("no configured stage scores these enforced categories: " + ", ".join(uncovered))
        return warnings

    def phases_of(self, config: StageConfig) -> tuple[Phase, ...]:
        """The phases a configured instance runs in (its config's, else the class default)."""
        cls = self.get(config.stage)
        if config.phases:
            return tuple(p for p in cls.phases if p in config.phases)
        return cls.phases
