"""`edge serve` in its own process on a free loopback port, and escalation requests to send it."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from naturelm_edge.sample_data import synthetic_soundscape
from naturelm_edge.wire.schema import EscalationRequest
from testbed.corpus import QUESTION
from testbed.net import free_port


class Server:
    """`edge serve [CHECKPOINT]` in its own process on a free loopback port (no checkpoint: ``extra`` names the
    teacher, ``--teacher birdnet-v2.4``)."""

    def __init__(self, checkpoint: Path | None, state: Path, *extra: str, scheme: str = "http") -> None:
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-c", "from naturelm_edge.cli import run; run()", "serve",
                     *([str(checkpoint)] if checkpoint else []), "--port", str(self.port), "--state-dir", str(state), *extra]
        self.process: subprocess.Popen | None = None

    def start(self, context: ssl.SSLContext | None = None, timeout_s: float = 120) -> Server:
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"edge serve exited: {self.process.communicate()[1]}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2, context=context) as r:
                    if json.loads(r.read())["status"] == "ok":
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        raise RuntimeError(f"edge serve did not come up in {timeout_s:.0f} s")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def metric(self, name: str) -> float:
        text = urllib.request.urlopen(self.url + "/metrics", timeout=5).read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


def request(escalation_id: str, seconds: float = 10.0, seed: int = 0) -> EscalationRequest:
    audio = synthetic_soundscape(seconds, 16_000, seed=seed)
    return EscalationRequest.build(escalation_id, QUESTION,
                                   audio, 16_000, {"source": "test"})
