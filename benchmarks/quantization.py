"""Quantization benchmark: the official-size encoder (random weights) in every precision, one thread.

Run: ``python -m benchmarks.quantization [--out benchmarks/results/quantization]``. Calibrates on windows
of held-out species from the shared recordings (``--held-out`` folders), then measures per format: size,
latency per 10 s window on one thread (median), speed-up over fp32 ONNX, and audio-token cosine to fp32
on held-out windows that were not used for calibration. Writes JSON, Markdown and PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from benchmarks.common import pyplot  # noqa: E402
from testbed.corpus import HELD_OUT  # noqa: E402

RUNS = 7
# species folders of the shared recordings that no student learns: calibration and evaluation come from them
FORMATS = [
    ("int8-dynamic", "x86", "minmax", True),
    ("int8-static", "x86", "minmax", True),
    ("int8-static", "x86", "minmax", False),
    ("int8-static", "tensorrt", "minmax", True),
    ("int8-static", "tensorrt", "percentile", True),
    ("fp16", "x86", "minmax", True),
]


def latency(path: Path, features: np.ndarray) -> float:
    from naturelm_edge.quantization.report import session

    sess = session(path, threads=1)
    sess.run(None, {"fbank": features[:1]})
    times = []
    for i in range(RUNS):
        start = time.perf_counter()
        sess.run(None, {"fbank": features[i % len(features)][None]})
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def official_model():  # noqa: ANN201 - models.NatureLM
    """The official-size audio path (BEATs + Q-Former, 112 M parameters, LLM width 4096) with seeded random weights."""
    import torch

    from naturelm_edge.models import NatureLM, preset

    torch.manual_seed(0)
    model = NatureLM(preset("official"))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    model.beats.fold_weight_norm()
    return model.eval()


def official_encoder(path: Path) -> Path:
    """:func:`official_model` as fp32 ONNX."""
    from naturelm_edge.export.encoder import encoder_spec
    from naturelm_edge.export.onnx_export import export_module
    from naturelm_edge.models import AudioEncoder

    model = official_model()
    export_module(AudioEncoder(model), encoder_spec(model), path)
    return path


def main() -> None:
    from naturelm_edge.audio import WindowSpec
    from naturelm_edge.audio.files import list_audio
    from naturelm_edge.quantization.calibration import ArrayReader, calibration_set, encoder_inputs
    from naturelm_edge.quantization.quantize import QuantSpec, quantize
    from naturelm_edge.quantization.report import run_encoder, session, token_cosines
    from naturelm_edge.sample_data import shared_audio_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "quantization")
    parser.add_argument("--held-out", nargs="*", default=HELD_OUT)
    parser.add_argument("--calibration-windows", type=int, default=8)
    args = parser.parse_args()
    audio = shared_audio_dir()
    if audio is None:
        raise SystemExit("no recordings: set NATURELM_EDGE_AUDIO")
    files = [f for folder in args.held_out for f in list_audio(audio / folder)]
    calib = calibration_set(files[::2], WindowSpec(), args.calibration_windows)
    evaluation = calibration_set(files[1::2], WindowSpec(), 12, 1)
    results: dict = {"calibration_windows": len(calib.features), "evaluation_windows": len(evaluation.features),
                     "held_out_folders": args.held_out, "formats": []}
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        fp32 = official_encoder(work / "encoder.onnx")
        reference, _ = run_encoder(session(fp32), evaluation.features)
        base_ms = latency(fp32, evaluation.features)
        results["fp32"] = {"bytes": fp32.stat().st_size, "ms_p50": base_ms}
        print(f"fp32: {fp32.stat().st_size / 1e6:.0f} MB, {base_ms:.0f} ms", flush=True)
        for mode, target, method, keep in FORMATS:
            spec = QuantSpec(mode, target, method, keep_attention_float=keep)
            out = work / f"{spec.label()}-{keep}.onnx"
            start = time.perf_counter()
            info = quantize(fp32, out, spec, ArrayReader(encoder_inputs(calib)), work / "ranges", calib.digest())
            seconds = time.perf_counter() - start
            tokens, _ = run_encoder(session(out), evaluation.features)
            cos = token_cosines(reference, tokens)
            ms = latency(out, evaluation.features)
            row = {"format": spec.label() + ("" if keep else "-attention-int8"), "bytes": out.stat().st_size,
                   "size_ratio": out.stat().st_size / fp32.stat().st_size, "ms_p50": ms, "speedup": base_ms / ms,
                   "cosine_mean": float(cos.mean()), "cosine_p5": float(np.percentile(cos, 5)),
                   "cosine_min": float(cos.min()), "quantize_seconds": round(seconds, 1),
                   "calibration_cache_hit": info.get("calibration_cache_hit")}
            results["formats"].append(row)
            print(json.dumps(row), flush=True)
            out.unlink()
    write(results, args.out)


def write(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "quantization.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# Official-size encoder (random weights), one thread", "",
             f"fp32 ONNX: {results['fp32']['bytes'] / 1e6:.0f} MB, {results['fp32']['ms_p50']:.0f} ms per 10 s window. "
             f"Calibrated on {results['calibration_windows']} held-out windows, evaluated on {results['evaluation_windows']} others.",
             "", "| format | size | size ratio | ms / window | speed-up | token cosine mean / p5 / min |", "|---|---|---|---|---|---|"]
    for r in results["formats"]:
        lines.append(f"| {r['format']} | {r['bytes'] / 1e6:.0f} MB | {r['size_ratio']:.2f} | {r['ms_p50']:.0f} | "
                     f"{r['speedup']:.2f}x | {r['cosine_mean']:.4f} / {r['cosine_p5']:.4f} / {r['cosine_min']:.4f} |")
    lines += ["", "Targets: int8 >= 2.5x faster than fp32, <= 0.27x size, cosine >= 0.99 on held-out windows.", ""]
    (out / "quantization.md").write_text("\n".join(lines))
    plt = pyplot()
    if plt is None:
        return
    names = ["fp32"] + [r["format"] for r in results["formats"]]
    speeds = [1.0] + [r["speedup"] for r in results["formats"]]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.barh(names, speeds, color=["C7"] + ["C0"] * len(results["formats"]))
    ax.axvline(2.5, color="C3", linestyle="--", label="target 2.5x")
    ax.set_xlabel("speed-up over fp32 ONNX (1 thread)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "quantization.png", dpi=120)


if __name__ == "__main__":
    main()
