"""The Python API (EdgeModel.detect), the bundle as a typed contract, and commands that work with the shell."""

from __future__ import annotations

import inspect
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from naturelm_edge import EdgeModel
from naturelm_edge.audio import FbankSettings, fbank
from naturelm_edge.bundle.manifest import BundleError
from naturelm_edge.bundle.open import load_bundle
from naturelm_edge.edge_runtime.gate import GateSettings
from tests.helpers import events, run_cli, run_edge

TOAD = "opensoundscape/great_plains_toad.wav"


def edited(bundle: Path, out: Path, edit) -> Path:  # noqa: ANN001 - manifest dict -> None
    """A copy of ``bundle`` whose manifest ``edit`` changed (the files, and their hashes, untouched)."""
    shutil.copytree(bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    edit(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_detect_is_lazy_and_gives_what_edge_run_stores(bundle, subset_audio, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = EdgeModel(bundle, profile="x86-cpu")
    results = model.detect(subset_audio / TOAD)
    assert inspect.isgenerator(results)
    first = next(results)  # one window computed, the rest not yet
    results = [first, *results]
    assert [r.offset_s for r in results] == [5.0 * i for i in range(len(results))] and len(results) >= 2
    assert list(tmp_path.iterdir()) == []  # nothing written: no events.db, no clips
    answered = [r for r in results if r.answered]
    assert answered and all(r.answer and 0 <= r.confidence <= 1 for r in answered)
    assert all(r.label in model.labels for r in answered if r.label)

    result = run_edge("--bundle", str(bundle), "--input", str(subset_audio / TOAD), "--out", str(tmp_path / "run"),
                      "--profile", "x86-cpu", "--escalate", "off", "-q")
    assert result.returncode == 0, result.stderr
    stored = {(e["offset_s"], e["answer"], e["confidence"]) for e in events(tmp_path / "run")}
    assert stored == {(r.offset_s, r.answer, r.confidence) for r in answered}


def test_detect_takes_an_array_at_any_rate(bundle, subset_audio):
    import soundfile as sf

    wave, rate = sf.read(str(subset_audio / TOAD), dtype="float32")
    model = EdgeModel(bundle, profile="x86-cpu")
    from_file = list(model.detect(subset_audio / TOAD))
    from_array = list(model.detect(wave if wave.ndim == 1 else wave.mean(axis=1), sample_rate=rate))
    assert [r.offset_s for r in from_array] == [r.offset_s for r in from_file]
    assert any(r.answered for r in from_array) and from_array[0].source == "array"
    with pytest.raises(Exception, match="sample_rate"):
        next(model.detect(np.zeros(16000, np.float32)))


def test_the_runtime_takes_every_audio_setting_from_the_manifest(bundle, subset_audio, tmp_path):
    """Another hop and another fbank normalisation: the windows and the features the encoder gets follow them."""
    def other_settings(manifest: dict) -> None:
        manifest["audio"]["hop_s"] = 2.5
        manifest["audio"]["fbank"]["norm_mean"] = 12.0
        manifest["audio"]["fbank"]["preemphasis"] = 0.9

    model = EdgeModel(edited(bundle, tmp_path / "b", other_settings), profile="x86-cpu",
                      gate=GateSettings(enabled=False))
    settings = model.bundle.audio.fbank
    assert settings == FbankSettings(norm_mean=12.0, preemphasis=0.9)
    seen: list[np.ndarray] = []
    encode = model.engine.audio_tokens
    model.engine.audio_tokens = lambda features: seen.append(features) or encode(features)
    results = list(model.detect(subset_audio / TOAD))
    assert [r.offset_s for r in results[:3]] == [0.0, 2.5, 5.0]
    assert len(seen) == len(results)
    for result, features in zip(results, seen):
        assert np.allclose(features, fbank(result.samples, settings), atol=1e-6)
        assert not np.allclose(features, fbank(result.samples), atol=1e-2)  # not the defaults


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m["audio"]["fbank"].update(frame_shift_ms=20.0), "reads 998 frames"),
    (lambda m: m["audio"]["fbank"].update(num_mel_bins=64), "reads 128 mel bins"),
    (lambda m: m["audio"]["fbank"].update(dither=1.0), "does not know \\(dither\\)"),
    (lambda m: m["audio"].update(hop_s=12.0), "longer than the 10.0 s window"),
    (lambda m: m["audio"]["fbank"].update(sample_rate=8000), "differs from audio.sample_rate"),
    (lambda m: m["audio"]["fbank"].update(precision="float16"), "precision .float16. must be float32 or float64"),
    (lambda m: m["audio"].pop("window_s"), "incomplete or invalid"),
    (lambda m: m.update(files=[f for f in m["files"] if f["role"] != "tokenizer"]), "no tokenizer file"),
])
def test_manifests_that_break_the_contract_are_refused(bundle, tmp_path, edit, message):
    broken = edited(bundle, tmp_path / "broken", edit)
    with pytest.raises(BundleError, match=message):
        load_bundle(broken)
    result = run_edge("--bundle", str(broken), "--input", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode != 0 and "broken" in result.stderr and "Traceback" not in result.stderr


def test_edge_run_takes_a_shell_glob_after_input(bundle, subset_audio, tmp_path):
    recordings = sorted((subset_audio / "phoebe").rglob("*.*"))[:3]
    assert len(recordings) == 3
    result = run_edge("--bundle", str(bundle), "--input", *map(str, recordings), "--out", str(tmp_path / "run"),
                      "--profile", "x86-cpu", "--escalate", "off", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["windows"] >= 3 and summary["failed"] == []
    done = {row[0] for row in sqlite3.connect(tmp_path / "run" / "events.db").execute(
        "SELECT DISTINCT source FROM windows")}
    assert done == {str(p) for p in recordings}


def test_tables_are_whole_in_a_pipe_and_json_for_scripts():
    piped = run_cli("profiles", "list")
    assert piped.returncode == 0 and "| jetson-agx-orin-64gb |" in piped.stdout
    records = json.loads(run_cli("profiles", "list", "--json").stdout)
    assert {"jetson-agx-orin-64gb", "raspberry-pi-5", "x86-cpu"} <= {r["name"] for r in records}


def test_edge_run_names_bad_paths_before_any_work(bundle, subset_audio, tmp_path):
    afile = tmp_path / "results.txt"
    afile.write_text("not a folder")
    cases = [(["--input", str(subset_audio / TOAD), "--out", str(afile)], "--out names a file"),
             (["--input", str(tmp_path / "nope.wav"), "--out", str(tmp_path / "o")], "nope.wav: --input names no such"),
             (["--watch", str(afile), "--out", str(tmp_path / "o")], "--watch names a file"),
             (["--input", str(subset_audio / TOAD), "--token-file", str(tmp_path / "t"), "--out", str(tmp_path / "o")],
              "--token-file names no such file")]
    for args, message in cases:
        result = run_edge("--bundle", str(bundle), "--profile", "x86-cpu", *args)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert afile.read_text() == "not a folder" and not (tmp_path / "o").exists()  # nothing touched


def test_a_recording_cut_off_by_a_power_loss_is_answered(bundle, subset_audio, tmp_path):
    """RIFF and data sizes of 0, as a recorder whose batteries died leaves them: every window is still answered."""
    dead = tmp_path / "20240601_050000.WAV"
    data = bytearray((subset_audio / TOAD).read_bytes())
    data[4:8] = bytes(4)
    at = data.find(b"data")
    data[at + 4:at + 8] = bytes(4)
    dead.write_bytes(bytes(data))
    out = tmp_path / "out"
    result = run_edge("--bundle", str(bundle), dead.as_posix(), "--out", str(out), "--profile", "x86-cpu",
                      "--escalate", "off", "--no-gate", "-q")
    assert result.returncode == 0, result.stderr
    assert f"warning: {dead}: repaired" in result.stderr
    intact = run_edge("--bundle", str(bundle), str(subset_audio / TOAD), "--out", str(tmp_path / "intact"),
                      "--profile", "x86-cpu", "--escalate", "off", "--no-gate", "-q")
    assert intact.returncode == 0
    assert [e["answer"] for e in events(out)] == [e["answer"] for e in events(tmp_path / "intact")]
