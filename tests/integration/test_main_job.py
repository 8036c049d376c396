"""The README's main job (``ensdef serve --train-missing`` on its own local Ray), run as a user runs it: it
shows its plan, serves a defense while another still trains (503 with ``Retry-After`` for that one, and the
listing says which), stops within 10 s on SIGINT during training, and a second run keeps what the first
finished (the target is served again at once, not retrained) and trains the rest."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import FIXTURES, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
IMAGE = {"images": [[[0.0] * 28] * 28]}


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("w"))


def _wait_for(url: str, ready, proc: subprocess.Popen, log: Path, timeout_s: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the main job ended early:\n{log.read_text()[-3000:]}"
        try:
            listing = requests.get(url, timeout=5).json()
            if ready(listing):
                return listing
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"not ready within {timeout_s} s:\n{log.read_text()[-3000:]}")


def _interrupt(proc: subprocess.Popen) -> float:
    t = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return time.monotonic() - t


def test_main_job_serves_progressively_stops_on_sigint_and_resumes(tmp_path: Path) -> None:
    # the tiny preset with RLS trained for 6 epochs (about a minute): both interrupts land while it trains, not
    # while a finished RLS is being deployed (a deploy that SIGINT interrupts is not what this test is about)
    cfg = yaml.safe_load((FIXTURES / "tiny.yaml").read_text())
    cfg["rls"]["train"]["epochs"] = 6
    (preset := tmp_path / "tiny-slow-rls.yaml").write_text(yaml.safe_dump(cfg))
    store, http, grpc = tmp_path / "store", free_port(), free_port()
    cmd = [sys.executable, "-m", "ensdef", "serve", "--preset", str(preset), "--store", str(store), "--train-missing"]
    cmd += ["--defenses", "target,rls", "--address", "local", "--num-cpus", "2"]
    cmd += ["--http-port", str(http), "--grpc-port", str(grpc)]
    listing_url, base = f"http://127.0.0.1:{http}/v1/defenses", f"http://127.0.0.1:{http}/v1"

    first = _start(cmd, log1 := tmp_path / "first.log")
    try:
        listing = _wait_for(listing_url, lambda d: d["states"].get("rls", {}).get("state") == "training", first, log1)
        assert listing["defenses"] == ["target"] and listing["states"]["target"] == {"state": "serving"}
        rls = listing["states"]["rls"]
        assert rls["members_done"] == 0 and rls["members_total"] == 1 and rls["retry_after_s"] >= 5
        answer = requests.post(f"{base}/target/classify", json=IMAGE, timeout=30)
        assert answer.status_code == 200 and len(answer.json()["answers"]) == 1
        busy = requests.post(f"{base}/rls/classify", json=IMAGE, timeout=30)
        assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 5
        assert "rls is training: 0 of 1 members trained" in busy.json()["detail"]
        assert "rls" in requests.get(f"http://127.0.0.1:{http}/healthz", timeout=5).json()["training"]
        target_weights = {p.name: p.stat().st_mtime_ns for p in (store / "target").iterdir()}
        assert _interrupt(first) < 10.0
    finally:
        if first.poll() is None:
            first.kill()
    text = log1.read_text()
    assert first.returncode == 130 and "interrupted" in text
    assert "training plan (2 members" in text and "then serves target" in text and "then serves rls" in text
    assert not (store / "rls-vgg").exists()
    assert json.loads((store / "training-progress" / "data.json").read_text())["state"] == "interrupted"

    second = _start(cmd, log2 := tmp_path / "second.log")  # keeps the target and trains only what is left
    try:
        listing = _wait_for(listing_url, lambda d: d["states"].get("rls", {}).get("state") == "training", second, log2)
        assert listing["defenses"] == ["target"]
        assert requests.post(f"{base}/target/classify", json=IMAGE, timeout=30).status_code == 200
        assert _interrupt(second) < 10.0
    finally:
        if second.poll() is None:
            second.kill()
    text = log2.read_text()
    assert "training plan (1 members" in text and "1. rls" in text  # the target is kept, not planned again
    assert {p.name: p.stat().st_mtime_ns for p in (store / "target").iterdir()} == target_weights
