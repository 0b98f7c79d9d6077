"""The full model as a real user runs it: device and dtype, the Llama base by hub id, config reading as the
original, batched teacher answers, and each bad setting refused in one sentence before any long work."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors import safe_open

from naturelm_edge.distill.collect import collect
from naturelm_edge.distill.tasks import TaskFileError, load_tasks
from naturelm_edge.errors import CheckpointError
from naturelm_edge.models import load
from naturelm_edge.models.config import NatureLMConfig, preset
from naturelm_edge.models.full import FullModelOptions, NatureLMTeacher
from naturelm_edge.models.placement import Placement, PlacementError
from naturelm_edge.prompt import GenerationSettings
from tests.helpers import events, run_cli, run_edge

FP32 = FullModelOptions(Placement("cpu", "float32"))


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_config_is_read_as_the_original_reads_it(tmp_path, tiny_checkpoint):
    """Unknown keys are kept (and written back), missing ones take the original's class defaults, and both
    are reported; a config no model can be built from is refused."""
    data = json.loads((tiny_checkpoint / "config.json").read_text())
    data["hub_mixin_version"] = "0.3"
    data["beats_cfg"]["layer_scale"] = 0.1
    del data["max_txt_len"], data["beats_cfg"]["dropout"]
    config = NatureLMConfig.from_json_dict(data)
    assert config.extra == {"hub_mixin_version": "0.3"} and config.beats_cfg.extra == {"layer_scale": 0.1}
    assert config.max_txt_len == 128 and config.beats_cfg.dropout == 0.1  # NatureLM.__init__ / BEATsConfig
    assert config.to_json_dict()["hub_mixin_version"] == "0.3"
    assert config.to_json_dict()["beats_cfg"]["layer_scale"] == 0.1
    notes = " ".join(config.notes())
    assert "hub_mixin_version" in notes and "layer_scale" in notes and "max_txt_len" in notes
    assert "beats_cfg.dropout" in notes
    del data["beats_cfg"]["input_patch_size"]
    with pytest.raises(CheckpointError, match="no input_patch_size"):
        NatureLMConfig.from_json_dict(data, "x/config.json")
    official = preset("official")
    assert (official.lora_rank, official.downsample_factor, official.beats_cfg.deep_norm) == (32, 8, True)


def test_export_report_names_the_settings_used(tmp_path, tiny_checkpoint, audio_dir):
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    data = json.loads((ckpt / "config.json").read_text())
    data["hub_mixin_version"] = "0.3"
    (ckpt / "config.json").write_text(json.dumps(data))
    clip = audio_dir / "opensoundscape" / "great_plains_toad.wav"
    result = run_cli("export", "encoder", str(ckpt), "--out", str(tmp_path / "enc"), "--verify-audio", str(clip))
    assert result.returncode == 0, result.stderr
    settings = json.loads((tmp_path / "enc" / "export_report.json").read_text())["source"]["settings"]
    assert settings.startswith("config.json (BEATs 2x192, LLM width 64)") and "hub_mixin_version" in settings
    assert "hub_mixin_version" in result.stdout + result.stderr


def test_llama_base_by_hub_id_from_the_cache(tmp_path, tiny_checkpoint, monkeypatch):
    """llama_path names a hub id, as the released config.json does: it is found in the Hugging Face cache
    with the hub offline; when it is not cached, the sentence names the id and the cache."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    snapshot = cache / "models--meta-llama--Tiny-Llama-3.1" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_checkpoint / "llama", snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    shutil.copy(tiny_checkpoint / "model.safetensors", ckpt)
    data = json.loads((tiny_checkpoint / "config.json").read_text())
    data["llama_path"] = "meta-llama/Tiny-Llama-3.1"
    (ckpt / "config.json").write_text(json.dumps(data))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    from_hub = load(ckpt, with_llm=True)
    local = load(tiny_checkpoint, with_llm=True)
    assert from_hub.llm.bos_id == local.llm.bos_id
    assert from_hub.llm.embed_tokens.weight.equal(local.llm.embed_tokens.weight)
    data["llama_path"] = "meta-llama/Not-Downloaded"
    (ckpt / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=rf"meta-llama/Not-Downloaded is not in the Hugging Face cache \({cache}"):
        load(ckpt, with_llm=True)


