"""Gateway configuration (file + environment) and the admin commands of the CLI."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from t2iguard.cli.main import app
from t2iguard.core.errors import ConfigurationError
from t2iguard.service.config import load_config
from t2iguard.service.store import Store

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_is_valid_and_matches_defaults() -> None:
    cfg = load_config(ROOT / "docs" / "gateway.example.yaml", env={})
    default = load_config(None, env={})
    assert cfg.model_dump(exclude={"data_dir"}) == default.model_dump(exclude={"data_dir"})
    assert default.generator == "tiny" and default.db_url.startswith("sqlite:///")


def test_env_overrides_file(tmp_path: Path) -> None:
    f = tmp_path / "g.yaml"
    f.write_text("port: 9000\nrate_limit: {per_key_rps: 3}\npolicies: {strict: strict.yaml}\n")
    env = {"T2IGUARD_PORT": "9100", "T2IGUARD_RATE_LIMIT__PER_KEY_BURST": "7", "T2IGUARD_REDIS_URL": "redis://x"}
    cfg = load_config(f, env=env)
    assert cfg.port == 9100 and cfg.redis_url == "redis://x"
    assert cfg.rate_limit.per_key_rps == 3 and cfg.rate_limit.per_key_burst == 7
    assert cfg.policies["strict"] == tmp_path / "strict.yaml"  # relative to the file
    with pytest.raises(ConfigurationError, match=r"rate_limit\.per_key_rps"):
        load_config(None, env={"T2IGUARD_RATE_LIMIT__PER_KEY_RPS": "-1"})
    with pytest.raises(ConfigurationError, match="not found"):
        load_config(tmp_path / "missing.yaml", env={})
    with pytest.raises(ConfigurationError, match="bogus"):
        load_config(None, env={}, bogus=1)


def test_keys_and_escalation_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path)]
    r = runner.invoke(app, ["keys", "create", "--role", "reviewer", "--name", "alice", "--json", *base])
    assert r.exit_code == 0, r.output
    created = json.loads(r.stdout)
    assert created["role"] == "reviewer" and created["secret"].startswith("t2g_")
    store = Store(f"sqlite:///{tmp_path / 't2iguard.db'}")
    info = store.authenticate(created["secret"])
    assert info is not None and info.id == created["id"]

    r = runner.invoke(app, ["keys", "suspend", created["id"], "--note", "abuse", "--json", *base])
    assert r.exit_code == 0 and json.loads(r.stdout)["suspended_indefinitely"] is True
    r = runner.invoke(app, ["keys", "lift", created["id"], "--json", *base])
    assert r.exit_code == 0 and json.loads(r.stdout)["suspended"] is False
    r = runner.invoke(app, ["keys", "list", "--json", *base])
    assert [json.loads(line)["id"] for line in r.stdout.splitlines()] == [created["id"]]
    assert "secret" not in r.stdout
    r = runner.invoke(app, ["keys", "revoke", created["id"], *base])
    assert r.exit_code == 0 and store.authenticate(created["secret"]).revoked  # type: ignore[union-attr]
    assert runner.invoke(app, ["keys", "create", "--role", "root", *base]).exit_code == 2
    assert runner.invoke(app, ["keys", "create", "--policy", "nope", *base]).exit_code == 2
    assert runner.invoke(app, ["keys", "lift", "key_000000000000", *base]).exit_code == 2

    out = tmp_path / "incidents.jsonl"
    r = runner.invoke(app, ["escalations", "export", "-o", str(out), *base])
    assert r.exit_code == 0 and out.read_text() == ""
    r = runner.invoke(app, ["db", "upgrade", "--json", *base])
    assert r.exit_code == 0 and json.loads(r.stdout) == {"revision": "0001"}
    store.close()


def test_serve_refuses_a_bad_configuration_clearly(tmp_path: Path) -> None:
    runner = CliRunner()
    handlers = {name: list(logging.getLogger(name).handlers) for name in ("t2iguard", "uvicorn", "uvicorn.error")}
    r = runner.invoke(app, ["serve", "--generator", "nope", "--data-dir", str(tmp_path), "--port", "0"])
    assert r.exit_code == 2 and "unknown generator backend 'nope'" in r.output
    r = runner.invoke(
        app,
        ["serve", "--policy", str(tmp_path / "missing.yaml"), "--generator", "procedural", "--data-dir", str(tmp_path)],
    )
    assert r.exit_code == 2 and "policy file not found" in r.output
    # a refused start leaves the process's log handlers alone (they would write to the runner's closed stream)
    assert {name: list(logging.getLogger(name).handlers) for name in handlers} == handlers
