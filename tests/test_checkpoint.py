"""Tiny checkpoints in the official layout, and clear errors for checkpoints that do not fit."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from naturelm_edge.errors import CheckpointError
from naturelm_edge.models import load
from naturelm_edge.models.tiny import bytes_to_unicode
from naturelm_edge.prompt import GenerationSettings


def _layout(path):
    with safe_open(str(path), "pt") as handle:
        return {k: (tuple(handle.get_slice(k).get_shape()), handle.get_slice(k).get_dtype()) for k in handle.keys()}


def _fixture_layout(fixtures_dir):
    layout = {}
    for line in (fixtures_dir / "tiny_naturelm" / "keys.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape, dtype = line.split("\t")
            layout[key] = (tuple(json.loads(shape)), {"bfloat16": "BF16", "int64": "I64"}[dtype])
    return layout


def test_tiny_checkpoint_has_the_official_layout(tiny_checkpoint, fixtures_dir):
    assert _layout(tiny_checkpoint / "model.safetensors") == _fixture_layout(fixtures_dir)
    ours = json.loads((tiny_checkpoint / "config.json").read_text())
    theirs = json.loads((fixtures_dir / "tiny_naturelm" / "config.json").read_text())
    assert ours == theirs
    ours_llama = json.loads((tiny_checkpoint / "llama" / "config.json").read_text())
    theirs_llama = json.loads((fixtures_dir / "tiny_naturelm" / "llama" / "config.json").read_text())
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "bos_token_id", "eos_token_id", "rope_scaling"):
        assert ours_llama[key] == theirs_llama[key], key


def test_tiny_tokenizer_has_llama3_byte_ids_and_specials(tiny_checkpoint, fixtures_dir):
    ours = json.loads((tiny_checkpoint / "llama" / "tokenizer.json").read_text())
    theirs = json.loads((fixtures_dir / "tiny_naturelm" / "llama" / "tokenizer.json").read_text())
    assert [ours["model"]["vocab"][c] for c in bytes_to_unicode()] == list(range(256))
    assert [(t["id"], t["content"]) for t in ours["added_tokens"]] == [
        (t["id"], t["content"]) for t in theirs["added_tokens"]
    ]


def test_tiny_checkpoint_round_trip(tiny_checkpoint):
    loaded = load(tiny_checkpoint, with_llm=True)
    stored = load_file(str(tiny_checkpoint / "model.safetensors"))
    state = loaded.model.state_dict()
    for key in ("beats.encoder.layers.1.fc1.weight", "audio_Qformer.bert.encoder.layer.0.crossattention.self.key.weight"):
        assert torch.equal(state[key], stored[key].float())
    lora = loaded.llm.model.state_dict()["base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"]
    assert torch.equal(lora, stored["llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"].float())
    assert lora.abs().sum() > 0
    embeds = loaded.llm.prompt_embeds(torch.zeros(1, 29, 64), "What is the common name?")
    out = loaded.llm.generate(embeds, GenerationSettings(max_new_tokens=4))
    assert 1 <= len(out[0].token_ids) <= 4


def test_different_seeds_give_different_weights(tmp_path, tiny_checkpoint):
    from naturelm_edge.models.tiny import write_tiny_checkpoint

    other = write_tiny_checkpoint(tmp_path / "other", seed=1)
    a = load_file(str(tiny_checkpoint / "model.safetensors"))["ln_audio.weight"]
    b = load_file(str(other / "model.safetensors"))["ln_audio.weight"]
    assert not torch.equal(a, b)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_and_unexpected_keys_are_named(tmp_path, tiny_checkpoint):
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    state = load_file(str(ckpt / "model.safetensors"))
    state.pop("beats.encoder.layers.0.fc1.weight")
    state["beats.encoder.layers.7.fc1.weight"] = torch.zeros(2)
    save_file(state, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError) as info:
        load(ckpt)
    message = str(info.value)
    assert "model.safetensors" in message
    assert "1 missing keys (beats.encoder.layers.0.fc1.weight)" in message
    assert "1 unexpected keys (beats.encoder.layers.7.fc1.weight)" in message
    assert "number of layers" in message


def test_config_of_another_preset(tmp_path, tiny_checkpoint):
    from naturelm_edge.models.config import preset

    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    config = preset("official").to_json_dict()
    config["beats_cfg"]["encoder_layers"] = 2  # same depth, other width: only shapes differ
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="other sizes than the config.*different presets"):
        load(ckpt)


def test_not_a_naturelm_file(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    from naturelm_edge.models.config import preset

    (ckpt / "config.json").write_text(json.dumps(preset("tiny").to_json_dict()))
    save_file({"encoder.weight": torch.zeros(3)}, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match="not a NatureLM-audio checkpoint"):
        load(ckpt)


def test_truncated_and_missing_safetensors(tmp_path, tiny_checkpoint):
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated or corrupt safetensors file"):
        load(ckpt)
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors is missing"):
        load(ckpt)


def test_bad_config_json(tmp_path, tiny_checkpoint):
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        load(ckpt)


def test_training_file_loads_with_weights_only(tmp_path, tiny_checkpoint):
    directory = load(tiny_checkpoint)
    state = load_file(str(tiny_checkpoint / "model.safetensors"))
    # a training file is NatureLM.state_dict(): it also holds the aliases safetensors leaves out
    state["beats.encoder.layers.1.self_attn.relative_attention_bias.weight"] = state[
        "beats.encoder.layers.0.self_attn.relative_attention_bias.weight"
    ]
    path = tmp_path / "train" / "checkpoint_best.pt"
    path.parent.mkdir()
    torch.save({"model": state, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match=r"training checkpoint must hold"):
        bad = tmp_path / "bad.pt"
        torch.save({"model": {"x": 1}}, bad)
        load(bad, preset_name="tiny")
    loaded = load(path, preset_name="tiny")
    fbank = torch.randn(1, 998, 128)
    with torch.no_grad():
        assert torch.equal(loaded.model.encode_audio(fbank), directory.model.encode_audio(fbank))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "hook": np.dtype("float32").__class__}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt: not a readable training checkpoint"):
        load(path, preset_name="tiny")


def test_unreachable_hub_id_says_how_to_provide_files(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CheckpointError, match="huggingface-cli download EarthSpeciesProject/NatureLM-audio"):
        load("EarthSpeciesProject/NatureLM-audio")


def test_missing_llama_base(tmp_path, tiny_checkpoint):
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    shutil.rmtree(ckpt / "llama")
    load(ckpt)  # the audio path needs no language model
    with pytest.raises(CheckpointError, match="Llama base 'llama/'"):
        load(ckpt, with_llm=True)
