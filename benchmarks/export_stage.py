"""Export-stage benchmark: fbank cost, and the official-size encoder's export time, peak memory, latency.

Run: ``python -m benchmarks.export_stage [--out benchmarks/results/export-stage]``. Writes
``export_stage.json``, ``export_stage.md`` and ``export_stage.png``. Everything runs on one thread, as on a
field device's spare core. The official-size audio path (BEATs 12 x 768, Q-Former, projection to 4096) is
built with random weights: latency and memory do not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from benchmarks.common import pyplot  # noqa: E402

REPEATS = 200
ENCODER_RUNS = 10


def percentiles(samples: list[float]) -> dict[str, float]:
    values = np.array(samples) * 1000
    return {"p50_ms": float(np.percentile(values, 50)), "p95_ms": float(np.percentile(values, 95)),
            "mean_ms": float(values.mean()), "runs": len(samples)}


def bench_fbank() -> dict:
    from naturelm_edge.audio import fbank
    from naturelm_edge.sample_data import synthetic_soundscape

    wave = synthetic_soundscape(10.0)
    for _ in range(10):
        fbank(wave)
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fbank(wave)
        times.append(time.perf_counter() - start)
    return {"per_10s_window": percentiles(times), "target_ms": 2.0, "torchaudio_ms_reference": 4.2}


EXPORT_CHILD = """
import json, sys, time, resource
from pathlib import Path
import torch
torch.set_num_threads(1)
from naturelm_edge.models import NatureLM, preset
from naturelm_edge.export.encoder import export_encoder
torch.manual_seed(0)
model = NatureLM(preset("official"))
for p in model.parameters():
    torch.nn.init.normal_(p, std=0.02)
report = export_encoder(model, Path(sys.argv[1]), [Path(sys.argv[2])] if len(sys.argv) > 2 else None)
report = dict(report.__dict__)
report["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print("REPORT" + json.dumps(report))
"""


def bench_official_encoder(work: Path, clip: Path | None) -> dict:
    args = [sys.executable, "-c", EXPORT_CHILD, str(work)] + ([str(clip)] if clip else [])
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    line = next((row for row in result.stdout.splitlines() if row.startswith("REPORT")), None)
    if result.returncode != 0 or line is None:
        raise SystemExit(f"official export failed:\n{result.stderr[-3000:]}")
    report = json.loads(line[len("REPORT"):])
    latency = bench_onnx_latency(work / "encoder.onnx")
    return {
        "parameters": report["parameters"],
        "export_seconds": report["export_seconds"],
        "export_and_verify_wall_seconds": round(wall, 2),
        "peak_rss_bytes": report["peak_rss_bytes"],
        "peak_rss_target_bytes": 4 * 1024**3,
        "onnx_bytes": report["onnx_bytes"],
        "parity": report["parity"]["audio_tokens"],
        "onnx_fp32_1_thread": latency,
    }


def bench_onnx_latency(path: Path) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    start = time.perf_counter()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - start
    features = np.random.default_rng(0).normal(size=(1, 998, 128)).astype(np.float32)
    session.run(None, {"fbank": features})
    times = []
    for _ in range(ENCODER_RUNS):
        start = time.perf_counter()
        session.run(None, {"fbank": features})
        times.append(time.perf_counter() - start)
    return {"per_10s_window": percentiles(times), "session_load_seconds": round(load_s, 3)}


def machine() -> dict:
    import torch

    from benchmarks.common import machine as describe

    return {**describe(), "torch": torch.__version__}


def write_outputs(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "export_stage.json").write_text(json.dumps(results, indent=2) + "\n")
    fb = results["fbank"]["per_10s_window"]
    enc = results["official_encoder"]
    lines = [
        "# Export stage benchmark", "",
        f"Machine: {results['machine']['processor']} ({results['machine']['cores']} cores), 1 thread, "
        f"onnxruntime {results['machine']['onnxruntime']}, torch {results['machine']['torch']}.", "",
        "| measure | value | target |", "|---|---|---|",
        f"| fbank per 10 s window (p50 / p95) | {fb['p50_ms']:.2f} / {fb['p95_ms']:.2f} ms | < 2 ms (torchaudio 4.2 ms) |",
        f"| official encoder parameters | {enc['parameters'] / 1e6:.1f} M | about 113 M |",
        f"| official encoder export time | {enc['export_seconds']:.1f} s | |",
        f"| official encoder export peak RSS | {enc['peak_rss_bytes'] / 1e9:.2f} GB | < 4 GB |",
        f"| official encoder ONNX size | {enc['onnx_bytes'] / 1e6:.0f} MB | |",
        f"| official encoder ONNX fp32 per 10 s window (p50) | {enc['onnx_fp32_1_thread']['per_10s_window']['p50_ms']:.0f} ms | |",
        f"| parity min cosine / rel. error | {enc['parity']['min_cosine']:.7f} / {enc['parity']['relative_error']:.1e} | >= 0.9999 / <= 1e-3 |",
        "",
    ]
    (out / "export_stage.md").write_text("\n".join(lines))
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].barh(["fbank p50", "fbank p95", "torchaudio"], [fb["p50_ms"], fb["p95_ms"], 4.2], color=["C0", "C0", "C7"])
    axes[0].axvline(2.0, color="C3", linestyle="--", label="target")
    axes[0].set_xlabel("ms per 10 s window, 1 thread")
    axes[0].legend()
    axes[1].bar(["export peak RSS"], [enc["peak_rss_bytes"] / 1e9], color="C1")
    axes[1].axhline(4.0, color="C3", linestyle="--", label="4 GB limit")
    axes[1].set_ylabel("GB")
    axes[1].legend()
    fig.suptitle("naturelm-edge export stage")
    fig.tight_layout()
    fig.savefig(out / "export_stage.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "export-stage")
    parser.add_argument("--verify-audio", type=Path, default=None, help="clip to verify the export on")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        results = {"machine": machine(), "fbank": bench_fbank(),
                   "official_encoder": bench_official_encoder(Path(work), args.verify_audio)}
    write_outputs(results, args.out)
    print((args.out / "export_stage.md").read_text())


if __name__ == "__main__":
    main()
