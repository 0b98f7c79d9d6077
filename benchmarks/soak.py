"""Soak: a day of field audio through `edge-run --stdin`, as fast as the machine runs it; does anything grow?

Run: ``python -m benchmarks.soak [--hours 24] [--bundle DIR] [--out benchmarks/results/soak]``. The shared
recordings (bat recordings excepted) are decoded once at 16 kHz and replayed in random order at gains of
-20 to +6 dB, each over a random background recording at -30 to -10 dB, with quiet gaps; the stream is fed to
one `edge-run --stdin` process with clips on (kept under `--clips-max-mb`), escalation to a loopback server
and the event files. Every simulated hour the edge-run process is sampled: RSS, open file descriptors,
threads, `events.db` and WAL size, clip folder size. Targets: RSS growth <= 5 MB after the first hour,
descriptors and threads flat, WAL under 64 MB, clips within their limit, every window once.
Without ``--bundle`` the demo bundle is built (`edge demo`'s). Writes soak.json, soak.md and soak.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine, pyplot, recordings_dir

RATE = 16_000
EDGE_RUN = [sys.executable, "-c", "from naturelm_edge.cli import run_edge; run_edge()"]


def recordings(audio: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Calls (focal and soundscape recordings) and backgrounds, decoded once at the model's rate."""
    import csv

    from naturelm_edge.audio import load

    calls, backgrounds = [], []
    for row in csv.DictReader((audio / "LABELS.csv").open()):
        if row["path"].startswith(("whombat", "batdetect2")):
            continue  # ultrasonic: they need time expansion, this stream has none
        wave = load(audio / row["path"], RATE, max_seconds=60)
        if wave.size >= RATE:
            (backgrounds if row["kind"] == "background" else calls).append(wave)
    return calls, backgrounds


