"""Kill ``t2iguard serve`` mid-load: no audit record of a completed response is lost.

The server commits a request's audit record before the first byte of its response, so any
response a client received in full has a durable record, whatever happens to the process next.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from support.gateway import gateway_process
from t2iguard.core.policy import default_policy_path

pytestmark = pytest.mark.slow


def _load(url: str, key: str, stop: threading.Event, done: dict[str, int], errors: list[str], tid: int) -> None:
    i = 0
    with httpx.Client(timeout=60) as c:
        while not stop.is_set():
            cid = f"t{tid}-{i}"
            i += 1
            prompt = "a photo of a n4k3d woman" if i % 4 == 0 else f"a calm lake, variation {i}"
            try:
                r = c.post(
                    url + "/v1/images/generations",
                    json={"prompt": prompt, "response_format": "b64_json", "size": "64x64"},
                    headers={"Authorization": f"Bearer {key}", "X-Client-Request-Id": cid},
                )
                r.read()
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
                time.sleep(0.05)
                continue
            done[cid] = r.status_code


def _create_key(tmp_path: Path, config: dict) -> str:
    import subprocess
    import sys

    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(json.dumps(config))
    out = subprocess.run(
        [sys.executable, "-m", "t2iguard.cli.main", "keys", "create", "--name", "load", "-c", str(cfg), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return str(json.loads(out.stdout)["secret"])


@pytest.mark.parametrize("then_kill", [False, True], ids=["sigterm", "sigkill"])
def test_kill_mid_load_loses_no_completed_record(tmp_path: Path, then_kill: bool) -> None:
    policy = yaml.safe_load(default_policy_path().read_text())
    policy["penalties"]["enabled"] = False  # keep the key usable: this test is about the audit log
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    config = {
        "policy": str(tmp_path / "policy.yaml"),
        "port": 0,
        "data_dir": str(tmp_path / "data"),
        "generator": "procedural",
        "default_size": "64x64",
        "rate_limit": {"enabled": False},
        "drain_timeout_s": 20,
    }
    key = _create_key(tmp_path, config)
    done: dict[str, int] = {}
    errors: list[str] = []
    with gateway_process(tmp_path, config) as server:
        stop = threading.Event()
        threads = [
            threading.Thread(target=_load, args=(server.url, key, stop, done, errors, t), daemon=True) for t in range(6)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 180
        while len(done) < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(done) >= 12, f"load did not get going: {errors[:5]}"
        # SIGKILL outright: a drain after SIGTERM can finish in well under a second on a fast
        # machine, and then the process exits before any later SIGKILL arrives.
        server.signal(signal.SIGKILL if then_kill else signal.SIGTERM)
        code = server.process.wait(timeout=60)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        if then_kill:
            assert code == -signal.SIGKILL
        else:
            # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean exit too
            assert code in (0, -signal.SIGTERM), server.log.read_text()[-2000:]
            log = server.log.read_text().splitlines()
            events = [json.loads(line) for line in log if line.strip()]  # structured logs: every line is JSON
            assert any(e["msg"] == "gateway stopped" for e in events)
            served = [e for e in events if e["msg"] == "request"]
            assert served and all({"request_id", "status", "key_id", "ip", "latency_ms"} <= set(e) for e in served)
    completed = dict(done)
    assert completed and set(completed.values()) <= {200, 400}
    db = sqlite3.connect(tmp_path / "data" / "t2iguard.db")
    try:
        rows = db.execute(
            "SELECT client_request_id, status FROM audit_log WHERE client_request_id IS NOT NULL"
        ).fetchall()
    finally:
        db.close()
    recorded: dict[str, list[int]] = {}
    for cid, status in rows:
        recorded.setdefault(cid, []).append(status)
    missing = [cid for cid in completed if cid not in recorded]
    assert not missing, f"{len(missing)} completed responses have no audit record: {missing[:5]}"
    dup = [cid for cid, st in recorded.items() if len(st) > 1]
    assert not dup
    assert all(recorded[cid] == [status] for cid, status in completed.items())
