"""edge-run on real recordings: events in SQLite and sinks, gate, resume after kill -9, escalation delivery."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from typer.testing import CliRunner

from naturelm_edge.audio import fbank, load, prepare
from naturelm_edge.cli import run_app
from naturelm_edge.edge_runtime.gate import EnergyGate, GateSettings
from naturelm_edge.wire.loopback import EscalationServer
from testbed.net import free_port
from tests.helpers import events as stored_events
from tests.helpers import run_edge

runner = CliRunner()


def test_files_and_folders_to_store_and_sinks(bundle, subset_audio, audio_dir, tmp_path):
    folder = tmp_path / "card"
    folder.mkdir()
    for name in ("great_plains_toad.wav",):
        (folder / name).write_bytes((subset_audio / "opensoundscape" / name).read_bytes())
    (folder / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt ")  # a recorder's broken file
    silence = audio_dir / "batdetect2" / "AudiomothNoBatCalls.WAV"
    result = run_edge("--bundle", str(bundle), "--input", str(folder), "--input", str(silence), "--out", str(tmp_path / "out"),
                  "--profile", "x86-cpu", "--escalate", "off", "-q")
    assert result.returncode == 0, result.stderr
    assert "corrupt.wav" in result.stderr  # reported by name, the rest processed
    events = stored_events(tmp_path / "out")
    toad = [e for e in events if e["source"].endswith("great_plains_toad.wav")]
    assert len(toad) >= 5 and all(e["bundle_id"] and e["profile"] == "x86-cpu" for e in events)
    assert not [e for e in events if "NoBatCalls" in e["source"]]  # digital silence never reaches the models
    db = sqlite3.connect(tmp_path / "out" / "events.db")
    assert db.execute("SELECT gated FROM windows WHERE source LIKE '%NoBatCalls%'").fetchone() == (1,)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    jsonl = [json.loads(line) for line in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    assert [e["id"] for e in jsonl] == [e["id"] for e in events]
    raven = (tmp_path / "out" / "events.selections.txt").read_text().splitlines()
    assert raven[0].startswith("Selection\tView\tChannel\tBegin Time (s)") and len(raven) == len(events) + 1
    low, high = (raven[0].split("\t").index(c) for c in ("Low Freq (Hz)", "High Freq (Hz)"))
    assert all(float(row.split("\t")[low]) == 0.0 and "." in row.split("\t")[high] for row in raven[1:])
    assert "windows" in result.stdout and "real-time factor" in result.stdout


def test_kill_9_then_restart_loses_nothing_and_repeats_nothing(bundle, audio_dir, tmp_path):
    source = audio_dir / "librosa-data" / "glacier-bay-humpback.hq.ogg"
    out = tmp_path / "out"
    args = [sys.executable, "-c", "from naturelm_edge.cli import run_edge; run_edge()", "--bundle", str(bundle),
            "--input", str(source), "--out", str(out), "--profile", "x86-cpu", "--escalate", "queue", "--no-gate"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    seen: list[int] = []
    while time.time() < deadline and len(seen) < 4:
        if (out / "events.jsonl").is_file():
            seen = [json.loads(line)["id"] for line in (out / "events.jsonl").read_text().splitlines() if line.strip()]
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert len(seen) >= 4
    stored = {e["id"] for e in stored_events(out)}
    assert set(seen) <= stored  # every event reported before the kill survived it
    queued_before = sqlite3.connect(out / "events.db").execute("SELECT COUNT(*) FROM escalations").fetchone()[0]
    result = run_edge(*args[3:])
    assert result.returncode == 0, result.stderr
    events = stored_events(out)
    keys = [(e["source"], e["offset_s"]) for e in events]
    assert len(keys) == len(set(keys))  # no window answered twice
    full = run_edge("--bundle", str(bundle), "--input", str(source), "--out", str(tmp_path / "straight"),
                "--profile", "x86-cpu", "--escalate", "queue", "--no-gate", "-q")
    assert full.returncode == 0
    assert sorted(keys) == sorted((e["source"], e["offset_s"]) for e in stored_events(tmp_path / "straight"))
    assert sqlite3.connect(out / "events.db").execute("SELECT COUNT(*) FROM escalations").fetchone()[0] >= queued_before


def test_escalations_delivered_exactly_once_after_target_comes_up(bundle, subset_audio, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    clip = subset_audio / "opensoundscape" / "great_plains_toad.wav"
    # target down for the whole run: everything waits in the queue
    first = run_edge("--bundle", str(bundle), "--input", str(clip), "--out", str(tmp_path / "out"), "--profile", "x86-cpu",
                 "--escalate", url, "--threshold", "1.01", "--no-gate", "-q")
    assert first.returncode == 0, first.stderr
    queued = [e for e in stored_events(tmp_path / "out") if e["escalation_status"] == "queued"]
    audio = sqlite3.connect(tmp_path / "out" / "events.db").execute("SELECT audio_path FROM escalations").fetchall()
    assert queued and len(audio) == len(queued) and all(Path(a).is_file() for (a,) in audio)
    server = EscalationServer(port, answer="Great Plains toad").start()
    try:
        again = run_edge("--bundle", str(bundle), "--input", str(clip), "--out", str(tmp_path / "out"), "--profile",
                     "x86-cpu", "--escalate", url, "--threshold", "1.01", "--no-gate", "-q")
        assert again.returncode == 0, again.stderr
    finally:
        server.stop()
    events = {e["id"]: e for e in stored_events(tmp_path / "out")}
    assert len(server.requests) == len(queued) and set(server.requests.values()) == {1}  # exactly once each
    for event in queued:
        updated = events[event["id"]]
        assert updated["escalation_answer"] == "Great Plains toad"
        assert updated["escalation_status"] in ("confirmed", "revised")
        assert updated["answer"] == event["answer"]  # both answers kept
    db = sqlite3.connect(tmp_path / "out" / "events.db")
    assert db.execute("SELECT COUNT(*) FROM escalations WHERE status = 'queued'").fetchone()[0] == 0


def test_stdin_pcm(bundle, subset_audio, tmp_path):
    wave = load(subset_audio / "opensoundscape" / "great_plains_toad.wav", 48000, 21.0)
    pcm = (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()
    result = subprocess.run([sys.executable, "-c", "from naturelm_edge.cli import run_edge; run_edge()", "--bundle",
                             str(bundle), "--stdin", "--rate", "48000", "--out", str(tmp_path / "out"), "--profile",
                             "x86-cpu", "--escalate", "off", "--no-gate", "-q"], input=pcm, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr
    events = stored_events(tmp_path / "out")
    assert len(events) == 4 and all(e["source"].startswith("stdin:") and e["start_utc"] for e in events)


def test_altered_bundle_is_refused_before_any_audio(bundle, tmp_path, subset_audio):
    import shutil

    broken = shutil.copytree(bundle, tmp_path / "bundle")
    data = (broken / "encoder.onnx").read_bytes()
    (broken / "encoder.onnx").write_bytes(data[:-100])
    result = run_edge("--bundle", str(broken), "--input", str(subset_audio), "--out", str(tmp_path / "out"))
    assert result.returncode != 0 and "encoder.onnx" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_self_test(bundle):
    result = runner.invoke(run_app, ["--bundle", str(bundle), "--profile", "x86-cpu", "--self-test"])
    assert result.exit_code == 0, result.output
    assert "self-test passed" in result.output and "CPUExecutionProvider" in result.output
    jetson = runner.invoke(run_app, ["--bundle", str(bundle), "--profile", "jetson-orin-nano-8gb", "--self-test"])
    assert jetson.exit_code == 0 and "missing TensorrtExecutionProvider" in jetson.output


def test_gate_skips_silence_and_passes_calls(subset_audio):
    gate = EnergyGate()
    silence = fbank(np.zeros(160000, np.float32))
    assert not gate(silence).passed
    call = fbank(prepare(load(subset_audio / "opensoundscape" / "great_plains_toad.wav", 16000, 10.0), 160000))
    quiet = fbank((np.random.default_rng(0).normal(0, 1e-4, 160000)).astype(np.float32))
    gate = EnergyGate()
    assert not gate(quiet).passed
    assert gate(call).passed


def test_readme_demo_runs_end_to_end_and_answers_in_words(tmp_path):
    """The README's first command: a taught tiny teacher -> bundle -> edge-run naming the synthetic species."""
    from naturelm_edge.cli import app
    from naturelm_edge.sample_data import SYNTHETIC_SPECIES

    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "not NatureLM's" in result.output
    answers = [e["label"] or e["answer"] for e in stored_events(tmp_path / "demo" / "run")]
    assert answers and sum(a in SYNTHETIC_SPECIES for a in answers) >= 0.75 * len(answers), answers
    right, answered = map(int, re.search(r"(\d+) of (\d+) answered windows name a species", result.output).groups())
    assert answered == len(answers) and right >= answered / 2, result.output
    from naturelm_edge.bundle.open import load_bundle

    assert load_bundle(tmp_path / "demo" / "bundle").labels == sorted(SYNTHETIC_SPECIES)


