"""The on-device packages never import torch (a Jetson installs naturelm-edge[mic] without it)."""

from __future__ import annotations

import subprocess
import sys


def test_front_end_does_not_import_torch(audio_dir):
    code = f"""
import sys
import naturelm_edge, naturelm_edge.audio, naturelm_edge.sample_data, naturelm_edge.export.parity
from naturelm_edge.audio import fbank, iter_windows, stream, WindowSpec
for w in iter_windows(stream({str(audio_dir / 'phoebe' / '137480.mp3')!r}, 16000), WindowSpec()):
    assert fbank(w.samples).shape == (998, 128)
banned = [m for m in ("torch", "transformers", "peft", "optimum") if m in sys.modules]
print("LOADED", banned)
sys.exit(1 if banned else 0)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LOADED []" in result.stdout


def test_running_a_bundle_does_not_import_torch(built_bundle, subset_audio, tmp_path):
    work, *_ = built_bundle
    code = f"""
import sys
from pathlib import Path
from naturelm_edge.audio import WindowSpec
from naturelm_edge.bundle.open import load_bundle
from naturelm_edge.device_profiles import get
from naturelm_edge.edge_runtime.runner import RunOptions, Runner
from naturelm_edge.edge_runtime.settings import RunFlags
from naturelm_edge.edge_runtime.sources import file_sources
bundle = load_bundle(Path({str(work / 'bundle')!r}))
runner = Runner(bundle, get("x86-cpu"), RunOptions(Path({str(tmp_path / 'out')!r}), RunFlags(escalate="queue"), quiet=True))
summary = runner.run(file_sources([Path({str(subset_audio / 'opensoundscape' / 'great_plains_toad.wav')!r})], WindowSpec()))
assert summary.answered > 0
banned = [m for m in ("torch", "transformers", "peft", "optimum", "onnx") if m in sys.modules]
print("LOADED", banned)
sys.exit(1 if banned else 0)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert "LOADED []" in result.stdout
