"""The export stage as one table of steps: name, when it applies, the digest of the inputs that make it stale,
what it writes, and the function that runs it (returning what its time grows with).

Adding a step (a teacher of another kind, a cluster route for teacher answers) is one entry here.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from naturelm_edge.build.context import Build
from naturelm_edge.build.stamps import digest, file_digest, measured
from naturelm_edge.bundle import roles


@dataclass(frozen=True)
class Step:
    name: str
    key: Callable[[Build], str]  # digest of every input: a different one makes the step stale
    outputs: Callable[[Build], list[Path]]  # what it writes; a missing one makes it stale too
    run: Callable[[Build], dict | None]  # does the work; returns the sizes its time grows with
    applies: Callable[[Build], bool] = lambda state: True


def run_step(b: Build, step: Step) -> None:
    """``step`` unless its inputs are unchanged; its cost (and what that grows with) into the stamps."""
    key, outputs = step.key(b), step.outputs(b)
    if b.stamps.fresh(step.name, key, outputs):
        b.summary["stages"][step.name] = "unchanged"
        b.progress.note(f"{step.name}: inputs unchanged, skipped")
        return
    with b.progress.step(step.name), measured() as cost:
        sizes = step.run(b) or {}
    cost["grows_with"] = sizes
    b.stamps.mark(step.name, key, cost)
    b.summary["stages"][step.name] = "built"
    b.summary["costs"][step.name] = cost


def _export_encoder(b: Build) -> dict:
    from naturelm_edge.export.encoder import export_encoder
    from naturelm_edge.models import load

    loaded = load(b.options.checkpoint)
    verify = b.files[:: max(1, len(b.files) // 3)][:3]
    export_encoder(loaded.model, b.full_encoder, verify, {"checkpoint": str(b.options.checkpoint),
                                                          "sha256": b.checkpoint_sha,
                                                          "settings": loaded.source.describe()})
    return {"verification_recordings": len(verify)}


def _teacher_key(b: Build) -> str:
    from naturelm_edge.distill.tasks import tasks_digest

    return digest(b.checkpoint_sha, tasks_digest(b.tasks), b.audio_key, b.full_model.placement.describe())


def _teacher_answers(b: Build) -> dict:
    """Collection resumes by itself; the stamp only saves reopening the teacher."""
    from naturelm_edge.distill.collect import TeacherSource, collect

    done = collect(TeacherSource(b.options.checkpoint, b.full_model), b.options.audio, b.tasks, b.cache,
                   labels_file=b.options.labels_file, progress=b.progress, ray=b.options.ray, workers=b.options.workers)
    return {"recordings": done.files, "windows": done.windows, "tasks": len(b.tasks), "answers_asked": done.asked,
            "answers_reused": done.reused}


def _split(b: Build) -> dict:
    from naturelm_edge.distill.species import species_from_answers, split_species

    species = set(b.labels.values()) or species_from_answers(b.cache)
    split = split_species(species, b.options.held_out_fraction, b.options.seed,
                          source=str(b.options.labels_file or b.options.audio))
    split.write(b.split)
    return {"species": len(species)}


def _decoder_config(b: Build, tuning: bool = False):  # noqa: ANN202 - distill.train.TrainConfig
    """The student decoder's training; ``tuning``: the shorter, gentler pass on the student encoder's tokens."""
    from naturelm_edge.distill.train import TrainConfig

    o = b.options
    shape = {"seed": o.seed, "layers": o.student_layers, "hidden": o.student_hidden, "heads": o.student_heads,
             "patience": o.patience}
    if tuning:  # a quarter of the first training's epochs, an eighth of its least steps, a third of its rate
        return TrainConfig(epochs=max(1, o.epochs // 4), lr=3e-4, min_steps=TrainConfig.min_steps // 8, **shape)
    return TrainConfig(epochs=o.epochs, **shape)


def _trained(summary: dict) -> dict:
    judged = summary["epoch_losses"]
    return {"examples": summary["examples"], "judged_examples": summary["judged_examples"],
            "best_judged_loss": round(min(judged), 4) if judged else None, "epochs_at_most": summary["epochs_scheduled"],
            "epochs": summary["epochs"], "steps": summary["steps"], "precision": summary["precision"],
            "stopped": summary["stopped_because"]}


def _distil_decoder(b: Build) -> dict:
    from naturelm_edge.distill.train import train

    shutil.rmtree(b.student, ignore_errors=True)
    config = _decoder_config(b)
    return _trained(train(b.cache, b.student, config, b.split, progress=b.progress))


def _encoder_config(b: Build):  # noqa: ANN202 - distill.encoder.EncoderStudentConfig
    from naturelm_edge.distill.encoder import EncoderStudentConfig

    o = b.options
    return EncoderStudentConfig(arch=o.encoder_arch, epochs=o.encoder_epochs or EncoderStudentConfig.epochs,
                                views=o.encoder_views, seed=o.seed,
                                patience=o.patience)


def _encoder_key(b: Build) -> str:
    from naturelm_edge.distill.encoder import BODY, GRAPH, LOSS

    return digest(b.audio_key, asdict(_encoder_config(b)), LOSS, GRAPH, BODY, file_digest(b.split))


def _student_encoder(b: Build) -> dict:
    """`edge distill encoder` on the build's audio; held-out species only judge (every fifth recording when
    there are no labels)."""
    from naturelm_edge.distill.encoder import drop_stale_state, every_fifth, teacher_path
    from naturelm_edge.distill.species import SpeciesSplit
    from naturelm_edge.export.student_encoder import distill_encoder

    config, split, labels = _encoder_config(b), SpeciesSplit.read(b.split), b.labels
    teacher = teacher_path(b.options.checkpoint)
    drop_stale_state(b.student_encoder, config, teacher)
    report = distill_encoder(teacher, b.options.audio, b.student_encoder, config,
                             lambda relative, index: split.role(labels[relative]) == "held_out" if labels.get(relative)
                             else every_fifth(relative, index), progress=b.progress)
    training = report["training"]
    return {"recordings": len(b.files), "views": config.views, "epochs_at_most": config.epochs,
            "epochs": training["epochs"], "best_epoch": training["best_epoch"], "stopped": training["stopped_because"]}


def _tuning_key(b: Build) -> str:
    from naturelm_edge.distill.encoder import ONNX_FILE
    from naturelm_edge.export.student_encoder import TEACHER_COPY

    return digest(file_digest(b.student / "model.safetensors"), file_digest(b.student_encoder / ONNX_FILE),
                  asdict(_decoder_config(b, tuning=True)), TEACHER_COPY)


def _tune_on_student_tokens(b: Build) -> dict:
    """The distilled decoder fine-tuned on the student encoder's tokens and the full encoder's of the same
    windows (the teacher's answers as targets, each once through one of them), so it answers the same whichever
    encoder feeds it."""
    from naturelm_edge.distill.encoder import ONNX_FILE
    from naturelm_edge.distill.train import train
    from naturelm_edge.export.student_encoder import student_token_cache

    student_token_cache(b.cache, b.options.audio, b.student_encoder / ONNX_FILE, b.student_tokens)
    shutil.rmtree(b.tuned, ignore_errors=True)
    config = _decoder_config(b, tuning=True)
    summary = train(b.student_tokens, b.tuned, config, b.split, progress=b.progress, init=b.student)
    return {**_trained(summary), "token_sets": 2}


def _export_decoder(b: Build) -> dict:
    from naturelm_edge.export.decoder import export_decoder

    export_decoder(b.trained_decoder, b.decoder, b.decoder_cache)
    return {}


def _quantization_key(b: Build) -> str:
    from naturelm_edge.build.quantization_step import reference_encoder, specs_of

    reference = reference_encoder(b)
    return digest(file_digest(b.encoder_dir / roles.ENCODER.file), reference and file_digest(reference),
                  file_digest(b.decoder / roles.DECODER.file), {r: asdict(s) for r, s in specs_of(b).items()},
                  file_digest(b.split), b.options.calibration_windows)


def _quantize(b: Build) -> dict:
    from naturelm_edge.build.quantization_step import quantize_and_report

    return quantize_and_report(b)


def _student(b: Build) -> bool:
    return b.with_student


STEPS: tuple[Step, ...] = (
    Step("encoder export", lambda b: digest(b.checkpoint_sha, "encoder-v1"),
         lambda b: [b.full_encoder / roles.ENCODER.file], _export_encoder),
    Step("teacher answers", _teacher_key, lambda b: [b.cache / "records.jsonl"], _teacher_answers),
    Step("species split", lambda b: digest(sorted(b.labels.items()), b.options.held_out_fraction, b.options.seed,
                                           b.audio_key), lambda b: [b.split], _split),
    Step("distillation", lambda b: digest(file_digest(b.cache / "records.jsonl"), file_digest(b.split),
                                          asdict(_decoder_config(b))),
         lambda b: [b.student / "model.safetensors"], _distil_decoder),
    Step("student encoder", _encoder_key, lambda b: [b.student_encoder / roles.ENCODER.file], _student_encoder,
         _student),
    Step("decoder on student tokens", _tuning_key,
         lambda b: [b.tuned / "model.safetensors", b.student_tokens / "records.jsonl"], _tune_on_student_tokens,
         _student),
    Step("decoder export", lambda b: digest(file_digest(b.trained_decoder / "model.safetensors")),
         lambda b: [b.decoder / roles.DECODER.file], _export_decoder),
    Step("quantization", _quantization_key,
         lambda b: [b.quantized / roles.ENCODER.file, b.quantized / roles.DECODER.file,
                    b.quantized / "quantization_report.json"], _quantize),
)
