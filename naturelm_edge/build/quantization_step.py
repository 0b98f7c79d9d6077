"""The quantization step: calibration on held-out species, int8 for the profile, and the accuracy report the
bundle carries (the student encoder's answers against the full encoder's, when the bundle has one)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from naturelm_edge.atomic import write_atomic
from naturelm_edge.audio import WindowSpec
from naturelm_edge.build.context import Build
from naturelm_edge.build.stamps import digest
from naturelm_edge.bundle import roles


def specs_of(b: Build) -> dict:
    """The precision of each quantized role, as the profile asks."""
    from naturelm_edge.quantization.quantize import QuantSpec

    profile = b.options.profile
    return {role: QuantSpec(profile.precision[role], profile.quant_target, profile.calibration)
            for role in (roles.ENCODER.name, roles.DECODER.name)}


def reference_encoder(b: Build) -> Path | None:
    """The full encoder the student's answers are compared with (None: the bundle carries the full one)."""
    return b.full_encoder / roles.ENCODER.file if b.with_student else None


def quantize_and_report(b: Build) -> dict:
    """Calibration and quantization for the profile, then the accuracy report; with a student encoder, also how
    its answers compare with the full encoder's. Returns what the step's time grows with."""
    from naturelm_edge.distill.species import SpeciesSplit
    from naturelm_edge.edge_runtime.decoder import OnnxDecoder
    from naturelm_edge.quantization.calibration import (
        ArrayReader,
        calibration_set,
        decoder_inputs,
        encoder_inputs,
    )
    from naturelm_edge.quantization.quantize import quantize
    from naturelm_edge.quantization.report import EvalSet, accuracy_report, format_table, run_encoder, session

    options, labels, tasks, specs, full_encoder = b.options, b.labels, b.tasks, specs_of(b), reference_encoder(b)
    split, encoder_dir, decoder_dir, quant_dir = SpeciesSplit.read(b.split), b.encoder_dir, b.decoder, b.quantized
    spec = WindowSpec(options.profile.audio.get("window_s", 10.0), options.profile.audio.get("hop_s", 5.0))
    by_role: dict[str, list[Path]] = {"held_out": [], "distill": []}
    for relative, species in sorted(labels.items()):
        role = split.role(species)
        if role in by_role and (options.audio / relative).is_file():
            by_role[role].append(options.audio / relative)
    held = by_role["held_out"]
    # with enough held-out recordings, calibrate on half and evaluate on the other half; with few, on all
    calib_files, eval_files = (held[::2], held[1::2]) if len(held) >= 8 else (held, held)
    where = f"{options.audio} (held-out species: {', '.join(split.held_out[:4])})"
    calibration = calibration_set(calib_files, spec, options.calibration_windows, where=where)
    quant_dir.mkdir(parents=True, exist_ok=True)
    cache = options.work / "calibration-ranges"
    encoder_info = quantize(encoder_dir / "encoder.onnx", quant_dir / "encoder.onnx", specs["encoder"],
                            ArrayReader(encoder_inputs(calibration)), cache, calibration.digest())
    questions = [t.question for t in tasks]
    decoder = OnnxDecoder(decoder_dir)
    tokens, _ = run_encoder(session(encoder_dir / "encoder.onnx"), calibration.features[:8])
    dec_inputs = decoder_inputs(decoder, tokens, questions[:2])
    decoder_info = quantize(decoder_dir / "decoder.onnx", quant_dir / "decoder.onnx", specs["decoder"],
                            ArrayReader(dec_inputs), cache, digest(calibration.digest(), "decoder", questions[:2]))
    teacher = cached_teacher_answers(options.work / "teacher-cache", options.audio, tasks)
    sets = [EvalSet("held_out", *teacher(calibration_set(eval_files, spec, 24, 1, where)))]
    if by_role["distill"]:
        sets.append(EvalSet("distill", *teacher(calibration_set(by_role["distill"][::4], spec, 24, 1, "distillation audio"))))
    report = accuracy_report(encoder_dir / "encoder.onnx", quant_dir / "encoder.onnx", decoder_dir,
                             quant_dir / "decoder.onnx", sets, questions, specs["encoder"].label(),
                             specs["decoder"].label(), full_encoder=full_encoder)
    report["calibration"] = {"files": [str(p) for p in calibration.files], "windows": int(len(calibration.features)),
                             "decoder_inputs": len(dec_inputs), "skipped": calibration.skipped,
                             "encoder": encoder_info, "decoder": decoder_info, "held_out_species": split.held_out,
                             "evaluation_files": [str(p) for p in eval_files]}
    report_path = quant_dir / "quantization_report.json"
    write_atomic(report_path, json.dumps(report, indent=2, default=_jsonable) + "\n")
    report_path.with_suffix(".md").write_text(format_table(report) + "\n")
    return {"calibration_windows": int(len(calibration.features)), "evaluation_windows": sum(len(s.features) for s in sets)}


def cached_teacher_answers(cache_dir: Path, audio: Path, tasks) -> Callable:  # noqa: ANN001 - list[Task]
    """A function from a calibration set to (its features, the teacher's cached answer per question for each
    window): what the student encoder's answers are judged against. Windows the teacher never answered get none."""
    from naturelm_edge.distill.cache import TeacherCache, cache_file_name, window_key

    question = {t.id: t.question for t in tasks}
    by_window: dict[str, dict[str, str]] = {}
    if (cache_dir / "records.jsonl").is_file():
        for record in TeacherCache(cache_dir).records():
            if record["task"] in question:
                by_window.setdefault(record["window"], {})[question[record["task"]]] = record["text"]

    def of(calibration) -> tuple[np.ndarray, list[dict[str, str]]]:  # noqa: ANN001 - CalibrationSet
        keys = [window_key(cache_file_name(Path(s), audio), start) for s, start in zip(calibration.sources, calibration.starts)]
        return calibration.features, [by_window.get(k, {}) for k in keys]

    return of


def _jsonable(value: object) -> object:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)
