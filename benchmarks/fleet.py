"""Fleet benchmark: the escalation round trip and dynamic batching of `edge serve`, and `edge flash` over ssh.

Run: ``python -m benchmarks.fleet [--out benchmarks/results/fleet]`` (needs sshd and rsync, as the tests do).
- Escalation: a tiny checkpoint served on loopback; round trip of a 10 s clip one at a time (p50/p95), then
  throughput of 32 concurrent clips with dynamic batching (max batch 8) against the same server started
  with max batch 1, in the same run.
- Flash: a 100 MB bundle (the tiny bundle plus a 100 MB weights file) to a loopback sshd; time and bytes of
  the first flash, and of a second flash after one small file changed (only that file should move).
Writes fleet.json, fleet.md and fleet.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.common import machine, pyplot

EDGE = [sys.executable, "-c", "from naturelm_edge.cli import run; run()"]
CLIPS = 32


def escalation(checkpoint: Path, work: Path) -> dict:
    from naturelm_edge.wire.client import post_escalation
    from testbed.serve import Server, request

    results = {}
    for batch in (8, 1):
        server = Server(checkpoint, work / f"state-{batch}", "--max-batch", str(batch), "--max-wait-ms", "20").start()
        try:
            post_escalation(server.url, request(f"warm-{batch}"), None, 60)
            times = []
            for i in range(10):
                started = time.perf_counter()
                post_escalation(server.url, request(f"single-{batch}-{i}", seed=i), None, 60)
                times.append(time.perf_counter() - started)
            started = time.perf_counter()
            with ThreadPoolExecutor(CLIPS) as pool:
                list(pool.map(lambda i, server=server, batch=batch: post_escalation(
                    server.url, request(f"many-{batch}-{i}", seed=i), None, 120),
                              range(CLIPS)))
            elapsed = time.perf_counter() - started
            results[f"max_batch_{batch}"] = {
                "round_trip_p50_ms": float(np.percentile(times, 50) * 1000),
                "round_trip_p95_ms": float(np.percentile(times, 95) * 1000),
                "concurrent_clips": CLIPS, "seconds": elapsed, "clips_per_s": CLIPS / elapsed,
                "batches": server.metric("escalation_batch_size_count"),
                "inferences": server.metric("escalation_inferences_total")}
        finally:
            server.stop()
    results["batching_speedup"] = results["max_batch_8"]["clips_per_s"] / results["max_batch_1"]["clips_per_s"]
    return results


def flash(bundle: Path, work: Path) -> dict:
    from testbed.bundles import variant
    from testbed.sshd import Sshd

    big = variant(bundle, work / "bundle-100mb", {"weights.bin": np.random.default_rng(0).bytes(100 * 2**20)})
    changed = variant(big, work / "bundle-100mb-v2", {"labels.txt": b"Great Plains toad\n"})
    server = Sshd(work / "sshd").start()
    server.trust_host_key()
    record = work / "flashes.jsonl"
    args = ["--identity", str(server.user_key), "--known-hosts", str(server.known_hosts), "--python", sys.executable]
    env = {**os.environ, "NATURELM_EDGE_FLASH_RECORD": str(record)}
    rows = {}
    try:
        for name, source in (("first", big), ("one_file_changed", changed)):
            started = time.perf_counter()
            subprocess.run([*EDGE, "flash", str(source), server.url(work / "device"), *args], check=True, env=env,
                           capture_output=True)
            entry = json.loads(record.read_text().splitlines()[-1])
            rows[name] = {"seconds": time.perf_counter() - started, "bytes_sent": entry["bytes_sent"],
                          "result": entry["result"]}
    finally:
        server.stop()
    rows["bundle_bytes"] = sum(f.stat().st_size for f in big.rglob("*") if f.is_file())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fleet")
    parser.add_argument("--work", type=Path, default=Path("benchmarks/.work"))
    args = parser.parse_args()
    demo = args.work / "demo"
    if not (demo / "bundle" / "manifest.json").is_file():
        subprocess.run([*EDGE, "demo", "--out", str(demo)], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = {"machine": machine(), "escalation": escalation(demo / "tiny-checkpoint", work),
                   "flash": flash(demo / "bundle", work)}
    write(results, args.out)
    print(json.dumps(results, indent=2))


def write(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "fleet.json").write_text(json.dumps(results, indent=2) + "\n")
    e, f = results["escalation"], results["flash"]
    lines = ["# Fleet: escalation server and flashing (loopback, tiny model)", "",
             "| escalation | round trip p50 | p95 | 32 concurrent clips | clips/s | forward passes (all 43 clips of the run) |", "|---|---|---|---|---|---|"]
    for key in ("max_batch_1", "max_batch_8"):
        r = e[key]
        lines.append(f"| {key.replace('_', ' ')} | {r['round_trip_p50_ms']:.0f} ms | {r['round_trip_p95_ms']:.0f} ms | "
                     f"{r['seconds']:.2f} s | {r['clips_per_s']:.1f} | {r['batches']:.0f} |")
    lines += ["", f"Dynamic batching: **{e['batching_speedup']:.2f}x** the throughput of one clip at a time.", "",
              f"| flash over ssh ({f['bundle_bytes'] / 2**20:.0f} MB bundle) | time | bytes sent | result |", "|---|---|---|---|"]
    for key in ("first", "one_file_changed"):
        r = f[key]
        lines.append(f"| {key.replace('_', ' ')} | {r['seconds']:.1f} s | {r['bytes_sent']:,} | {r['result']} |")
    (out / "fleet.md").write_text("\n".join(lines) + "\n")
    plt = pyplot()
    if plt is None:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.bar(["max batch 1", "max batch 8"], [e["max_batch_1"]["clips_per_s"], e["max_batch_8"]["clips_per_s"]])
    left.set_ylabel("clips per second")
    left.set_title("escalation throughput, 32 concurrent clips")
    right.bar(["first flash", "one file changed"], [f["first"]["bytes_sent"] / 2**20, f["one_file_changed"]["bytes_sent"] / 2**20])
    right.set_ylabel("MB sent")
    right.set_title("edge flash over ssh")
    fig.tight_layout()
    fig.savefig(out / "fleet.png", dpi=110)


if __name__ == "__main__":
    main()
