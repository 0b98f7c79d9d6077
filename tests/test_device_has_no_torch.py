"""The on-device packages never import torch (a Jetson installs naturelm-edge[mic] without it)."""

from __future__ import annotations

import subprocess
import sys


def test_runtime_packages_do_not_import_torch(audio_dir):
    code = f"""
import sys
import numpy as np
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