def test_watched_folder_reads_files_once_complete_and_remembers(bundle, subset_audio, tmp_path):
    import threading

    drop = tmp_path / "drop"
    drop.mkdir()
    source = subset_audio / "opensoundscape" / "great_plains_toad.wav"
    data = source.read_bytes()
    target = drop / "20240601_050000.WAV"

    def recorder() -> None:  # writes the file slowly, as a recorder closing a WAV does
        time.sleep(1.0)
        with target.open("wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            time.sleep(3.0)
            handle.write(data[len(data) // 2 :])

    thread = threading.Thread(target=recorder)
    thread.start()
    args = ["--bundle", str(bundle), "--watch", str(drop), "--idle-exit", "6", "--out", str(tmp_path / "out"),
            "--profile", "x86-cpu", "--escalate", "off", "--no-gate", "-q"]
    result = run_edge(*args)
    thread.join()
    assert result.returncode == 0, result.stderr
    events = stored_events(tmp_path / "out")
    whole = sf.info(str(source)).duration
    assert len(events) == int((whole - 10) // 5) + 2  # every window of the whole file, none of a half file
    assert events[0]["start_utc"].startswith("2024-06-01T05:00:00")  # AudioMoth name, UTC
    again = run_edge(*args)
    assert again.returncode == 0 and len(stored_events(tmp_path / "out")) == len(events)  # remembered across restarts


def test_install_service_writes_a_unit(bundle, tmp_path):
    unit = tmp_path / "naturelm-edge.service"
    result = run_edge("--bundle", str(bundle), "--mic", "--device", "USB", "--out", str(tmp_path / "data"),
                  "--install-service", "--service-path", str(unit))
    assert result.returncode == 0, result.stderr
    text = unit.read_text()
    assert "Restart=always" in text and "KillSignal=SIGTERM" in text
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert "--mic" in exec_line and str(bundle.resolve()) in exec_line and "--install-service" not in exec_line


def test_clips_saved_as_flac_and_disk_trouble_skips_clips_not_detections(bundle, subset_audio, tmp_path):
    clip = subset_audio / "opensoundscape" / "great_plains_toad.wav"
    result = run_edge("--bundle", str(bundle), "--input", str(clip), "--out", str(tmp_path / "out"), "--profile", "x86-cpu",
                  "--escalate", "off", "--no-gate", "-q")
    assert result.returncode == 0, result.stderr
    events = stored_events(tmp_path / "out")
    saved = [e for e in events if e["clip_path"]]
    assert saved and all(sf.info(e["clip_path"]).samplerate == 16000 for e in saved)
    assert all(Path(e["clip_path"]).suffix == ".flac" for e in saved)
    # clips that cannot be written (here the clips folder is a file, so even root cannot create clips in it;
    # a full card behaves the same): detection goes on, clips are skipped and counted
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "clips").write_text("not a folder")
    blocked = run_edge("--bundle", str(bundle), "--input", str(clip), "--out", str(tmp_path / "ro"), "--profile",
                   "x86-cpu", "--escalate", "off", "--no-gate", "-q")
    assert blocked.returncode == 0, blocked.stderr
    assert len(stored_events(tmp_path / "ro")) == len(events) and "clips saved 0 (skipped" in blocked.stdout


def test_clip_retention_and_write_failures(tmp_path):
    from naturelm_edge.edge_runtime.clips import ClipWriter, RetentionPolicy

    writer = ClipWriter(tmp_path / "clips", 16000, RetentionPolicy(max_disk_share=1.0, max_age_days=1, keep_per_label=2))
    audio = np.zeros(1600, np.float32)
    paths = [writer.save("House Sparrow", "rec.wav", float(i), audio) for i in range(4)]
    old = time.time() - 3 * 86400
    for path in paths[:3]:
        os.utime(path, (old, old))
    writer.apply_retention()
    remaining = sorted(p.name for p in (tmp_path / "clips" / "House-Sparrow").glob("*.flac"))
    assert len(remaining) == 2 and Path(paths[3]).name in remaining  # old ones go, the newest two per label stay
    full = ClipWriter(Path("/dev/full/clips"), 16000)  # nothing can be created there
    assert full.save("x", "rec.wav", 0.0, audio) is None and full.skipped == 1


def test_clip_folder_size_limit_drops_the_oldest_first(tmp_path):
    from naturelm_edge.edge_runtime.clips import ClipWriter, RetentionPolicy

    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32)  # ~30 kB as FLAC
    writer = ClipWriter(tmp_path / "clips", 16000, RetentionPolicy(max_mb=0.1, keep_per_label=1))
    paths = []
    for i in range(12):
        paths.append(writer.save("Wren" if i % 2 else "Robin", "rec.wav", float(i), noise))
        os.utime(paths[-1], (1_000_000 + i, 1_000_000 + i))  # saved in this order
    kept = sorted(tmp_path.glob("clips/*/*.flac"))
    assert sum(p.stat().st_size for p in kept) <= 0.1e6
    assert {Path(paths[-1]), Path(paths[-2])} <= set(kept)  # the newest of each label always stay
    assert Path(paths[0]) not in kept  # the oldest went first


def test_profile_time_expansion_keeps_real_time_offsets(bundle, tmp_path):
    """A user's bat-station profile slows a 192 kHz stream 10x; offsets and durations stay in real seconds."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    from naturelm_edge.device_profiles import get

    x86 = get("x86-cpu").source
    text = Path(x86).read_text().replace('name = "x86-cpu"', 'name = "bat-station"').replace("hop_s = 5.0", "hop_s = 5.0\ntime_expansion = 10")
    (profiles / "bat-station.toml").write_text(text)
    rate = 192_000
    t = np.arange(int(3.0 * rate)) / rate
    calls = 0.3 * np.sin(2 * np.pi * 45_000 * t) * ((t % 0.5) < 0.01)  # 10 ms calls at 45 kHz every 0.5 s
    pcm = (np.clip(calls + np.random.default_rng(0).normal(0, 0.01, t.size), -1, 1) * 32767).astype("<i2").tobytes()
    result = subprocess.run([sys.executable, "-c", "from naturelm_edge.cli import run_edge; run_edge()", "--bundle",
                             str(bundle), "--stdin", "--rate", str(rate), "--out", str(tmp_path / "out"), "--profile",
                             "bat-station", "--profiles-dir", str(profiles), "--escalate", "off", "--no-gate", "-q"],
                            input=pcm, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr
    offsets = sorted(e["offset_s"] for e in stored_events(tmp_path / "out"))
    # 3 real seconds -> 30 model seconds -> windows every 5 model seconds = every 0.5 real seconds
    assert offsets[:3] == [0.0, 0.5, 1.0] and offsets[-1] < 3.0
    assert all(e["duration_s"] <= 1.0 for e in stored_events(tmp_path / "out"))


def test_live_view_on_a_terminal_and_lines_in_a_log():
    import io

    from rich.console import Console

    from naturelm_edge.edge_runtime.live_view import LiveView
    from naturelm_edge.edge_runtime.runner import Summary

    summary = Summary(windows=12, gated=5, answered=7, escalated=2, overflows=3, audio_s=60.0, busy_s=1.5)
    screen = io.StringIO()
    with LiveView(Console(file=screen, force_terminal=True, width=100), summary) as view:
        view.answer("dawn.wav     5.0s  'Great Plains toad' (0.91)")
    drawn = screen.getvalue()
    assert "Great Plains toad" in drawn and "overflows" in drawn and "0.025" in drawn  # real-time factor 1.5/60
    log = io.StringIO()
    with LiveView(Console(file=log, force_terminal=False), summary) as view:
        view.answer("dawn.wav     5.0s  'House Sparrow' (0.80)")
    assert log.getvalue().strip() == "dawn.wav     5.0s  'House Sparrow' (0.80)"  # no redraw codes in a log


def test_explain_says_why_each_window_went_where_it_went(bundle, subset_audio, tmp_path):
    """Every window's screening is stored (outcome, gate level and floor); --explain prints it per window."""
    toad = load(subset_audio / "opensoundscape" / "great_plains_toad.wav", 16_000)[: 20 * 16_000]
    recording = tmp_path / "night.wav"
    quiet = np.random.default_rng(0).normal(0, 1e-4, 20 * 16_000)  # a recorder's self-noise, then the chorus
    sf.write(str(recording), np.concatenate([quiet, toad]).astype(np.float32), 16_000, subtype="FLOAT")
    out = tmp_path / "out"
    assert run_edge("--bundle", str(bundle), str(recording), "--no-detector", "--privacy", "off", "-q", "--out",
                    str(out)).returncode == 0
    rows = sqlite3.connect(out / "events.db").execute(
        "SELECT offset_s, outcome, level_db, floor_db FROM windows ORDER BY offset_s").fetchall()
    outcomes = {offset: outcome for offset, outcome, _, _ in rows}
    assert outcomes[0.0] == "gated" and outcomes[25.0] == "answered"
    assert all(level is not None and floor is not None for _, _, level, floor in rows)
    gated_level, gated_floor = next((lv, fl) for o, oc, lv, fl in rows if o == 0.0)
    assert gated_level - gated_floor < GateSettings().margin_db  # the gate's margin, not reached
    explained = run_edge("--explain", str(recording), "--out", str(out))
    assert explained.returncode == 0, explained.stderr
    table = [line.strip("| ").split(" | ") for line in explained.stdout.splitlines() if re.match(r"^\| \d", line)]
    assert [(float(r[0]), r[1]) for r in table] == [(offset, outcome) for offset, outcome, _, _ in rows]
    missing = run_edge("--explain", str(tmp_path / "other.wav"), "--out", str(out))
    assert missing.returncode != 0 and "no window of it" in missing.stderr
