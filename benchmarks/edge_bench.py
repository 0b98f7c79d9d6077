"""The full `edge bench`: the tiny bundle, then the official-size int8 encoder, beside BirdNET, on all shared audio.

Run: ``python -m benchmarks.edge_bench [--work DIR] [--out benchmarks/results]``. Builds the demo bundle if
absent (``edge demo``), exports the official-size audio path with random weights and quantizes it to static
int8 for x86 (calibrated on held-out species, as ``edge build`` does), then runs ``edge bench`` in its own
process twice, one thread, on every recording in ``../shared/data/audio`` (soundscapes, background and focal
clips): once with the bundle as built, once measuring the official-size encoder in its place, and once more
with the detection stage added (``benchmarks/detector.py`` trains it) in front of the official-size encoder.
Results go to ``OUT/<device>/x86-cpu/bench.*``, ``official-int8-encoder.*`` and ``official-int8-cascade.*``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from benchmarks.quantization import official_encoder
from testbed.corpus import HELD_OUT

EDGE = [sys.executable, "-c", "from naturelm_edge.cli import run; run()"]


def int8_encoder(work: Path) -> Path:
    from naturelm_edge.audio import WindowSpec
    from naturelm_edge.audio.files import list_audio
    from naturelm_edge.quantization.calibration import ArrayReader, calibration_set, encoder_inputs
    from naturelm_edge.quantization.quantize import QuantSpec, quantize
    from naturelm_edge.sample_data import shared_audio_dir

    out = work / "official-encoder-int8.onnx"
    if out.is_file():
        return out
    audio = shared_audio_dir()
    if audio is None:
        raise SystemExit("no recordings: set NATURELM_EDGE_AUDIO")
    held_out = [f for folder in HELD_OUT for f in list_audio(audio / folder)]
    calib = calibration_set(held_out[::2], WindowSpec(), 8)
    fp32 = official_encoder(work / "official-encoder-fp32.onnx")
    quantize(fp32, out, QuantSpec("int8-static", "x86", "minmax", keep_attention_float=True),
             ArrayReader(encoder_inputs(calib)), work / "ranges", calib.digest())
    fp32.unlink()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("benchmarks/.work"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    bundle = args.work / "demo" / "bundle"
    if not (bundle / "manifest.json").is_file():
        subprocess.run([*EDGE, "demo", "--out", str(args.work / "demo")], check=True)
    encoder = int8_encoder(args.work)
    common = ["bench", str(bundle), "--profile", "x86-cpu", "--out", str(args.out)]
    subprocess.run([*EDGE, *common], check=True)
    subprocess.run([*EDGE, *common, "--encoder", str(encoder), "--name", "official-int8-encoder"], check=True)
    cascade = args.work / "detector-bundle"
    if not (cascade / "manifest.json").is_file():
        from benchmarks.detector import detector_bundle
        from naturelm_edge.sample_data import shared_audio_dir

        cascade = detector_bundle(args.work, shared_audio_dir())
    subprocess.run([*EDGE, "bench", str(cascade), "--profile", "x86-cpu", "--out", str(args.out), "--encoder",
                    str(encoder), "--name", "official-int8-cascade"], check=True)


if __name__ == "__main__":
    main()
