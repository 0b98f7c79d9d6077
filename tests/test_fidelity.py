"""The reference checkpoint written by the original NatureLM code loads unchanged and computes the same."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from naturelm_edge.audio import fbank, prepare
from naturelm_edge.audio import load as load_audio
from naturelm_edge.models import load
from naturelm_edge.models.placement import Placement
from naturelm_edge.prompt import GenerationSettings

ATOL = 1e-4


@pytest.fixture(scope="module")
def reference_model(fixtures_dir):
    return load(fixtures_dir / "tiny_naturelm", with_llm=True)


@pytest.fixture(scope="module")
def reference_meta(fixtures_dir):
    return json.loads((fixtures_dir / "reference_io.json").read_text())


def test_audio_path_matches_every_intermediate(reference_model, reference_io):
    features = fbank(reference_io["wave16k"])
    assert np.abs(features - reference_io["fbank"]).max() < ATOL
    with torch.no_grad():
        out = reference_model.model.encode_audio_all(torch.from_numpy(features))
    for name in ("beats_out", "qformer_in_ln", "qformer_out", "audio_tokens"):
        got = getattr(out, name).numpy()
        assert got.shape == reference_io[name].shape, name
        assert np.abs(got - reference_io[name]).max() < ATOL, name


def test_raw_recordings_give_the_originals_waveform_and_fbank(reference_io, reference_meta, audio_dir):
    """Decoding and resampling the raw clips as the device does gives what NatureLM's processor gave
    (resampy kaiser_best over the whole file, then cut to 10 s), top mel bins included."""
    for i, name in enumerate(reference_meta["audio_files"]):
        wave = prepare(load_audio(audio_dir / name, 16_000, max_seconds=10), 160_000)
        assert np.abs(wave - reference_io["wave16k"][i]).max() < 1e-6, name
        features = fbank(wave)
        assert np.abs(features - reference_io["fbank"][i]).max() < 1e-3, name
        assert np.abs(features[:, -8:] - reference_io["fbank"][i][:, -8:]).max() < 1e-3, name


def test_prompt_embeddings_logits_and_merging(reference_model, reference_io, reference_meta):
    llm = reference_model.llm
    tokens = torch.from_numpy(reference_io["audio_tokens"])
    embeds = llm.prompt_embeds(tokens, reference_meta["query"])
    assert embeds.shape == reference_io["llm_inputs_embeds"].shape
    assert np.abs(embeds.detach().numpy() - reference_io["llm_inputs_embeds"]).max() < ATOL
    assert np.abs(llm.last_logits(embeds).numpy() - reference_io["logits"]).max() < ATOL
    llm.set_merging_factor(0.5)
    try:
        assert np.abs(llm.last_logits(embeds).numpy() - reference_io["logits_merge_alpha_0p5"]).max() < ATOL
    finally:
        llm.set_merging_factor(1.0)
    assert np.abs(llm.last_logits(embeds).numpy() - reference_io["logits"]).max() < ATOL


def test_prompt_token_ids(reference_model, reference_meta):
    from naturelm_edge.prompt import prompt_parts

    llm = reference_model.llm
    before, after = prompt_parts(reference_model.model.config.prompt_template, reference_meta["query"])
    assert [before, after] == reference_meta["prompt_parts"]
    ids = [llm.tokenizer(part, add_special_tokens=False).input_ids for part in (before, after)]
    assert ids == reference_meta["prompt_part_token_ids"]
    assert llm.bos_id == reference_meta["bos_token_id"]
    assert llm.tokenizer.pad_token_id == reference_meta["pad_token_added_id"]


def test_greedy_generation_is_identical(reference_model, reference_io, reference_meta):
    llm = reference_model.llm
    embeds = llm.prompt_embeds(torch.from_numpy(reference_io["audio_tokens"]), reference_meta["query"])
    greedy = GenerationSettings(num_beams=1, max_new_tokens=reference_meta["generate_cfg"]["max_new_tokens"])
    results = llm.generate(embeds, greedy)
    want = reference_io["greedy_ids"]
    for result, row, step_logits in zip(results, want, reference_io["greedy_step_logits"]):
        expected = [int(t) for t in row if t >= 0]
        assert result.token_ids == expected
        steps = len(expected)
        assert np.abs(result.step_logits[:steps].numpy() - step_logits[:steps]).max() < ATOL


def test_beam_answers_are_what_generate_gives_on_the_reference_embeddings(reference_model, reference_io,
                                                                          reference_meta):
    """The original hands its prompt embeddings to transformers' generate with configs/inference.yml's
    settings (2 beams, min_length 1, penalties 1, a stop criterion on token id 2); the teacher's default
    answers are what that call returns on the fixture's reference embeddings."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnTwo(StoppingCriteria):  # the original's StoppingCriteriaSub with stops=[2]
        def __call__(self, input_ids, scores, **kwargs):
            return torch.tensor([int(row[-1]) == 2 for row in input_ids])

    llm = reference_model.llm
    settings = GenerationSettings(max_new_tokens=12)
    assert (settings.num_beams, settings.min_length, settings.repetition_penalty) == (2, 1, 1.0)
    reference = torch.from_numpy(reference_io["llm_inputs_embeds"])
    with torch.no_grad():
        want = llm.model.generate(
            inputs_embeds=reference, attention_mask=torch.ones(reference.shape[:2], dtype=torch.long),
            max_new_tokens=12, num_beams=2, do_sample=False, min_length=1, repetition_penalty=1.0,
            length_penalty=1.0, stopping_criteria=StoppingCriteriaList([StopOnTwo()]),
            pad_token_id=llm.tokenizer.pad_token_id,
        ).tolist()
    embeds = llm.prompt_embeds(torch.from_numpy(reference_io["audio_tokens"]), reference_meta["query"])
    got = llm.generate(embeds, settings)
    greedy = llm.generate(embeds, GenerationSettings(num_beams=1, max_new_tokens=12))
    for answer, row in zip(got, want):
        cut = next((i for i, t in enumerate(row) if t in llm.stop_ids), len(row))
        assert answer.token_ids == row[:cut]
        assert answer.step_logits.shape == (len(answer.token_ids) + (answer.stop_id is not None), 385)
    assert any(b.token_ids != g.token_ids for b, g in zip(got, greedy))  # beams do choose other answers here


def test_bf16_placement_reads_the_llm_in_bf16_and_answers(fixtures_dir, reference_io, reference_meta):
    """bfloat16 as the original runs on a GPU: the Llama weights are bf16 (never a float32 copy), the audio
    path stays float32 under autocast, and the tokens stay within bf16 rounding of the float32 ones."""
    placement = Placement("cpu", "bfloat16")
    loaded = load(fixtures_dir / "tiny_naturelm", with_llm=True, placement=placement)
    assert {p.dtype for p in loaded.llm.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    with torch.no_grad(), placement.autocast():
        tokens = loaded.model.encode_audio(torch.from_numpy(reference_io["fbank"]))
        answers = loaded.llm.generate(loaded.llm.prompt_embeds(tokens, reference_meta["query"]),
                                      GenerationSettings(num_beams=1, max_new_tokens=8))
    scale = np.abs(reference_io["audio_tokens"]).max()
    assert np.abs(tokens.float().numpy() - reference_io["audio_tokens"]).max() < 0.02 * scale
    assert sum(a.token_ids == [int(t) for t in row] for a, row in zip(answers, reference_io["greedy_ids"])) >= 3
