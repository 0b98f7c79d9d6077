"""Device profiles: the shipped set validates, every schema error is named, devices are recognised."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from naturelm_edge.cli import app
from naturelm_edge.device_profiles import DeviceFacts, ProfileError, all_profiles, detect, get, load_file

SAMPLES = Path(__file__).parent / "data" / "devices"
EXPECTED = {"jetson-agx-orin-64gb", "jetson-orin-nx-16gb", "jetson-orin-nano-8gb", "jetson-xavier-nx",
            "raspberry-pi-5", "x86-cpu", "cuda-server"}


def test_shipped_profiles_validate():
    profiles = all_profiles()
    assert set(profiles) == EXPECTED
    for profile in profiles.values():
        assert profile.providers[-1].name == "CPUExecutionProvider"  # always a fallback
        assert profile.precision["encoder"] and profile.precision["decoder"]
    trt = get("jetson-orin-nano-8gb").providers[0]
    assert trt.name == "TensorrtExecutionProvider" and trt.options["trt_engine_cache_enable"] is True


def _write(tmp_path, text, name="custom.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


BASE = """name = "custom"
[[providers]]
name = "CPUExecutionProvider"
[precision]
encoder = "int8-static"
decoder = "int4"
"""


@pytest.mark.parametrize("extra, message", [
    ("colour = 'red'\n", r"unknown key 'colour'"),
    ("[runtime]\nintra_op_threads = 'four'\n", r"'runtime\.intra_op_threads' must be an integer >= 1, got 'four'"),
    ("[runtime]\nintra_op_threads = 0\n", r"'runtime\.intra_op_threads' must be an integer >= 1, got 0"),
    ("[runtime]\nspin = true\n", r"unknown key 'runtime\.spin'"),
    ("[escalation]\nconfidence_threshold = 1.5\n", r"between 0 and 1, got 1\.5"),
    ("[runtime]\nmemory_budget_mb = true\n", r"'runtime\.memory_budget_mb' must be a number > 0, got True"),
    ("[audio]\nwindow_s = 3.0\nhop_s = 5.0\n", r"hop_s.*longer than 'audio\.window_s'"),
])
def test_schema_errors_name_file_key_and_allowed(tmp_path, extra, message):
    path = _write(tmp_path, BASE + extra if extra.startswith("[") else extra + BASE)  # top-level keys go first
    with pytest.raises(ProfileError, match=message) as info:
        load_file(path)
    assert str(path) in str(info.value)


def test_precision_and_provider_errors(tmp_path):
    with pytest.raises(ProfileError, match=r"'precision\.decoder' must be one of fp32, fp16, int8-static, int8-dynamic, int4"):
        load_file(_write(tmp_path, BASE.replace('"int4"', '"int3"')))
    with pytest.raises(ProfileError, match=r"providers\[0\]\.name 'TPU'"):
        load_file(_write(tmp_path, BASE.replace("CPUExecutionProvider", "TPU")))
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_file(_write(tmp_path, "name = "))
    with pytest.raises(ProfileError, match="required key 'precision'"):
        load_file(_write(tmp_path, 'name = "x"\n[[providers]]\nname = "CPUExecutionProvider"\n'))


@pytest.mark.parametrize("sample, expected", [
    ("agx-orin", "jetson-agx-orin-64gb"), ("orin-nx", "jetson-orin-nx-16gb"), ("orin-nano", "jetson-orin-nano-8gb"),
    ("xavier-nx", "jetson-xavier-nx"), ("raspberry-pi-5", "raspberry-pi-5"),
])
def test_detects_recorded_devices(tmp_path, sample, expected):
    root = tmp_path / "root"
    (root / "proc" / "device-tree").mkdir(parents=True)
    (root / "etc").mkdir()
    shutil.copy(SAMPLES / f"{sample}.model", root / "proc" / "device-tree" / "model")
    if (SAMPLES / f"{sample}.tegra").exists():
        shutil.copy(SAMPLES / f"{sample}.tegra", root / "etc" / "nv_tegra_release")
    facts = DeviceFacts.read(root, machine="aarch64")
    assert detect(facts).name == expected


def test_x86_and_gpu_servers_and_fallback():
    assert detect(DeviceFacts(machine="x86_64", nvidia_smi=False)).name == "x86-cpu"
    assert detect(DeviceFacts(machine="x86_64", nvidia_smi=True)).name == "cuda-server"
    assert detect(DeviceFacts(machine="riscv64")).name == "x86-cpu"  # nothing matches: the generic profile
    assert detect().name in EXPECTED


def test_user_profiles_folder_overrides_and_adds(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    _write(folder, BASE.replace('"custom"', '"field-box"'), "field-box.toml")
    assert get("field-box", folder).precision["decoder"] == "int4"
    monkeypatch.setenv("NATURELM_EDGE_PROFILES", str(folder))
    assert "field-box" in all_profiles()
    result = CliRunner().invoke(app, ["profiles", "list"])
    assert result.exit_code == 0 and "field-box" in result.output


def test_cli_validate_and_show(tmp_path):
    runner = CliRunner()
    good = runner.invoke(app, ["profiles", "validate", str(_write(tmp_path, BASE))])
    assert good.exit_code == 0 and "valid profile 'custom'" in good.output
    bad = runner.invoke(app, ["profiles", "validate", str(_write(tmp_path, "x = 1\n" + BASE, "bad.toml"))])
    assert bad.exit_code != 0 and "unknown key 'x'" in bad.output
    shown = runner.invoke(app, ["profiles", "show", "raspberry-pi-5"])
    assert shown.exit_code == 0 and 'target = "arm"' in shown.output


def test_low_memory_runtime_gives_the_same_audio_tokens(bundle):
    """`low_memory = true` turns off weight prepacking, the memory pattern and the arena; answers must not change."""
    import dataclasses

    import numpy as np
    import onnxruntime as ort

    from naturelm_edge.audio import fbank
    from naturelm_edge.bundle.open import load_bundle
    from naturelm_edge.edge_runtime.engine import encode, session_options
    from naturelm_edge.sample_data import synthetic_soundscape

    plain = get("x86-cpu")
    lean = dataclasses.replace(plain, runtime={**plain.runtime, "low_memory": True})
    options = session_options(lean)
    assert options.get_session_config_entry("session.disable_prepacking") == "1" and not options.enable_mem_pattern
    assert not options.enable_cpu_mem_arena
    assert session_options(plain).enable_mem_pattern and session_options(plain).enable_cpu_mem_arena
    encoder = load_bundle(bundle).encoder
    features = fbank(synthetic_soundscape(10.0))
    tokens = [encode(ort.InferenceSession(str(encoder), session_options(p), providers=["CPUExecutionProvider"]), features)
              for p in (plain, lean)]
    np.testing.assert_allclose(tokens[0], tokens[1], rtol=1e-5, atol=1e-5)