def test_wrong_llama_base_and_memory_are_refused_before_loading(tmp_path, tiny_checkpoint, monkeypatch):
    from naturelm_edge.models import placement

    llama = _copy(tiny_checkpoint / "llama", tmp_path / "wide-llama")
    config = json.loads((llama / "config.json").read_text())
    config["hidden_size"] = 128
    (llama / "config.json").write_text(json.dumps(config))
    (llama / "model.safetensors").write_bytes(b"never read")
    with pytest.raises(CheckpointError, match="128 wide but the checkpoint's audio projection feeds 64"):
        load(tiny_checkpoint, with_llm=True, llama_path=llama)
    monkeypatch.setattr(placement, "available_ram", lambda: 10 * 2**30)
    with pytest.raises(PlacementError, match=r"8\.03 B parameters in bfloat16 need 15\.0 GiB but cpu has 10\.0 GiB"):
        Placement("cpu", "bfloat16").check_memory(8_030_000_000, "x")
    with pytest.raises(PlacementError, match="or --dtype bfloat16"):
        Placement("cpu", "float32").check_memory(3_000_000_000, "x")
    Placement("cpu", "bfloat16").check_memory(3_000_000_000, "x")  # 5.6 GiB fits


def test_placements_the_machine_cannot_run_are_one_sentence(tiny_checkpoint):
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(PlacementError, match="--device cuda: this machine has no CUDA GPU"):
            Placement("cuda", "auto").check()
    with pytest.raises(PlacementError, match="--dtype 'float16': use one of auto, bfloat16, float32"):
        Placement("cpu", "float16").check()
    with pytest.raises(PlacementError, match="--device 'tpu'"):
        Placement("tpu").check()
    assert Placement("cpu", "auto").torch_dtype == torch.float32  # the original on a CPU
    result = run_cli("distill", "collect", str(tiny_checkpoint), "--audio", ".", "--out", "x", "--dtype", "half")
    assert result.returncode != 0 and "--dtype 'half': use one of auto, bfloat16, float32." in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_workers_that_would_not_fit(tiny_checkpoint, tmp_path):
    """`edge serve` loads one model per worker process: more workers than memory is one sentence, before
    uvicorn starts (no port is opened)."""
    result = run_cli("serve", str(tiny_checkpoint), "--workers", "100000", "--state-dir", str(tmp_path / "s"),
                     timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--workers 100000 (one model per worker process)" in result.stderr and "GiB free" in result.stderr


def test_batched_answers_equal_one_window_at_a_time(tmp_path, fixtures_dir, audio_dir):
    """N windows per forward pass give the answers one window at a time gives, beams included; the audio
    is encoded once per window for every task."""
    teacher = NatureLMTeacher(fixtures_dir / "tiny_naturelm", FP32)
    encoded = []
    original = teacher.audio_tokens
    teacher.audio_tokens = lambda fbank: encoded.append(len(fbank)) or original(fbank)
    tasks = [t.resolved(GenerationSettings(max_new_tokens=5)) for t in load_tasks()[:2]]
    files = [audio_dir / "opensoundscape" / "great_plains_toad.wav"]
    one = collect(teacher, audio_dir, tasks, tmp_path / "one", files=files, batch_size=1)
    many = collect(teacher, audio_dir, tasks, tmp_path / "many", files=files, batch_size=8)
    assert one.asked == many.asked == one.windows * len(tasks) and one.windows >= 3
    assert sum(encoded) == 2 * one.windows  # once per window per collection, not once per task
    by_key = [{r["key"]: r for r in map(json.loads, (tmp_path / d / "records.jsonl").read_text().splitlines())}
              for d in ("one", "many")]
    assert by_key[0].keys() == by_key[1].keys()
    for key, record in by_key[0].items():
        other = by_key[1][key]
        assert record["token_ids"] == other["token_ids"] and record["text"] == other["text"]
        assert np.allclose(record["logprobs"], other["logprobs"], atol=1e-3)
    assert all(t.num_beams == 2 for t in tasks)


def test_task_file_sets_generation_per_task(tmp_path):
    path = tmp_path / "tasks.toml"
    path.write_text('[[task]]\nid = "a"\nkind = "caption"\nquestion = "Caption the audio."\n'
                    '[[task]]\nid = "b"\nkind = "call_type"\nquestion = "Call or song?"\nmax_new_tokens = 8\n'
                    'num_beams = 1\n')
    a, b = (t.resolved(GenerationSettings().but(num_beams=3)) for t in load_tasks(path))
    assert (a.num_beams, a.max_new_tokens) == (3, 300)  # the command's beams, the original's length
    assert (b.num_beams, b.max_new_tokens) == (1, 8)  # the task file's own
    path.write_text('[[task]]\nid = "a"\nkind = "caption"\nquestion = "Caption."\nnum_beams = 0\n')
    with pytest.raises(TaskFileError, match="task 'a': num_beams must be a whole number >= 1"):
        load_tasks(path)


def test_edge_build_end_to_end_from_the_official_shape(tmp_path, subset_audio):
    """`edge build` from an official-layout checkpoint (Llama-3.1's vocabulary and special ids, 32 query heads
    over 8 KV heads, LoRA r 32, bf16 safetensors, the base apart from model.safetensors) at a width CI can
    run, with the teacher in bfloat16: the bundle's student speaks in the real ids and edge-run answers."""
    ckpt = tmp_path / "narrow"
    written = run_cli("checkpoint", "official-shape", str(ckpt), "--narrow", "--llm-layers", "1")
    assert written.returncode == 0, written.stderr
    llama = json.loads((ckpt / "llama" / "config.json").read_text())
    assert (llama["vocab_size"], llama["num_attention_heads"], llama["num_key_value_heads"]) == (128256, 32, 8)
    assert llama["bos_token_id"] == 128000 and 128009 in llama["eos_token_id"]
    with safe_open(str(ckpt / "model.safetensors"), "pt") as handle:
        keys = list(handle.keys())
    assert not [k for k in keys if ".base_layer." in k]  # the Llama base is not copied into the NatureLM file
    assert any(k.endswith("q_proj.lora_A.default.weight") for k in keys)
    tasks = tmp_path / "tasks.toml"
    tasks.write_text('[[task]]\nid = "common_name"\nkind = "common_name"\n'
                     'question = "What is the common name for the focal species in the audio?"\nmax_new_tokens = 4\n')
    bundle = tmp_path / "bundle"
    built = run_cli("build", str(ckpt), "--audio", str(subset_audio), "--out", str(bundle), "--profile", "x86-cpu",
                    "--encoder", "full", "--tasks", str(tasks), "--epochs", "1", "--calibration-windows", "4", "--dtype", "bfloat16",
                    "--student-layers", "1", "--student-hidden", "128", "--student-heads", "4")  # the teacher's shape is the point
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    decoder = json.loads((bundle / "decoder.json").read_text())
    assert decoder["bos_id"] == 128000 and 128009 in decoder["stop_ids"]
    assert decoder["tasks"][0]["num_beams"] == 2  # the teacher answered with the original's beams
    report = json.loads((bundle / "reports" / "encoder_export.json").read_text())
    assert report["source"]["settings"].startswith("config.json (BEATs 2x192, LLM width 256)")
    out = tmp_path / "out"
    ran = run_edge("--bundle", str(bundle), str(subset_audio / "opensoundscape" / "great_plains_toad.wav"),
                   "--no-gate", "-q", "--out", str(out))
    assert ran.returncode == 0, ran.stderr
    assert events(out) and all(e["answer"] for e in events(out))


def test_the_8b_load_holds_each_weight_once(tmp_path):
    """At Llama-3.1's vocabulary: the stored NatureLM embeddings are taken as they are, the head grows by the
    [PAD] row from the base's own rows, and beam search never copies the (vocab x width) head per beam (what
    kept the 8B teacher at 19 GiB; `benchmarks/results/official-scale/` has the peak now)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from naturelm_edge.models.checkpoint import EMBED_KEY, read_tensors
    from naturelm_edge.models.llm import _base_tensor

    ckpt = tmp_path / "narrow"
    assert run_cli("checkpoint", "official-shape", str(ckpt), "--narrow", "--llm-layers", "1").returncode == 0
    llm = load(ckpt, with_llm=True, placement=Placement("cpu", "bfloat16")).model.language_model
    stored = read_tensors(ckpt / "model.safetensors", [EMBED_KEY])[EMBED_KEY]
    head, base_head = llm.model.get_output_embeddings().weight, _base_tensor(ckpt / "llama", "lm_head.weight")
    assert torch.equal(llm.embed_tokens.weight, stored) and head.shape[0] == stored.shape[0] == base_head.shape[0] + 1
    assert torch.equal(head[:-1], base_head) and head[-1].float().std() > 0  # the [PAD] row drawn as transformers does
    embeds = llm.prompt_embeds(torch.randn(1, 29, head.shape[1]), "Caption the audio.")
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        llm.generate(embeds, GenerationSettings().but(num_beams=2, max_new_tokens=3))
    largest = max(event.cpu_memory_usage for event in prof.events())
    assert largest < head.numel() * head.element_size(), f"one allocation of {largest / 1e6:.0f} MB"
