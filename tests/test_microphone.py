"""The microphone path through real PortAudio: ALSA's file plugin serves a raw PCM file as a capture device."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyaudio") if os.environ.get("CI") != "true" else None

ASOUNDRC = """
pcm.fieldmic_raw {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{infile}"
    format "raw"
}}
pcm.fieldmic {{
    type plug
    slave {{
        pcm "fieldmic_raw"
        format S16_LE
        rate 48000
        channels 1
    }}
    hint {{
        show on
        description "field recorder microphone (file)"
    }}
}}
"""


@pytest.fixture()
def alsa_home(tmp_path, subset_audio):
    from naturelm_edge.audio import load

    wave = load(subset_audio / "opensoundscape" / "great_plains_toad.wav", 48000, 30.0)
    infile = tmp_path / "capture.raw"
    infile.write_bytes((np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes())
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text(ASOUNDRC.format(infile=infile))
    return home, infile


def _edge_run(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run([sys.executable, "-c", "from naturelm_edge.cli import run_edge; run_edge()", *args],
                          capture_output=True, text=True, timeout=300, env=env)


def test_lists_the_capture_device(alsa_home):
    home, _ = alsa_home
    result = _edge_run(home, "--list-devices")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fieldmic" in result.stdout and "48000 Hz" in result.stdout


def test_captures_windows_from_the_microphone(alsa_home, built_bundle, tmp_path):
    home, _ = alsa_home
    work, *_ = built_bundle
    out = tmp_path / "out"
    result = _edge_run(home, "--bundle", str(work / "bundle"), "--mic", "--device", "fieldmic", "--max-seconds", "20",
                       "--no-gate", "--escalate", "off", "--profile", "x86-cpu", "--out", str(out), "-q")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = sqlite3.connect(out / "events.db").execute("SELECT source, start_utc, offset_s FROM events").fetchall()
    assert [r[2] for r in rows] == [0.0, 5.0, 10.0]
    assert all(r[0].startswith("mic:fieldmic:") and r[1] for r in rows)
    assert "microphone fieldmic" in result.stdout and "overflows" in result.stdout


def test_lost_device_is_reopened_without_restart(alsa_home, built_bundle, tmp_path):
    home, infile = alsa_home
    work, *_ = built_bundle
    hidden = infile.with_suffix(".away")
    infile.rename(hidden)  # the device is gone when edge-run starts

    out = tmp_path / "out"
    env = {**os.environ, "HOME": str(home)}
    process = subprocess.Popen([sys.executable, "-c", "from naturelm_edge.cli import run_edge; run_edge()", "--bundle",
                                str(work / "bundle"), "--mic", "--device", "fieldmic", "--max-seconds", "12", "--no-gate",
                                "--escalate", "off", "--profile", "x86-cpu", "--out", str(out), "-q"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    errors: list[str] = []

    def plug_back_once_missed() -> None:  # the device returns after edge-run has found it gone, however slow
        for line in process.stderr:
            errors.append(line)
            if "microphone unavailable" in line and hidden.exists():
                hidden.rename(infile)

    reader = threading.Thread(target=plug_back_once_missed)
    reader.start()
    stdout = process.stdout.read()
    process.wait(timeout=300)
    reader.join(timeout=10)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, "".join(errors))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "microphone unavailable" in result.stderr
    reopens = int(result.stdout.split(" reopens")[0].rsplit(" ", 1)[-1])
    assert reopens >= 1
    assert sqlite3.connect(out / "events.db").execute("SELECT COUNT(*) FROM events").fetchone()[0] == 2
