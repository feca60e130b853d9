"""Gateway configuration: a YAML file, overridden by ``T2IGUARD_*`` environment variables.

Every field has a working default, so ``t2iguard serve`` runs with no file at all (tiny generator,
SQLite under ``./t2iguard-data``). Environment variables override the file: ``T2IGUARD_PORT=9000``
for a top-level field, ``T2IGUARD_RATE_LIMIT__PER_KEY_RPS=5`` (double underscore) for a nested
one; values are parsed as YAML scalars (``true``, ``5``, ``null``). See
``docs/gateway.example.yaml`` for the whole file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from t2iguard.core.errors import ConfigurationError

ENV_PREFIX = "T2IGUARD_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RateLimitConfig(_Strict):
    """Token buckets: ``*_rps`` tokens are added per second up to ``*_burst``; a request takes one."""

    enabled: bool = True
    per_key_rps: float = Field(default=10.0, gt=0)
    per_key_burst: int = Field(default=20, ge=1)
    per_ip_rps: float = Field(default=50.0, gt=0)
    per_ip_burst: int = Field(default=100, ge=1)


class RetentionConfig(_Strict):
    """What is kept on disk. Images held for review (and reported outputs) are always kept until
    a reviewer resolves them; returned outputs are kept for ``url_ttl_s`` when served as URLs, and
    for ``output_days`` when ``store_outputs`` is true (so users can report them later)."""

    store_outputs: bool = False
    output_days: float = Field(default=30.0, gt=0)
    url_ttl_s: int = Field(default=3600, gt=0)


class GatewayConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    data_dir: Path = Path("t2iguard-data")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/t2iguard.db (WAL)"
    )
    redis_url: str | None = Field(default=None, description="share rate limits between replicas through Redis")
    generator: str = Field(default="tiny", description="generator spec for make_generator")
    policy: Path | None = Field(default=None, description="default policy file (default: the built-in policy)")
    policies: dict[str, Path] = Field(default_factory=dict, description="named policies keys can be assigned")
    max_body_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    max_n: int = Field(default=4, ge=1, le=16)
    max_side: int = Field(default=1024, ge=64)
    default_size: str = Field(default="512x512", pattern=r"^[0-9]{2,5}x[0-9]{2,5}$")
    workers: int = Field(default=4, ge=1, description="threads running the safety stack")
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    public_url: str | None = Field(default=None, description="base URL for image links (default: the request's)")
    trust_forwarded_for: bool = Field(default=False, description="take the client IP from X-Forwarded-For")
    drain_timeout_s: float = Field(default=30.0, gt=0, description="graceful shutdown: wait this long for requests")
    warmup: bool = True
    migrate: bool = Field(default=True, description="run Alembic migrations at start-up")
    log_level: str = "info"
    json_logs: bool = True

    @field_validator("generator")
    @classmethod
    def _spec(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("generator spec is empty")
        return v

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 't2iguard.db').as_posix()}"

    @property
    def image_dir(self) -> Path:
        return self.data_dir / "images"


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in ("T2IGUARD_DATA", "T2IGUARD_CONFIG"):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if path[0] not in GatewayConfig.model_fields:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(merged.get(k), Mapping):
            merged[k] = _merge(dict(merged[k]), v)
        else:
            merged[k] = v
    return merged


def load_config(
    path: str | Path | None = None, *, env: Mapping[str, str] | None = None, **overrides: Any
) -> GatewayConfig:
    """File (``path`` or ``$T2IGUARD_CONFIG``), then environment, then keyword overrides."""
    environ = os.environ if env is None else env
    data: dict[str, Any] = {}
    src = path or environ.get("T2IGUARD_CONFIG")
    if src:
        p = Path(src)
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(f"gateway config not found: {p}") from None
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigurationError(f"cannot read gateway config {p}: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigurationError(f"gateway config {p} must be a mapping")
        data = loaded or {}
        # relative paths in the file are relative to the file
        for key in ("data_dir", "policy"):
            if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
                data[key] = str(p.parent / data[key])
        if isinstance(data.get("policies"), dict):
            data["policies"] = {
                k: (str(p.parent / v) if isinstance(v, str) and not Path(v).is_absolute() else v)
                for k, v in data["policies"].items()
            }
    data = _merge(data, _env_overrides(environ))
    data = _merge(data, {k: v for k, v in overrides.items() if v is not None})
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as err:
        lines = [f"invalid gateway config{' ' + str(src) if src else ''}:"]
        for e in err.errors():
            lines.append(f"  - {'.'.join(str(x) for x in e['loc'])}: {e['msg']}")
        raise ConfigurationError("\n".join(lines)) from None
