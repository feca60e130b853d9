"""Run the gateway on loopback for tests: in a thread of the test process (fast, and the test can
reach its store), or as a real ``t2iguard serve`` process (for signals and crashes)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from support.stages import ReplaceNameTransform
from t2iguard.core.registry import StageRegistry
from t2iguard.core.stage import ModelCache
from t2iguard.service.app import Gateway, create_app
from t2iguard.service.config import GatewayConfig, load_config
from t2iguard.service.store import Store

# a policy that holds violent prompts for review and blocks the rest as the default does
REVIEW_POLICY = """
name: test-review
version: "1"
categories:
  violence: {action: review, threshold: 0.5}
  minors: {action: block, zero_tolerance: true}
penalties:
  half_life_hours: 24
  suspend:
    - {strikes: 3, hours: 1}
stages:
  - stage: normalize
  - stage: blocklist
    threshold: 0.9
  - stage: test_rename
"""

# prompt stages only and no penalties: for tests about storage and concurrency, not the checks
FAST_POLICY = """
name: test-fast
version: "1"
penalties: {enabled: false}
stages:
  - stage: normalize
  - stage: blocklist
    threshold: 0.9
"""

# output images are held for review whatever they show (threshold 0): exercises stored images
HOLD_OUTPUTS_POLICY = """
name: test-hold-outputs
version: "1"
categories:
  sexual: {action: review, threshold: 0.5}
stages:
  - stage: normalize
  - stage: blocklist
    threshold: 0.9
  - stage: nsfw
    phases: [output_image]
    categories:
      sexual: {threshold: 0.0, action: review}
"""


MODELS = ModelCache()


@dataclass
class LiveGateway:
    url: str
    gateway: Gateway
    store: Store

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def key(self, role: str = "user", policy: str | None = None, name: str = "") -> str:
        return self.store.create_key(name or f"test-{role}", role, policy)[1]

    def key_id(self, secret: str) -> str:
        info = self.store.authenticate(secret)
        assert info is not None
        return info.id


def gateway_config(tmp_path: Path, **overrides: Any) -> GatewayConfig:
    """Procedural generator, SQLite in ``tmp_path``, the test policies available by name (and the
    prompt-only ``fast.yaml`` in ``tmp_path`` to use as the default policy)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "review.yaml").write_text(REVIEW_POLICY)
    (tmp_path / "hold.yaml").write_text(HOLD_OUTPUTS_POLICY)
    (tmp_path / "fast.yaml").write_text(FAST_POLICY)
    base: dict[str, Any] = {
        "port": 0,
        "data_dir": str(tmp_path / "data"),
        "generator": "procedural",
        "default_size": "64x64",
        "policies": {"review": str(tmp_path / "review.yaml"), "hold": str(tmp_path / "hold.yaml")},
        "json_logs": False,
    }
    base.update(overrides)
    return load_config(None, env={}, **base)


@contextmanager
def live_gateway(config: GatewayConfig, store: Store | None = None, **kwargs: Any) -> Iterator[LiveGateway]:
    registry = StageRegistry()
    registry.register("test_rename", ReplaceNameTransform)
    kwargs.setdefault("models", MODELS)  # load each model once per test session
    gw = Gateway(config, store=store, registry=registry, **kwargs)
    app = create_app(gw)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("gateway thread died during start-up")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    else:
        raise RuntimeError("gateway did not become ready")
    try:
        yield LiveGateway(url=url, gateway=gw, store=gw.store)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@dataclass
class GatewayProcess:
    url: str
    process: subprocess.Popen[str]
    log: Path

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)


@contextmanager
def gateway_process(
    tmp_path: Path, config: dict[str, Any], *, env: dict[str, str] | None = None
) -> Iterator[GatewayProcess]:
    """``t2iguard serve -c <config>`` as a child process; stopped with SIGTERM, then SIGKILL."""
    cfg_file = tmp_path / "gateway.yaml"
    cfg_file.write_text(json.dumps(config))
    log = tmp_path / "server.log"
    fh = open(log, "w")  # noqa: SIM115 - kept open for the child's lifetime
    proc = subprocess.Popen(
        [sys.executable, "-m", "t2iguard.cli.main", "serve", "-c", str(cfg_file)],
        stdout=subprocess.PIPE,
        stderr=fh,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=10)
            raise RuntimeError(f"gateway exited: {log.read_text()[-3000:]}")
        url = json.loads(line)["url"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {log.read_text()[-3000:]}")
            time.sleep(0.1)
        else:
            raise RuntimeError("gateway did not become ready")
        yield GatewayProcess(url=url, process=proc, log=log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        fh.close()
