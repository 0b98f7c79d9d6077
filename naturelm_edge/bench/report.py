"""The benchmark report: figures, the verdict against the profile's budgets, and JSON, Markdown and PNG files."""

from __future__ import annotations

import json
import platform
import re
from datetime import datetime, timezone
from pathlib import Path

from naturelm_edge.bench.clock import StageClock
from naturelm_edge.bench.pipeline import ALWAYS_ON, DECODER_PARTS, SCREENING, Measurement, peak_rss_mb
from naturelm_edge.device_profiles import DeviceFacts, Profile
from naturelm_edge.edge_runtime.screening import GATED, OUTCOMES
from naturelm_edge.errors import EdgeError

SCHEMA = 1
LATENCY_STAGES = (*ALWAYS_ON, *DECODER_PARTS, "window", "escalation")


def device_name(facts: DeviceFacts) -> str:
    """A folder name for this machine: the Jetson/Pi model when there is one, else the CPU model."""
    name = facts.device_tree_model or facts.cpu_model or facts.machine or "unknown"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]


def versions() -> dict:
    import numpy
    import onnxruntime
    import scipy
    import soundfile

    from naturelm_edge._version import __version__

    return {"naturelm_edge": __version__, "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "numpy": numpy.__version__, "soundfile": soundfile.__version__, "scipy": scipy.__version__}


def build_report(m: Measurement, profile: Profile, facts: DeviceFacts, overhead_per_call_s: float,
                 birdnet: dict | None, tegrastats: dict | None) -> dict:
    clock: StageClock = m.clock
    stages = {name: clock.summary(name) for name in LATENCY_STAGES}
    wall = sum(stages[s]["wall_s"] for s in ALWAYS_ON)
    cpu = sum(stages[s]["cpu_s"] for s in ALWAYS_ON)
    for name in ALWAYS_ON:
        stages[name]["cpu_s_per_audio_hour"] = stages[name]["cpu_s"] / m.audio_s * 3600 if m.audio_s else None
    hour = 3600 / m.audio_s if m.audio_s else None
    totals = {"wall_s": wall, "cpu_s": cpu, "real_time_factor": wall / m.audio_s if m.audio_s else None,
              "cpu_s_per_audio_hour": cpu * hour if hour else None,
              "screening_cpu_s_per_audio_hour": sum(stages[s]["cpu_s"] for s in SCREENING) * hour if hour else None,
              "throughput_windows_per_s": m.windows / wall if wall else None}
    harness_calls = sum(stages[s]["calls"] for s in (*ALWAYS_ON, *DECODER_PARTS))
    report = {
        "schema": SCHEMA,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": m.settings.quick,
        "device": {"name": device_name(facts), "machine": facts.machine, "model": facts.device_tree_model or None,
                   "cpu": facts.cpu_model, "tegra_release": facts.tegra_release or None},
        "profile": profile.name,
        "providers": {"requested": [p.name for p in profile.providers], "ran": m.engine.providers,
                      "missing": m.engine.missing},
        "versions": versions(),
        "bundle": {"id": m.bundle.id, "sizes_bytes": {f["role"]: f["bytes"] for f in m.bundle.manifest["files"]},
                   "encoder_override": str(m.settings.encoder) if m.settings.encoder else None,
                   "decoder_fed_by": "measured encoder" if m.own_tokens_fit else "bundle encoder (untimed; widths differ)"},
        "threads": profile.intra_op_threads,
        "audio": {"files": len(m.files), "recordings": [f for f, _ in m.files], "failed": m.failed, "seconds": m.audio_s, "windows": m.windows,
                  **{name: m.outcomes[name] for name in OUTCOMES},
                  "gated_share": m.outcomes[GATED] / m.windows if m.windows else None,
                  "detector": m.engine.detector is not None,
                  "time_expansion": m.settings.time_expansion},
        "load_s": m.load_s,
        "model_rss_mb": m.model_rss_mb,
        "peak_rss_mb": peak_rss_mb(),
        "stages": stages,
        "totals": totals,
        "harness": {"cost_per_call_us": overhead_per_call_s * 1e6, "calls": harness_calls,
                    "overhead_share": harness_calls * overhead_per_call_s / wall if wall else None},
        "birdnet": birdnet,
        "tegrastats": tegrastats,
    }
    if birdnet and birdnet.get("cpu_s_per_audio_hour") and totals["cpu_s_per_audio_hour"] is not None:
        report["cost_ratio_to_birdnet"] = totals["cpu_s_per_audio_hour"] / birdnet["cpu_s_per_audio_hour"]
    report["verdict"] = verdict(report, profile)
    return report


def verdict(report: dict, profile: Profile) -> dict:
    """Does the bundle keep up on this profile: window latency, memory and real time, each computed."""
    budget_ms = profile.runtime.get("latency_budget_ms")
    budget_mb = profile.runtime.get("memory_budget_mb")
    p95 = report["stages"]["window"]["p95_ms"]
    rtf = report["totals"]["real_time_factor"]
    checks = {
        "latency": {"budget_ms": budget_ms, "p95_ms": p95,
                    "ok": None if budget_ms is None or p95 is None else p95 <= budget_ms},
        "memory": {"budget_mb": budget_mb, "peak_rss_mb": report["peak_rss_mb"],
                   "ok": None if budget_mb is None else report["peak_rss_mb"] <= budget_mb},
        "real_time": {"real_time_factor": rtf, "ok": None if rtf is None else rtf < 1.0},
    }
    missing = report["providers"]["missing"]
    outcome = all(c["ok"] is not False for c in checks.values())
    note = None
    if missing:
        note = (f"{', '.join(missing)} missing on this machine: ran on {', '.join(report['providers']['ran'])}; "
                f"these are not {profile.name}'s figures.")
    return {"ok": outcome, "checks": checks, "representative": not missing, "note": note}


def output_dir(root: Path, report: dict) -> Path:
    return root / report["device"]["name"] / report["profile"]


def write(report: dict, folder: Path, name: str = "bench") -> list[Path]:
    """NAME.json, NAME.md and (with matplotlib) NAME.png in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.json", folder / f"{name}.md"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(markdown(report))
    png = plot(report, folder / f"{name}.png")
    return paths + ([png] if png else [])


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def markdown(report: dict) -> str:
    t, a, v = report["totals"], report["audio"], report["verdict"]
    lines = [f"# edge bench: {report['device']['name']} / {report['profile']}", "",
             f"{report['created_utc']}, bundle `{report['bundle']['id']}`, {report['threads']} thread(s), "
             f"providers {', '.join(report['providers']['ran'])}" + (" (quick)" if report["quick"] else ""), ""]
    if v["note"]:
        lines += [f"**{v['note']}**", ""]
    if report["bundle"]["encoder_override"]:
        lines += [f"Encoder measured: `{report['bundle']['encoder_override']}`; decoder fed by "
                  f"{report['bundle']['decoder_fed_by']}.", ""]
    refused = (f", {a['not_calls']} refused by the detector, {a['heard']} already heard by the last answered window"
               if a.get("detector") else ", no detector in the bundle")
    lines += [f"Audio: {a['files']} files, {a['seconds']:.1f} s, {a['windows']} windows, {a['gated']} gated "
              f"({100 * (a['gated_share'] or 0):.1f} %){refused}, {a['answered']} answered.", "",
              "| stage | calls | p50 ms | p95 ms | p99 ms | CPU-s per audio hour |", "|---|---:|---:|---:|---:|---:|"]
    for name, s in report["stages"].items():
        per_hour = s.get("cpu_s_per_audio_hour")
        lines.append(f"| {name} | {s['calls']} | {_ms(s['p50_ms'])} | {_ms(s['p95_ms'])} | {_ms(s['p99_ms'])} | "
                     f"{'' if per_hour is None else f'{per_hour:.2f}'} |")
    lines += ["", f"- cost: **{t['cpu_s_per_audio_hour']:.1f} CPU-s per audio hour**, of which screening every window "
                  f"(decode, fbank, gate, detector, store) {t['screening_cpu_s_per_audio_hour']:.1f}; real-time factor "
                  f"{t['real_time_factor']:.4f}, {t['throughput_windows_per_s']:.1f} windows/s",
              f"- model load {report['load_s']:.2f} s, models' RSS {report['model_rss_mb']:.0f} MB, "
              f"peak RSS {report['peak_rss_mb']:.0f} MB",
              f"- harness overhead {100 * (report['harness']['overhead_share'] or 0):.3f} % "
              f"({report['harness']['calls']} timed calls at {report['harness']['cost_per_call_us']:.2f} us)"]
    b = report.get("birdnet")
    if b and "error" not in b:
        lines.append(f"- BirdNET v2.4 (ai-edge-litert, {b['threads']} thread(s)), same audio: "
                     f"{b['cpu_s_per_audio_hour']:.1f} CPU-s per audio hour, peak RSS {b['peak_rss_mb']:.0f} MB; "
                     f"ours / BirdNET = **{report['cost_ratio_to_birdnet']:.2f}x**")
    elif b:
        lines.append(f"- BirdNET failed: {b['error']}")
    else:
        lines.append("- no BirdNET beside it (`--no-birdnet`, or the `birdnet` extra not installed)")
    g = report.get("tegrastats")
    if g and g.get("power_mean_w") is not None:
        lines.append(f"- tegrastats: {g['power_mean_w']:.2f} W mean, {g['energy_wh_per_audio_hour']:.3f} Wh per audio hour, "
                     f"RAM peak {g['ram_peak_mb']} MB, hottest sensor "
                     f"{max(g['max_temperature_c'].values(), default=float('nan')):.1f} C")
    lines += ["", "## Verdict", "", f"**{'meets' if v['ok'] else 'misses'} {report['profile']}'s budgets**", ""]
    for name, check in v["checks"].items():
        lines.append(f"- {name}: {'ok' if check['ok'] else ('n/a' if check['ok'] is None else 'MISSED')} "
                     f"({', '.join(f'{k}={_fmt(x)}' for k, x in check.items() if k != 'ok')})")
    return "\n".join(lines) + "\n"


def _fmt(x: object) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def plot(report: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    stages = [(n, s) for n, s in report["stages"].items() if s["calls"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    x = range(len(stages))
    left.bar([i - 0.2 for i in x], [s["p50_ms"] for _, s in stages], 0.4, label="p50")
    left.bar([i + 0.2 for i in x], [s["p95_ms"] for _, s in stages], 0.4, label="p95")
    left.set_xticks(list(x), [n for n, _ in stages], rotation=35, ha="right")
    left.set_yscale("log")
    left.set_ylabel("ms per call")
    left.legend()
    left.set_title("latency per stage")
    bottom, names = 0.0, []
    for name in ALWAYS_ON:
        value = report["stages"][name].get("cpu_s_per_audio_hour") or 0.0
        right.bar(0, value, bottom=bottom, label=name)
        bottom += value
        names.append(name)
    labels = ["naturelm-edge"]
    b = report.get("birdnet")
    if b and "error" not in b:
        right.bar(1, b["cpu_s_per_audio_hour"], color="grey", label="BirdNET v2.4")
        labels.append("BirdNET v2.4")
    right.set_xticks(range(len(labels)), labels)
    right.set_ylabel("CPU-s per hour of audio")
    right.set_title("always-on cost")
    right.legend(fontsize=8)
    fig.suptitle(f"{report['device']['name']} / {report['profile']}" + (" (quick)" if report["quick"] else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def load(path: Path) -> dict:
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise EdgeError(f"{path}: not a readable bench report ({err}).") from None
    if report.get("schema") != SCHEMA or "totals" not in report:
        raise EdgeError(f"{path}: not an edge bench report (schema {report.get('schema')!r}).")
    return report


def compare_rows(reports: list[dict]) -> list[list[str]]:
    """One row per report: the figures that decide whether a device keeps up."""
    rows = []
    for r in reports:
        t, b = r["totals"], r.get("birdnet") or {}
        rows.append([r["device"]["name"], r["profile"], ",".join(p.replace("ExecutionProvider", "") for p in r["providers"]["ran"]),
                     _ms(r["stages"]["window"]["p95_ms"]), f"{t['real_time_factor']:.4f}", f"{t['cpu_s_per_audio_hour']:.1f}",
                     f"{b['cpu_s_per_audio_hour']:.1f}" if b.get("cpu_s_per_audio_hour") else "-",
                     f"{r['peak_rss_mb']:.0f}", f"{100 * (r['audio']['gated_share'] or 0):.0f}%",
                     ("meets" if r["verdict"]["ok"] else "misses") + ("" if r["verdict"]["representative"] else " (not this device)")])
    return rows


COMPARE_COLUMNS = ["device", "profile", "providers", "window p95 ms", "RTF", "CPU-s/audio h", "BirdNET CPU-s/h",
                   "peak RSS MB", "gated", "verdict"]
