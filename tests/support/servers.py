"""Start helper processes (servers on loopback) for tests and stop them reliably."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


@dataclass
class StubServer:
    base_url: str
    log: Path
    process: subprocess.Popen[str]

    def requests(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


@contextmanager
def _stub_process(script: str, args: list[str], log: Path) -> Iterator[StubServer]:
    """Run ``script`` (it prints ``PORT n`` once listening on loopback) and stop it on exit."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / script), *args, "--log", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        line = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("PORT "):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"{script} exited: {proc.stderr.read() if proc.stderr else ''}")
        else:
            raise RuntimeError(f"{script} did not start")
        port = int(line.split()[1])
        yield StubServer(base_url=f"http://127.0.0.1:{port}/v1", log=log, process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def openai_stub(tmp_path: Path, rules: list[dict[str, Any]], default: str = '{"verdicts": []}') -> Iterator[StubServer]:
    """Run ``openai_server.py`` with ``rules`` on a free loopback port."""
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps(rules))
    with _stub_process(
        "openai_server.py", ["--rules", str(rules_file), "--default", default], tmp_path / "requests.jsonl"
    ) as server:
        yield server


@contextmanager
def images_stub(tmp_path: Path) -> Iterator[StubServer]:
    """Run ``images_server.py`` (OpenAI images contract + AUTOMATIC1111 API) on a free loopback
    port; ``base_url`` is the OpenAI base (``.../v1``), the A1111 API is at the same host."""
    with _stub_process("images_server.py", [], tmp_path / "images-requests.jsonl") as server:
        yield server
