"""``t2iguard serve`` (the gateway) and its admin commands: ``keys``, ``db``, ``escalations``."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from t2iguard.core.errors import ConfigurationError, MissingDependencyError, PolicyError

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="gateway YAML config (default: $T2IGUARD_CONFIG or built-in)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
DbOpt = Annotated[str | None, typer.Option("--db", help="SQLAlchemy database URL (overrides the config)")]
DataOpt = Annotated[Path | None, typer.Option("--data-dir", help="data directory (SQLite file, stored images)")]

keys_app = typer.Typer(help="Create and manage API keys of the gateway.", no_args_is_help=True)
db_app = typer.Typer(help="The gateway's database (Alembic migrations).", no_args_is_help=True)
esc_app = typer.Typer(help="Escalations for reporting to authorities.", no_args_is_help=True)


def _fail(message: str) -> typer.Exit:
    sys.stderr.write(f"error: {message}\n")
    return typer.Exit(2)


def _emit(obj: Any, as_json: bool, text: str) -> None:
    sys.stdout.write((json.dumps(obj, ensure_ascii=False) if as_json else text) + "\n")
    sys.stdout.flush()


def _config(config: Path | None, **overrides: Any) -> Any:
    try:
        from t2iguard.service.config import load_config
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise _fail(str(MissingDependencyError("fastapi", "service", "the gateway"))) from exc
    try:
        return load_config(config, **overrides)
    except ConfigurationError as exc:
        raise _fail(str(exc)) from None


def _store(config: Path | None, db: str | None, data_dir: Path | None) -> Any:
    from t2iguard.service.store import Store

    cfg = _config(config, database_url=db, data_dir=data_dir)
    store = Store(cfg.db_url)
    store.migrate()
    return store


def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port (0: any free port)")] = None,
    generator: Annotated[str | None, typer.Option(help="generator spec, e.g. tiny, procedural")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", "-p", help="default policy file")] = None,
    db: DbOpt = None,
    data_dir: DataOpt = None,
    redis: Annotated[str | None, typer.Option("--redis", help="Redis URL for shared rate limits")] = None,
) -> None:
    """Run the OpenAI-compatible safety gateway (embedded defaults: tiny generator, SQLite)."""
    cfg = _config(
        config,
        host=host,
        port=port,
        generator=generator,
        policy=policy,
        database_url=db,
        data_dir=data_dir,
        redis_url=redis,
    )
    import uvicorn

    from t2iguard.service.app import build_app
    from t2iguard.service.metrics import configure_logging

    try:
        app = build_app(cfg)
    except (ConfigurationError, PolicyError) as exc:
        raise _fail(str(exc)) from None
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((cfg.host, cfg.port))
    except OSError as exc:
        raise _fail(f"cannot listen on {cfg.host}:{cfg.port}: {exc}") from None
    bound = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=int(cfg.drain_timeout_s),
            limit_concurrency=None,
            timeout_keep_alive=30,
        )
    )
    # only a gateway that starts takes over the process's log handlers (a refused start leaves them be)
    configure_logging(cfg.log_level, cfg.json_logs)
    host_s = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    sys.stdout.write(json.dumps({"event": "listening", "url": f"http://{host_s}:{bound}", "port": bound}) + "\n")
    sys.stdout.flush()
    server.run(sockets=[sock])


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="a label for the key")] = "",
    role: Annotated[str, typer.Option(help="user, reviewer or admin")] = "user",
    policy: Annotated[str | None, typer.Option(help="name of a policy in the config's `policies`")] = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
    data_dir: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key and print its secret (shown once; only its hash is stored)."""
    cfg = _config(config, database_url=db, data_dir=data_dir)
    if policy is not None and policy not in cfg.policies:
        raise _fail(f"unknown policy {policy!r}; configured: {', '.join(cfg.policies) or 'none'}")
    store = _store(config, db, data_dir)
    try:
        info, secret = store.create_key(name, role, policy)
    except ConfigurationError as exc:
        raise _fail(str(exc)) from None
    finally:
        store.close()
    _emit({**info.public(), "secret": secret}, as_json, f"{info.id} ({info.role})\n{secret}")


@keys_app.command("list")
def keys_list(config: ConfigOpt = None, db: DbOpt = None, data_dir: DataOpt = None, as_json: JsonOpt = False) -> None:
    """List keys (never their secrets)."""
    store = _store(config, db, data_dir)
    try:
        keys = store.list_keys()
    finally:
        store.close()
    for k in keys:
        state = "revoked" if k.revoked else ("suspended" if k.suspended() else "active")
        _emit(k.public(), as_json, f"{k.id}\t{k.role}\t{state}\t{k.policy or '-'}\t{k.name}")


def _update(key_id: str, config: Path | None, db: str | None, data_dir: Path | None, as_json: bool, **kw: Any) -> None:
    store = _store(config, db, data_dir)
    try:
        info = store.update_key(key_id, actor="cli", **kw)
    finally:
        store.close()
    if info is None:
        raise _fail(f"no key {key_id}")
    _emit(info.public(), as_json, f"{info.id}: {json.dumps(info.public())}")


@keys_app.command("suspend")
def keys_suspend(
    key_id: str,
    hours: Annotated[float | None, typer.Option(help="hours (default: until lifted)")] = None,
    note: str = "",
    config: ConfigOpt = None,
    db: DbOpt = None,
    data_dir: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Suspend a key for some hours, or until lifted."""
    _update(key_id, config, db, data_dir, as_json, suspend_hours=hours, suspend_indefinitely=hours is None, note=note)


@keys_app.command("lift")
def keys_lift(
    key_id: str,
    note: str = "",
    config: ConfigOpt = None,
    db: DbOpt = None,
    data_dir: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Lift a key's suspension and reset its strikes."""
    _update(key_id, config, db, data_dir, as_json, lift=True, note=note)


@keys_app.command("revoke")
def keys_revoke(
    key_id: str, config: ConfigOpt = None, db: DbOpt = None, data_dir: DataOpt = None, as_json: JsonOpt = False
) -> None:
    """Revoke a key for good."""
    _update(key_id, config, db, data_dir, as_json, revoke=True)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
    config: ConfigOpt = None,
    db: DbOpt = None,
    data_dir: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Apply the schema migrations (the server also does this at start-up)."""
    from t2iguard.service.store import Store

    cfg = _config(config, database_url=db, data_dir=data_dir)
    store = Store(cfg.db_url)
    try:
        store.migrate(revision)
        rev = store.current_revision()
    finally:
        store.close()
    _emit({"revision": rev}, as_json, f"database at revision {rev}")


@esc_app.command("export")
def escalations_export(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="file to write (default: stdout)")] = None,
    include_exported: Annotated[bool, typer.Option(help="also incidents exported before")] = False,
    mark: Annotated[bool, typer.Option(help="mark the incidents as exported")] = True,
    config: ConfigOpt = None,
    db: DbOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """Write open incidents as JSON Lines (format t2iguard-escalation/1, see README)."""
    from t2iguard.service.store import dumps_jsonl

    store = _store(config, db, data_dir)
    try:
        text = dumps_jsonl(store.export_incidents(include_exported=include_exported, mark=mark))
    finally:
        store.close()
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")


def register(app: typer.Typer) -> None:
    """Add the gateway's commands to the ``t2iguard`` app."""
    app.command("serve")(serve)
    app.add_typer(keys_app, name="keys")
    app.add_typer(db_app, name="db")
    app.add_typer(esc_app, name="escalations")
