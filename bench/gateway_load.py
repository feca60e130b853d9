"""Load test of the gateway on loopback: N clients for D seconds against ``t2iguard serve``.

    python bench/gateway_load.py                       # 50 clients x 60 s, procedural generator
    python bench/gateway_load.py --clients 10 --duration 10 --out /tmp/x

Starts the server as a child process (SQLite WAL by default, ``--db`` for PostgreSQL, ``--redis``
for shared limits), creates ``--keys`` API keys, and runs asyncio clients that send a mix of
generations (``b64_json``), prompts the policy blocks, and moderation checks, each with a unique
``X-Client-Request-Id``. Afterwards it stops the server (SIGTERM, graceful) and verifies in the
audit log that every request the clients sent is recorded exactly once with the status the client
saw. Writes ``gateway_load.json`` and ``gateway_load.md`` to ``--out`` (``bench/results``).

Penalties are disabled in the load policy (a blocked prompt would otherwise suspend the keys after
a few strikes; penalties have their own tests). Rate limits stay on: 429s are counted as intended.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console
from rich.progress import Progress

from t2iguard.core.policy import default_policy_path
from t2iguard.service.store import Store

console = Console(stderr=True)
# allowed prompts, without digits: numbers such as "14-88" are hate codes the blocklist rightly refuses
SUBJECTS = ["a lighthouse", "a red fox", "an old bridge", "a field of tulips", "a sailing boat", "a mountain hut"]
STYLES = ["watercolor", "oil painting", "pencil sketch", "photograph", "woodcut"]
TIMES = ["dawn", "noon", "dusk", "night"]
ROOT = Path(__file__).resolve().parents[1]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100.0 * (len(s) - 1))))
    return s[k]


def start_server(cfg_file: Path, log: Path) -> tuple[subprocess.Popen[str], str]:
    fh = open(log, "w")  # noqa: SIM115 - the child writes to it until it exits
    proc = subprocess.Popen(
        [sys.executable, "-m", "t2iguard.cli.main", "serve", "-c", str(cfg_file)],
        stdout=subprocess.PIPE,
        stderr=fh,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"server failed to start; see {log}")
    url = json.loads(line)["url"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become ready")


async def client(
    cid: int,
    url: str,
    keys: list[str],
    until: float,
    size: str,
    results: list[dict[str, Any]],
    progress: Any,
    task: Any,
) -> None:
    rng = random.Random(cid)
    key = keys[cid % len(keys)]
    headers = {"Authorization": f"Bearer {key}"}
    n = 0
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
        while time.monotonic() < until:
            n += 1
            rid = f"c{cid}-{n}"
            roll = rng.random()
            if roll < 0.8:
                kind = "generate"
                req = http.post(
                    "/v1/images/generations",
                    json={
                        "prompt": f"{rng.choice(STYLES)} of {rng.choice(SUBJECTS)} at {rng.choice(TIMES)}",
                        "size": size,
                        "response_format": "b64_json",
                    },
                    headers={"X-Client-Request-Id": rid},
                )
            elif roll < 0.9:
                kind = "blocked"
                req = http.post(
                    "/v1/images/generations",
                    json={"prompt": "a photo of a n4k3d woman", "size": size, "response_format": "b64_json"},
                    headers={"X-Client-Request-Id": rid},
                )
            else:
                kind = "moderation"
                req = http.post(
                    "/v1/moderations",
                    json={"input": [f"a cat on a sofa, {rng.choice(STYLES)}", "k1ll them all"]},
                    headers={"X-Client-Request-Id": rid},
                )
            t0 = time.perf_counter()
            try:
                r = await req
                status = r.status_code
                error = None
                if status == 429:
                    await asyncio.sleep(min(2.0, float(r.headers.get("retry-after", "1"))))
            except httpx.HTTPError as exc:
                status = 0
                error = type(exc).__name__
            results.append(
                {"id": rid, "kind": kind, "status": status, "latency_s": time.perf_counter() - t0, "error": error}
            )
            progress.advance(task)


async def run_clients(url: str, keys: list[str], clients: int, duration: float, size: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    until = time.monotonic() + duration
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"{clients} clients, {duration:.0f} s", total=None)
        await asyncio.gather(*(client(i, url, keys, until, size, results, progress, task) for i in range(clients)))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--keys", type=int, default=10)
    ap.add_argument("--generator", default="procedural")
    ap.add_argument("--size", default="256x256")
    ap.add_argument("--workers", type=int, default=4, help="server threads running the safety stack")
    ap.add_argument("--db", default=None, help="SQLAlchemy URL (default: SQLite in a temp dir)")
    ap.add_argument("--redis", default=None, help="Redis URL for rate limits")
    ap.add_argument("--per-key-rps", type=float, default=10.0)
    ap.add_argument("--per-key-burst", type=int, default=20)
    ap.add_argument(
        "--prompt-only", action="store_true", help="drop the image stages: measures the gateway's own overhead"
    )
    ap.add_argument("--name", default=None, help="result file stem (default gateway_load[_prompt_only])")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="t2iguard-load-"))
    policy = yaml.safe_load(default_policy_path().read_text())
    policy["penalties"]["enabled"] = False
    if args.prompt_only:
        policy["stages"] = [st for st in policy["stages"] if st["stage"] in ("normalize", "blocklist")]
    (work / "policy.yaml").write_text(yaml.safe_dump(policy))
    config: dict[str, Any] = {
        "port": 0,
        "data_dir": str(work / "data"),
        "generator": args.generator,
        "policy": str(work / "policy.yaml"),
        "workers": args.workers,
        "rate_limit": {
            "per_key_rps": args.per_key_rps,
            "per_key_burst": args.per_key_burst,
            "per_ip_rps": 10_000,
            "per_ip_burst": 10_000,
        },
    }
    if args.db:
        config["database_url"] = args.db
    if args.redis:
        config["redis_url"] = args.redis
    (work / "gateway.yaml").write_text(json.dumps(config))
    db_url = args.db or f"sqlite:///{work / 'data' / 't2iguard.db'}"
    store = Store(db_url)
    store.migrate()
    keys = [store.create_key(f"load-{i}")[1] for i in range(args.keys)]
    store.close()

    console.print(f"starting server ({args.generator}, {db_url.split(':')[0]}) in {work}")
    proc, url = start_server(work / "gateway.yaml", work / "server.log")
    t0 = time.monotonic()
    results = asyncio.run(run_clients(url, keys, args.clients, args.duration, args.size))
    wall = time.monotonic() - t0
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    graceful = code in (0, -signal.SIGTERM)

    # verification: every request the clients sent is audited exactly once, with the same status
    store = Store(db_url)
    records = store.audit_records(limit=10_000_000)
    store.close()
    by_id: dict[str, list[int]] = defaultdict(list)
    for rec in records:
        if rec["client_request_id"]:
            by_id[rec["client_request_id"]].append(rec["status"])
    sent = [r for r in results if r["status"] != 0]
    missing = [r["id"] for r in sent if r["id"] not in by_id]
    duplicated = [k for k, v in by_id.items() if len(v) > 1]
    mismatched = [r["id"] for r in sent if r["id"] in by_id and by_id[r["id"]] != [r["status"]]]

    statuses = Counter(r["status"] for r in results)
    expected = {"generate": {200, 429}, "blocked": {400, 429}, "moderation": {200, 429}}
    unexpected = [r for r in results if r["status"] not in expected[r["kind"]]]
    lat = [r["latency_s"] for r in results if r["status"] not in (0, 429)]
    by_kind = {}
    for kind in expected:
        ls = [r["latency_s"] for r in results if r["kind"] == kind and r["status"] not in (0, 429)]
        by_kind[kind] = {
            "n": len(ls),
            "p50_ms": pct(ls, 50) * 1000,
            "p95_ms": pct(ls, 95) * 1000,
            "p99_ms": pct(ls, 99) * 1000,
        }
    summary = {
        "benchmark": "gateway_load",
        "policy": "prompt stages only" if args.prompt_only else "default (prompt + open_nsfw + NudeNet on outputs)",
        "clients": args.clients,
        "duration_s": args.duration,
        "wall_s": round(wall, 2),
        "keys": args.keys,
        "generator": args.generator,
        "size": args.size,
        "workers": args.workers,
        "database": db_url.split(":")[0],
        "rate_limit": config["rate_limit"],
        "requests": len(results),
        "throughput_rps": round(len(results) / wall, 2),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "unexpected": len(unexpected),
        "unexpected_examples": unexpected[:5],
        "latency_ms": {
            "p50": pct(lat, 50) * 1000,
            "p95": pct(lat, 95) * 1000,
            "p99": pct(lat, 99) * 1000,
            "mean": (statistics.fmean(lat) * 1000) if lat else None,
        },
        "latency_by_kind": by_kind,
        "audit": {
            "records": len(records),
            "client_requests": len(sent),
            "missing": len(missing),
            "duplicated": len(duplicated),
            "status_mismatch": len(mismatched),
        },
        "graceful_shutdown": graceful,
        "exit_code": code,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "note": "shared 2-core machine, under contention",
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.name or ("gateway_load_prompt_only" if args.prompt_only else "gateway_load")
    (args.out / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    md = [
        f"# Gateway load: {args.clients} clients x {args.duration:.0f} s ({args.generator}, {args.size}, "
        f"{summary['database']}, policy: {summary['policy']})",
        "",
        "Measured on loopback on a shared 2-core machine under contention from other jobs; the clients run on the",
        "same cores as the server. Rerun on a quiet machine for absolute numbers.",
        "",
        "| requests | throughput (req/s) | 200 | 400 (blocked) | 429 (intended) | other | p50 ms | p95 ms | p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(results)} | {summary['throughput_rps']} | {statuses.get(200, 0)} | {statuses.get(400, 0)} | "
        f"{statuses.get(429, 0)} | {len(unexpected)} | {summary['latency_ms']['p50']:.0f} | "
        f"{summary['latency_ms']['p95']:.0f} | {summary['latency_ms']['p99']:.0f} |",
        "",
        "| kind | n | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
        *[
            f"| {k} | {v['n']} | {v['p50_ms']:.0f} | {v['p95_ms']:.0f} | {v['p99_ms']:.0f} |"
            for k, v in by_kind.items()
        ],
        "",
        f"Audit log: {len(sent)} client requests, {summary['audit']['missing']} missing, "
        f"{summary['audit']['duplicated']} duplicated, {summary['audit']['status_mismatch']} with another status. "
        f"Graceful shutdown (SIGTERM): {'yes' if graceful else 'no'} (exit {code}).",
        "",
    ]
    (args.out / f"{stem}.md").write_text("\n".join(md))
    console.print("\n".join(md))
    ok = not unexpected and not missing and not duplicated and not mismatched and graceful
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
