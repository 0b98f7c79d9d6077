"""edge-run --input URL: an RTSP stream (GStreamer's RTSP server) and an HTTP stream (ffmpeg) at once, the RTSP
server killed and restarted mid-run, a dead address beside them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

FFMPEG = shutil.which("ffmpeg")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with GStreamer's RTSP server bindings (python3-gi)
RTSP_SERVER = Path(__file__).resolve().parents[1] / "testbed" / "rtsp_server.py"
pytestmark = pytest.mark.skipif(FFMPEG is None and os.environ.get("CI") != "true", reason="ffmpeg is not installed")
TOAD = "opensoundscape/great_plains_toad.wav"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(recording: Path, url: str) -> subprocess.Popen:
    """ffmpeg as a one-client HTTP server of an endless MP3 stream (a webcam's or Icecast's audio)."""
    return subprocess.Popen([FFMPEG, "-hide_banner", "-loglevel", "error", "-stream_loop", "-1", "-i", str(recording),
                             "-ac", "1", "-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3", "-listen", "1", url],
                            stdin=subprocess.DEVNULL)


def serve_rtsp(recording: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen([SYSTEM_PYTHON, str(RTSP_SERVER), str(port), str(recording)], stdout=subprocess.PIPE,
                              text=True)
    assert server.stdout.readline().strip() == "ready"
    return server


def sources(out: Path) -> dict[str, int]:
    if not (out / "events.db").exists():
        return {}
    try:
        rows = sqlite3.connect(out / "events.db", timeout=5).execute(
            "SELECT source, COUNT(*) FROM events GROUP BY source").fetchall()
    except sqlite3.OperationalError:
        return {}
    return dict(rows)


def wait_until(check, timeout: float = 180) -> None:  # a stream plays in real time, on a loaded CI machine
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


def test_two_streams_at_once_survive_a_dropped_one(bundle, subset_audio, tmp_path):
    rtsp_port = free_port()
    first = f"rtsp://127.0.0.1:{rtsp_port}/live"
    second = f"http://127.0.0.1:{free_port()}/second.mp3"
    dead = f"http://127.0.0.1:{free_port()}/nobody.mp3"
    phoebe = sorted((subset_audio / "phoebe").glob("*.mp3"))[0]
    servers = {first: serve_rtsp(subset_audio / TOAD, rtsp_port), second: serve(phoebe, second)}
    out = tmp_path / "out"
    time.sleep(1)
    run = subprocess.Popen([sys.executable, "-c", "from naturelm_edge.cli import run_edge; run_edge()", "--bundle",
                            str(bundle), "--input", first, "--input", second, "--input", dead, "--no-gate",
                            "--no-detector", "--privacy", "off", "--escalate", "off", "--out", str(out), "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: {u for u in (first, second) if any(s.startswith(u + "@") for s in sources(out))} ==
                   {first, second})
        servers[first].kill()  # the camera drops off the network ...
        servers[first].wait()
        time.sleep(2)
        servers[first] = serve_rtsp(subset_audio / TOAD, rtsp_port)  # ... and comes back: a second connection
        wait_until(lambda: len([s for s in sources(out) if s.startswith(first + "@")]) >= 2)
    finally:
        run.send_signal(signal.SIGTERM)
        stdout, stderr = run.communicate(timeout=60)
        for server in servers.values():
            server.kill()
    assert run.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout)
    streams = summary["streams"]
    assert streams[first]["connections"] >= 2 and streams[first]["drops"] >= 1
    assert streams[second]["connections"] == 1 and streams[second]["drops"] == 0
    assert streams[dead]["connections"] == 0 and streams[dead]["failed_attempts"] >= 1
    assert stderr.count(dead + ": ") == 1  # said once, retried quietly with back-off
    events = sqlite3.connect(out / "events.db").execute("SELECT source, offset_s FROM events").fetchall()
    assert all(source.split("@")[0] in (first, second) for source, _ in events)
    for source in {s for s, _ in events}:  # each connection's windows follow on from its own start
        offsets = sorted(o for s, o in events if s == source)
        assert offsets[0] == 0.0 and all(b - a == pytest.approx(5.0, abs=0.01) for a, b in zip(offsets, offsets[1:]))


def test_a_stream_without_audio_is_one_sentence(bundle, tmp_path):
    from tests.helpers import run_edge

    port = free_port()
    url = f"http://127.0.0.1:{port}/video.nut"
    server = subprocess.Popen([FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                               "testsrc=size=64x64:rate=5", "-t", "30", "-f", "nut", "-listen", "1", url])
    time.sleep(1)
    try:
        ran = run_edge("--bundle", str(bundle), "--input", url, "--privacy", "off", "--out", str(tmp_path / "out"))
    finally:
        server.kill()
    assert ran.returncode != 0 and "no audio track" in ran.stderr and "Traceback" not in ran.stderr
