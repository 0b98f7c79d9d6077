"""The field station's cost: memory on top of `edge-run` and the time each page request takes.

Run: ``python -m benchmarks.station [--minutes 20] [--bundle DIR] [--out benchmarks/results/station]``. The
same stream of shared recordings (as the soak benchmark makes it) goes through `edge-run --stdin` twice: alone,
and with `--web` while a client asks for every endpoint (page, events, counts, health, live spectrogram,
metrics) four times a second. Peak RSS of the edge-run process (sampled every 0.1 s) and request latencies.
Target: <= 40 MB on top of edge-run. Without ``--bundle`` the demo bundle is built. Writes station.json/.md/.png.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from benchmarks.common import machine, pyplot
from benchmarks.soak import EDGE_RUN, RATE, demo_bundle, recordings, stream_hour

ENDPOINTS = ("/", "/static/app.js", "/api/events?after=0&limit=200", "/api/counts", "/api/health", "/api/live.png",
             "/metrics")


def run(bundle: Path, audio: np.ndarray, out: Path, web: bool) -> dict:
    import psutil

    port = None
    args = [*EDGE_RUN, "--bundle", str(bundle), "--stdin", "--rate", str(RATE), "--out", str(out), "--profile",
            "x86-cpu", "--escalate", "off", "--privacy", "off", "-q"]
    if web:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        args += ["--web", f"127.0.0.1:{port}"]
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    watched, peak, latencies, done = psutil.Process(process.pid), [0], {e: [] for e in ENDPOINTS}, threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], watched.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.1)

    def ask() -> None:
        while not done.is_set():
            for endpoint in ENDPOINTS:
                started = time.perf_counter()
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}{endpoint}", timeout=10).read()
                    latencies[endpoint].append(time.perf_counter() - started)
                except OSError:
                    pass
            time.sleep(0.25)

    threads = [threading.Thread(target=sample, daemon=True)] + ([threading.Thread(target=ask, daemon=True)] if web else [])
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    process.stdin.write(audio.tobytes())
    process.stdin.close()
    process.wait()
    done.set()
    return {"peak_rss_mb": peak[0] / 2**20, "seconds": time.perf_counter() - started,
            "latency_ms": {e: {"p50": float(np.percentile(v, 50) * 1000), "p95": float(np.percentile(v, 95) * 1000),
                               "requests": len(v)} for e, v in latencies.items() if v}}


def main() -> None:
    from naturelm_edge.sample_data import shared_audio_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "station")
    args = parser.parse_args()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "naturelm-station"
    bundle = args.bundle or demo_bundle(work)
    calls, backgrounds = recordings(shared_audio_dir())
    audio = stream_hour(calls, backgrounds, np.random.default_rng(0))[: int(args.minutes * 60 * RATE)]
    result = {"machine": machine(), "minutes_of_audio": args.minutes}
    for name, web in (("edge-run", False), ("edge-run --web", True)):
        import shutil

        shutil.rmtree(work / name, ignore_errors=True)
        result[name] = run(bundle, audio, work / name, web)
    result["station_mb"] = result["edge-run --web"]["peak_rss_mb"] - result["edge-run"]["peak_rss_mb"]
    write(result, args.out)
    print((args.out / "station.md").read_text())


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "station.json").write_text(json.dumps(result, indent=2) + "\n")
    web = result["edge-run --web"]
    lines = ["# The field station's cost", "", f"{result['minutes_of_audio']:.0f} minutes of shared recordings through "
             "`edge-run --stdin` (demo bundle), alone and with `--web` while a client asks for every endpoint four "
             "times a second.", "", "| run | peak RSS MB | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {result[name]['peak_rss_mb']:.1f} | {result[name]['seconds']:.1f} |"
              for name in ("edge-run", "edge-run --web")]
    lines += ["", f"The station adds {result['station_mb']:.1f} MB (target <= 40 MB).", "",
              "| endpoint | requests | p50 ms | p95 ms |", "|---|---|---|---|"]
    lines += [f"| `{e}` | {v['requests']} | {v['p50']:.1f} | {v['p95']:.1f} |" for e, v in web["latency_ms"].items()]
    (out / "station.md").write_text("\n".join(lines) + "\n")
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(5, 2.5))
    names = ["edge-run", "edge-run --web"]
    ax.barh(names, [result[n]["peak_rss_mb"] for n in names], color=["#777", "#2f7d4f"])
    ax.set_xlabel("peak RSS (MB)")
    fig.tight_layout()
    fig.savefig(out / "station.png", dpi=120)


if __name__ == "__main__":
    main()
