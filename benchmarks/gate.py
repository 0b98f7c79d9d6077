"""Gate quality on hand-drawn annotations nobody here made, and on call-free audio.

Run: ``python -m benchmarks.gate [--out benchmarks/results/gate]``. Recall: an annotated call reaches the
models when some window that contains it passes the gate (whombat's 433 bat-call boxes, read with time
expansion 10 as bat workers do; the opensoundscape LOCA clips, each with a flight call at 0.2-0.5 s).
Skipped: the share of call-free windows the gate keeps from the models (birdvoxdetect's background and
negative clips, AudioMoth digital silence). Targets: recall >= 95 %, skipped >= 60 %.

The trade-off: the same measures for a range of gate margins, beside the share of the shared soundscapes'
windows that reach the models and what that costs per hour of audio with the official-size int8 encoder
(per-window CPU from the latest ``edge bench`` run in benchmarks/results/<device>/x86-cpu/).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from benchmarks.common import pyplot
from testbed.screening import evaluate, window_outcomes

MARGINS_DB = (6.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0)


def soundscape_pass_share(audio: Path, settings) -> float:  # noqa: ANN001 - GateSettings
    """Share of the windows of the shared soundscapes and backgrounds (LABELS.csv kinds) that pass the gate,
    each recording with a noise floor of its own, as edge-run reads a card."""
    rows = [r for r in csv.DictReader((audio / "LABELS.csv").open()) if r["kind"] in ("soundscape", "background")]
    passed = [p for r in rows for _, _, p, _ in window_outcomes(audio / r["path"], 1.0, settings)]
    return sum(passed) / len(passed)


def per_window_costs(results_root: Path) -> dict | None:
    """CPU seconds per window of the always-on stages and of the models, from the official-size bench run."""
    runs = sorted(results_root.glob("*/x86-cpu/official-int8-encoder.json"))
    if not runs:
        return None
    report = json.loads(runs[-1].read_text())
    stages, windows = report["stages"], report["audio"]["windows"]
    models = sum(stages[s]["cpu_s"] for s in ("encoder", "decoder")) / max(1, stages["encoder"]["calls"])
    always = sum(stages[s]["cpu_s"] for s in ("decode", "fbank", "gate", "store")) / windows
    return {"models_cpu_s": models, "always_cpu_s": always, "windows_per_audio_hour": windows / report["audio"]["seconds"] * 3600,
            "birdnet_cpu_s_per_audio_hour": (report.get("birdnet") or {}).get("cpu_s_per_audio_hour"), "source": str(runs[-1].relative_to(results_root.parent.parent))}


def trade_off(audio: Path, results_root: Path) -> dict:
    from naturelm_edge.edge_runtime.gate import GateSettings

    costs = per_window_costs(results_root)
    rows = []
    for margin in MARGINS_DB:
        settings = GateSettings(margin_db=margin)
        result = evaluate(audio, settings)
        share = soundscape_pass_share(audio, settings)
        row = {"margin_db": margin, "bat_recall": result["whombat"]["recall"], "loca_recall": result["opensoundscape_loca"]["recall"],
               "call_free_skipped": result["call_free"]["skipped"], "soundscape_windows_passed": share}
        if costs:
            row["official_cpu_s_per_audio_hour"] = costs["windows_per_audio_hour"] * (costs["always_cpu_s"] + share * costs["models_cpu_s"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"rows": rows, "costs": costs}


def main() -> None:
    from naturelm_edge.sample_data import shared_audio_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gate")
    args = parser.parse_args()
    audio = shared_audio_dir()
    if audio is None:
        raise SystemExit("no recordings: set NATURELM_EDGE_AUDIO")
    result = evaluate(audio)
    result["trade_off"] = trade_off(audio, Path(__file__).parent / "results")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gate.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Gate quality", "", "| dataset | measure | value | target |", "|---|---|---|---|",
             f"| whombat bat calls ({result['whombat']['calls']}, time expansion 10) | recall | {result['whombat']['recall']:.1%} | >= 95 % |",
             f"| opensoundscape LOCA flight calls ({result['opensoundscape_loca']['calls']}) | recall | {result['opensoundscape_loca']['recall']:.1%} | >= 95 % |",
             f"| call-free windows ({result['call_free']['windows']}) | skipped | {result['call_free']['skipped']:.1%} | >= 60 % |", ""]
    costs = result["trade_off"]["costs"]
    lines += ["## Cost against calls kept, by gate margin", "",
              "Official-size int8 encoder cost per audio hour = windows per hour x (always-on stages + share passed x "
              "encoder and decoder), per-window CPU from " + (f"`{costs['source']}`" if costs else "(no official bench run)")
              + (f"; BirdNET in that run: {costs['birdnet_cpu_s_per_audio_hour']:.1f} CPU-s per audio hour." if costs and costs["birdnet_cpu_s_per_audio_hour"] else "."),
              "", "| margin dB | bat calls kept | LOCA calls kept | call-free skipped | soundscape windows to the models | official-size CPU-s per audio hour |",
              "|---:|---:|---:|---:|---:|---:|"]
    for r in result["trade_off"]["rows"]:
        cost = r.get("official_cpu_s_per_audio_hour")
        lines.append(f"| {r['margin_db']:g} | {r['bat_recall']:.1%} | {r['loca_recall']:.1%} | {r['call_free_skipped']:.1%} | "
                     f"{r['soundscape_windows_passed']:.1%} | {'-' if cost is None else f'{cost:.0f}'} |")
    lines.append("")
    (args.out / "gate.md").write_text("\n".join(lines))
    plt = pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6, 2.8))
        names = ["bat calls recall", "LOCA calls recall", "call-free skipped"]
        values = [result["whombat"]["recall"], result["opensoundscape_loca"]["recall"], result["call_free"]["skipped"]]
        ax.barh(names, values, color=["C0", "C0", "C2"])
        ax.axvline(0.95, color="C3", linestyle="--", label="recall target")
        ax.axvline(0.60, color="C1", linestyle=":", label="skip target")
        ax.set_xlim(0, 1.05)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.out / "gate.png", dpi=120)
    print((args.out / "gate.md").read_text())


if __name__ == "__main__":
    main()