def stream_hour(calls: list[np.ndarray], backgrounds: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One hour of int16 audio: calls at random gains over backgrounds, with quiet gaps."""
    pieces, have = [], 0
    while have < 3600 * RATE:
        call = calls[rng.integers(len(calls))] * 10 ** (rng.uniform(-20, 6) / 20)
        background = backgrounds[rng.integers(len(backgrounds))]
        bed = np.resize(background, call.size) * 10 ** (rng.uniform(-30, -10) / 20)
        gap = rng.normal(0, 10 ** (rng.uniform(-70, -50) / 20), int(rng.uniform(0, 20) * RATE))
        for piece in (call + bed, gap):
            pieces.append(piece)
            have += piece.size
    audio = np.concatenate(pieces)[: 3600 * RATE]
    return (np.clip(audio, -1, 1) * 32767).astype("<i2")


def sample(pid: int, out: Path) -> dict:
    """What the edge-run process holds now, and what its output folder weighs."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)

    def size(path: Path) -> int:
        return path.stat().st_size if path.exists() else 0

    clips = sum(size(p) for p in (out / "clips").rglob("*.flac"))
    return {"rss_mb": int(status["VmRSS"].split()[0]) / 1024, "threads": int(status["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd")), "db_mb": size(out / "events.db") / 1e6,
            "wal_mb": size(out / "events.db-wal") / 1e6, "clips_mb": clips / 1e6}


def expected_windows(samples: int, window: int, hop: int) -> int:
    """Windows ``iter_windows`` cuts from a stream of ``samples`` (the last one padded)."""
    if samples < window:
        return 1
    full = (samples - window) // hop + 1
    start = full * hop
    return full + (samples > start - hop + window)


def soak(bundle: Path, audio: Path, out: Path, hours: float, clips_max_mb: float, seed: int = 0) -> dict:
    from naturelm_edge.wire.loopback import EscalationServer

    calls, backgrounds = recordings(audio)
    rng = np.random.default_rng(seed)
    server = EscalationServer().start()
    args = [*EDGE_RUN, "--bundle", str(bundle), "--stdin", "--rate", str(RATE), "--out", str(out), "--profile",
            "x86-cpu", "--escalate", server.url, "--clips-max-mb", str(clips_max_mb), "-q", "--json"]
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    samples, fed, started = [], 0, time.monotonic()
    try:
        for hour in range(int(np.ceil(hours))):
            chunk = stream_hour(calls, backgrounds, rng)[: int(min(1.0, hours - hour) * 3600 * RATE)]
            for i in range(0, chunk.size, RATE * 10):
                process.stdin.write(chunk[i:i + RATE * 10].tobytes())
            fed += chunk.size
            samples.append({"hour": hour + 1, "wall_s": time.monotonic() - started, **sample(process.pid, out)})
            print(f"hour {hour + 1}: {samples[-1]}", file=sys.stderr, flush=True)
        process.stdin.close()
        stdout, stderr = process.stdout.read(), process.stderr.read()
        process.wait(timeout=3600)
    finally:
        server.stop()
    if process.returncode != 0:
        raise SystemExit(f"edge-run failed: {stderr.decode()[-2000:]}")
    summary = json.loads(stdout)
    db = sqlite3.connect(out / "events.db")
    windows = db.execute("SELECT COUNT(*), COUNT(DISTINCT offset_s) FROM windows").fetchone()
    return {"hours": hours, "fed_samples": fed, "samples": samples, "summary": summary,
            "windows": {"stored": windows[0], "distinct": windows[1],
                        "expected": expected_windows(fed, 10 * RATE, 5 * RATE)},
            "wall_s": time.monotonic() - started, "clips_max_mb": clips_max_mb, "machine": machine()}


def verdict(result: dict) -> dict:
    after_first = [s for s in result["samples"] if s["hour"] >= 1]
    rss = [s["rss_mb"] for s in after_first]
    return {"rss_growth_mb": rss[-1] - rss[0], "rss_ok": rss[-1] - rss[0] <= 5.0,
            "fds": sorted({s["fds"] for s in after_first}), "threads": sorted({s["threads"] for s in after_first}),
            "wal_max_mb": max(s["wal_mb"] for s in result["samples"]),
            "clips_max_seen_mb": max(s["clips_mb"] for s in result["samples"]),
            "windows_ok": result["windows"]["stored"] == result["windows"]["distinct"] == result["windows"]["expected"]}


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result["verdict"] = v = verdict(result)
    (out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    s, w = result["summary"], result["windows"]
    lines = [f"# Soak: {result['hours']:g} hours of field audio through edge-run --stdin", "",
             f"{result['machine'].get('processor', '')}; {result['wall_s'] / 60:.1f} min of wall time; "
             f"{w['stored']} windows stored ({w['distinct']} distinct, {w['expected']} expected); "
             f"{s['answered']} answered, {s['gated']} gated, {s['escalated']} escalated "
             f"({s['delivered']} delivered), {s['clips_saved']} clips saved.", "",
             "| hour | RSS MB | fds | threads | events.db MB | WAL MB | clips MB |", "|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {x['hour']} | {x['rss_mb']:.1f} | {x['fds']} | {x['threads']} | {x['db_mb']:.2f} | "
              f"{x['wal_mb']:.2f} | {x['clips_mb']:.1f} |" for x in result["samples"]]
    lines += ["", f"- RSS growth after the first hour: **{v['rss_growth_mb']:+.1f} MB** (target <= 5 MB: "
              f"{'met' if v['rss_ok'] else 'missed'})",
              f"- open descriptors seen: {v['fds']}; threads seen: {v['threads']}",
              f"- WAL at most {v['wal_max_mb']:.2f} MB (limit 64 MB); clips at most {v['clips_max_seen_mb']:.1f} MB "
              f"(limit {result['clips_max_mb']:g} MB, the newest 10 per label kept beyond it)",
              f"- every window once: {'yes' if v['windows_ok'] else 'NO'}"]
    (out / "soak.md").write_text("\n".join(lines) + "\n")
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    hours = [x["hour"] for x in result["samples"]]
    axes[0].plot(hours, [x["rss_mb"] for x in result["samples"]], marker="o")
    axes[0].set_title("RSS (MB)")
    axes[1].plot(hours, [x["fds"] for x in result["samples"]], label="fds")
    axes[1].plot(hours, [x["threads"] for x in result["samples"]], label="threads")
    axes[1].legend()
    axes[1].set_title("descriptors, threads")
    for key in ("db_mb", "wal_mb", "clips_mb"):
        axes[2].plot(hours, [x[key] for x in result["samples"]], label=key)
    axes[2].legend()
    axes[2].set_title("disk (MB)")
    for ax in axes:
        ax.set_xlabel("simulated hour")
    fig.tight_layout()
    fig.savefig(out / "soak.png", dpi=110)


def demo_bundle(work: Path) -> Path:
    """The demo bundle (`edge demo`'s), built under ``work``."""
    subprocess.run([sys.executable, "-c", "from naturelm_edge.cli import run; run()", "demo", "--out",
                    str(work / "demo")], check=True)
    return work / "demo" / "bundle"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--audio", type=Path, default=None)
    parser.add_argument("--clips-max-mb", type=float, default=50.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "soak")
    args = parser.parse_args()
    audio = recordings_dir(args.audio)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "naturelm-soak"
    bundle = args.bundle or demo_bundle(work)
    run_out = work / "run"
    if run_out.exists():
        import shutil

        shutil.rmtree(run_out)
    write(soak(bundle, audio, run_out, args.hours, args.clips_max_mb), args.out)
    print((args.out / "soak.md").read_text())


if __name__ == "__main__":
    main()
