"""The `t2iguard` command, run as a real subprocess: JSON output, exit codes, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "t2iguard.cli.main", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
    )


def jsonl(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_check_prompt_json() -> None:
    r = run("check-prompt", "--json", "a photo of a n4k3d woman", "a watercolor lighthouse")
    assert r.returncode == 0, r.stderr
    blocked, allowed = jsonl(r.stdout)
    assert blocked["action"] == "block" and blocked["categories"]["sexual"] == 1.0
    assert blocked["prompt"] == "a photo of a n4k3d woman"
    assert blocked["trace"] and blocked["decided_by"][0]["evidence"]["matched"] == "n4k3d"
    assert allowed["action"] == "allow" and allowed["input"]["source"] == "<arg 1>"


def test_check_prompt_file_csv_with_a_bad_row(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_bytes(b"id,prompt\n1,a calm lake\n2,\xff\n3,s u i c i d e\n")
    r = run("check-prompt", "--json", "--file", str(f), "--column", "prompt")
    assert r.returncode == 1  # one input was invalid; the others were processed
    rows = jsonl(r.stdout)
    assert [row.get("action", "error") for row in rows] == ["allow", "error", "block"]
    assert rows[1]["error"].startswith("not valid UTF-8") and rows[1]["input"].endswith("p.csv:3")
    assert "invalid input" in r.stderr and "Traceback" not in r.stderr


def test_check_prompt_text_file_and_table(tmp_path: Path) -> None:
    f = tmp_path / "p.txt"
    f.write_text("a calm lake\nkill the lights\n")
    r = run("check-prompt", "--file", str(f))
    assert r.returncode == 0 and "allow" in r.stdout and "kill the lights" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check-prompt"], "give prompt text or --file"),
        (["check-prompt", "--file", "/nonexistent/p.txt"], "file not found"),
        (["check-prompt", "--column", "prompt", "x"], "--column needs --file"),
        (["check-prompt", "--policy", "/nonexistent.yaml", "x"], "policy file not found"),
        (["check-image", "--phase", "sideways", "x.png"], "--phase must be"),
    ],
)
def test_usage_errors_are_clear(args: list[str], message: str) -> None:
    r = run(*args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_megabyte_prompt_is_rejected_cleanly(tmp_path: Path) -> None:
    f = tmp_path / "big.txt"
    f.write_text("a" * 1_000_000 + "\na calm lake\n")
    r = run("check-prompt", "--json", "--file", str(f))
    assert r.returncode == 1
    err, ok = jsonl(r.stdout)
    assert "1,000,000 characters; the limit is 4,000" in err["error"] and ok["action"] == "allow"


def test_check_image_json_and_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.new("RGB", (128, 128), (40, 120, 200)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    r = run("check-image", "--json", str(good), str(bad), str(tmp_path / "missing.png"))
    assert r.returncode == 1
    rows = jsonl(r.stdout)
    assert rows[0]["action"] == "allow" and "prompt" not in rows[0]
    assert {"action", "categories", "trace"} <= set(rows[0])
    assert "not an image" in rows[1]["error"] and "file not found" in rows[2]["error"]


def test_policy_show_and_validate(tmp_path: Path) -> None:
    r = run("policy", "show", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["name"] == "t2iguard-default"
    r = run("policy", "path")
    good = Path(r.stdout.strip())
    assert good.is_file()
    r = run("policy", "validate", "--json", str(good))
    assert r.returncode == 0 and json.loads(r.stdout)["valid"] is True
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncategories:\n  minors: {action: transform}\nstages:\n  - stage: nope\n")
    r = run("policy", "validate", str(bad))
    assert r.returncode == 2 and "zero tolerance" in r.stderr
    bad.write_text("name: x\nstages:\n  - stage: nope\n")
    r = run("policy", "validate", "--json", str(bad))
    assert r.returncode == 2 and json.loads(r.stdout)["valid"] is False and "unknown stage 'nope'" in r.stdout


def test_custom_policy_changes_the_verdict(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(
        "name: lenient\ncategories:\n  violence: {action: review}\nstages:\n  - stage: normalize\n"
        "  - stage: blocklist\n    threshold: 0.9\n"
    )
    r = run("check-prompt", "--json", "--policy", str(p), "a decapitated statue")
    assert jsonl(r.stdout)[0]["action"] == "review"


def test_demo_and_version() -> None:
    r = run("demo", "--json")
    assert r.returncode == 0, r.stderr
    rows = jsonl(r.stdout)
    assert sum(1 for row in rows if row["input"]["kind"] == "prompt") >= 8
    assert any(row["input"]["kind"] == "image" for row in rows)
    assert run("version").stdout.startswith("t2iguard ")
