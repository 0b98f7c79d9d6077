"""``edge build``: the whole export stage, from a NatureLM checkpoint to a verified (signed) bundle.

Stages run in order and each is skipped when the hash of its inputs matches the last run (stamps in
``WORK/stamps``): encoder export, teacher answers, species split, student training, decoder export,
calibration and quantization for the profile, accuracy report, bundle. The bundle is assembled in a
staging folder and renamed into place, so a failed build leaves the previous bundle untouched.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from naturelm_edge.atomic import write_atomic
from naturelm_edge.audio import DEFAULT_SETTINGS, WindowSpec
from naturelm_edge.audio.files import list_audio
from naturelm_edge.bundle import roles
from naturelm_edge.device_profiles import Profile
from naturelm_edge.errors import EdgeError
from naturelm_edge.hashing import sha256_file
from naturelm_edge.progress import Progress


@dataclass
class BuildOptions:
    checkpoint: str
    audio: Path
    profile: Profile
    out: Path
    work: Path
    tasks_file: Path | None = None
    labels_file: Path | None = None
    epochs: int = 40
    student_layers: int = 4
    student_hidden: int = 384
    student_heads: int = 6
    held_out_fraction: float = 0.25
    seed: int = 0
    calibration_windows: int = 32
    min_agreement: float | None = None
    sign_key: Path | None = None
    tar: bool = False
    full_model: Any = None  # models.full.FullModelOptions (torch is imported only when the teacher runs)
    encoder: str | None = None  # "full" or "student"; None: what the profile asks for
    encoder_arch: str = "mobilenet-s"
    encoder_epochs: int = 30
    encoder_views: int = 3

    @property
    def encoder_kind(self) -> str:
        return self.encoder or self.profile.encoder


class Stamps:
    """Input digests of finished stages; a stage re-runs only when its inputs changed."""

    def __init__(self, work: Path) -> None:
        self.root = work / "stamps"
        self.root.mkdir(parents=True, exist_ok=True)

    def fresh(self, stage: str, digest: str, outputs: list[Path]) -> bool:
        path = self.root / f"{stage}.json"
        return path.is_file() and json.loads(path.read_text()).get("digest") == digest and all(p.exists() for p in outputs)

    def mark(self, stage: str, digest: str) -> None:
        (self.root / f"{stage}.json").write_text(json.dumps({"digest": digest}))


def digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def file_digest(path: Path) -> str:
    return sha256_file(path)[:24]


def audio_digest(files: list[Path]) -> str:
    return digest([(str(p), p.stat().st_size, int(p.stat().st_mtime)) for p in files])


def build(options: BuildOptions, progress: Progress | None = None) -> dict:
    """Run every stage; return a summary with the bundle path and the quantization report."""
    builder = Builder(options, progress or Progress(quiet=True))
    full_encoder = encoder_dir = builder.encoder()
    cache_dir = builder.teacher_answers()
    split_path = builder.species_split(cache_dir)
    student_dir = builder.student(cache_dir, split_path)
    if options.encoder_kind == "student":  # the decoder learns the student encoder's tokens before export
        encoder_dir = builder.student_encoder(split_path)
        student_dir, cache_dir = builder.student_on_student_tokens(student_dir, cache_dir, encoder_dir, split_path)
    decoder_dir = builder.decoder(student_dir, cache_dir)
    quant_dir, specs, report = builder.quantized(encoder_dir, decoder_dir, split_path, full_encoder)
    builder.bundle(encoder_dir, decoder_dir, quant_dir, specs, report, split_path)
    return builder.summary


class Builder:
    """The export stage's steps over one work folder; each step is skipped when its inputs are unchanged."""

    def __init__(self, options: BuildOptions, progress: Progress) -> None:
        from naturelm_edge.distill.species import labels_for
        from naturelm_edge.distill.tasks import load_tasks
        from naturelm_edge.models import resolve
        from naturelm_edge.models.full import FullModelOptions

        self.options, self.progress = options, progress
        self.full_model = options.full_model or FullModelOptions()
        self.work = options.work
        self.work.mkdir(parents=True, exist_ok=True)
        self.stamps = Stamps(self.work)
        self.checkpoint_sha = resolve(options.checkpoint).sha256()
        self.tasks = [task.resolved(self.full_model.generation) for task in load_tasks(options.tasks_file)]
        self.files = list_audio(options.audio)
        if not self.files:
            raise EdgeError(f"{options.audio}: no recordings to build from.")
        self.audio_key = audio_digest(self.files)
        self.labels = labels_for(options.audio, options.labels_file)
        self.summary: dict = {"stages": {}}

    def stage(self, name: str, key: str, outputs: list[Path], run: Callable[[], None]) -> None:
        if self.stamps.fresh(name, key, outputs):
            self.summary["stages"][name] = "unchanged"
            self.progress.note(f"{name}: inputs unchanged, skipped")
            return
        with self.progress.step(name):
            run()
        self.stamps.mark(name, key)
        self.summary["stages"][name] = "built"

    def encoder(self) -> Path:
        encoder_dir = self.work / "encoder"

        def run() -> None:
            from naturelm_edge.export.encoder import export_encoder
            from naturelm_edge.models import load

            loaded = load(self.options.checkpoint)
            export_encoder(loaded.model, encoder_dir, self.files[:: max(1, len(self.files) // 3)][:3],
                           {"checkpoint": str(self.options.checkpoint), "sha256": self.checkpoint_sha,
                            "settings": loaded.source.describe()})

        self.stage("encoder export", digest(self.checkpoint_sha, "encoder-v1"), [encoder_dir / roles.ENCODER.file], run)
        return encoder_dir

    def teacher_answers(self) -> Path:
        """Collection resumes by itself; the stamp only saves reopening the teacher."""
        from naturelm_edge.distill.tasks import tasks_digest

        cache_dir = self.work / "teacher-cache"

        def run() -> None:
            from naturelm_edge.distill.collect import collect
            from naturelm_edge.models.full import NatureLMTeacher

            collect(NatureLMTeacher(self.options.checkpoint, self.full_model), self.options.audio, self.tasks,
                    cache_dir, labels_file=self.options.labels_file, progress=self.progress)

        precision = self.full_model.placement.describe()
        self.stage("teacher answers", digest(self.checkpoint_sha, tasks_digest(self.tasks), self.audio_key, precision),
                   [cache_dir / "records.jsonl"], run)
        return cache_dir

    def species_split(self, cache_dir: Path) -> Path:
        from naturelm_edge.distill.species import species_from_answers, split_species

        split_path, options = self.work / "split.json", self.options

        def run() -> None:
            species = set(self.labels.values()) or species_from_answers(cache_dir)
            split_species(species, options.held_out_fraction, options.seed,
                          source=str(options.labels_file or options.audio)).write(split_path)

        self.stage("species split", digest(sorted(self.labels.items()), options.held_out_fraction, options.seed,
                                           self.audio_key), [split_path], run)
        return split_path

    def student(self, cache_dir: Path, split_path: Path) -> Path:
        from naturelm_edge.distill.train import TrainConfig

        student_dir, options = self.work / "student", self.options
        config = TrainConfig(epochs=options.epochs, seed=options.seed, layers=options.student_layers,
                             hidden=options.student_hidden, heads=options.student_heads)

        def run() -> None:
            from naturelm_edge.distill.train import train

            shutil.rmtree(student_dir, ignore_errors=True)
            train(cache_dir, student_dir, config, split_path, progress=self.progress)

        self.stage("distillation", digest(file_digest(cache_dir / "records.jsonl"), file_digest(split_path),
                                          asdict(config)), [student_dir / "model.safetensors"], run)
        return student_dir

    def student_encoder(self, split_path: Path) -> Path:
        """`edge distill encoder` on the build's audio; held-out species only judge (every fifth recording
        when there are no labels)."""
        from naturelm_edge.distill.encoder import GRAPH, LOSS, ONNX_FILE, EncoderStudentConfig

        options = self.options
        out = self.work / f"student-encoder-{self.checkpoint_sha[:12]}"  # teacher tokens cached per teacher
        config = EncoderStudentConfig(arch=options.encoder_arch, epochs=options.encoder_epochs,
                                      views=options.encoder_views, seed=options.seed)

        def run() -> None:
            from naturelm_edge.distill.encoder import drop_stale_state, every_fifth, teacher_path
            from naturelm_edge.distill.species import SpeciesSplit
            from naturelm_edge.export.student_encoder import distill_encoder

            split, labels, teacher = SpeciesSplit.read(split_path), self.labels, teacher_path(options.checkpoint)
            drop_stale_state(out, config, teacher)
            distill_encoder(teacher, options.audio, out, config,
                            lambda relative, index: split.role(labels[relative]) == "held_out" if labels.get(relative)
                            else every_fifth(relative, index), progress=self.progress)

        self.stage("student encoder", digest(self.audio_key, asdict(config), LOSS, GRAPH, file_digest(split_path)),
                   [out / ONNX_FILE], run)
        return out

    def student_on_student_tokens(self, student_dir: Path, cache_dir: Path, encoder_dir: Path,
                                  split_path: Path) -> tuple[Path, Path]:
        """The distilled decoder fine-tuned on the student encoder's tokens and the full encoder's of the same
        windows (the teacher's answers as targets); returns it and the cache of those tokens (the decoder export
        verifies on it)."""
        from naturelm_edge.distill.encoder import ONNX_FILE
        from naturelm_edge.distill.train import TrainConfig
        from naturelm_edge.export.student_encoder import TEACHER_COPY

        options, tuned, tokens = self.options, self.work / "student-tuned", self.work / "student-token-cache"
        config = TrainConfig(epochs=max(1, options.epochs // 4), lr=3e-4, seed=options.seed,
                             layers=options.student_layers, hidden=options.student_hidden, heads=options.student_heads)

        def run() -> None:
            from naturelm_edge.distill.train import train
            from naturelm_edge.export.student_encoder import student_token_cache

            student_token_cache(cache_dir, options.audio, encoder_dir / ONNX_FILE, tokens)
            shutil.rmtree(tuned, ignore_errors=True)
            train(tokens, tuned, config, split_path, progress=self.progress, init=student_dir)

        self.stage("decoder on student tokens", digest(file_digest(student_dir / "model.safetensors"),
                                                       file_digest(encoder_dir / ONNX_FILE), asdict(config), TEACHER_COPY),
                   [tuned / "model.safetensors", tokens / "records.jsonl"], run)
        return tuned, tokens

    def decoder(self, student_dir: Path, cache_dir: Path) -> Path:
        decoder_dir = self.work / "decoder"

        def run() -> None:
            from naturelm_edge.export.decoder import export_decoder

            export_decoder(student_dir, decoder_dir, cache_dir)

        self.stage("decoder export", digest(file_digest(student_dir / "model.safetensors")),
                   [decoder_dir / roles.DECODER.file], run)
        return decoder_dir

    def quantized(self, encoder_dir: Path, decoder_dir: Path, split_path: Path,
                  full_encoder: Path) -> tuple[Path, dict, dict]:
        """Calibration and quantization for the profile, then the accuracy report (refused below --min-agreement);
        with a student encoder, also how its answers compare with the full encoder's."""
        from naturelm_edge.distill.species import SpeciesSplit
        from naturelm_edge.quantization.quantize import QuantSpec

        options, profile = self.options, self.options.profile
        split = SpeciesSplit.read(split_path)
        specs = {role: QuantSpec(profile.precision[role], profile.quant_target, profile.calibration)
                 for role in (roles.ENCODER.name, roles.DECODER.name)}
        quant_dir = self.work / f"quantized-{profile.name}"
        report_path = quant_dir / "quantization_report.json"

        reference = full_encoder / roles.ENCODER.file if encoder_dir != full_encoder else None

        def run() -> None:
            _quantize_and_report(options, split, self.labels, self.tasks, encoder_dir, decoder_dir, quant_dir, specs,
                                 report_path, reference)

        self.stage("quantization", digest(file_digest(encoder_dir / roles.ENCODER.file), reference and file_digest(reference),
                                          file_digest(decoder_dir / roles.DECODER.file),
                                          {r: asdict(s) for r, s in specs.items()}, file_digest(split_path),
                                          options.calibration_windows),
                   [quant_dir / roles.ENCODER.file, quant_dir / roles.DECODER.file, report_path], run)
        report = json.loads(report_path.read_text())
        self.summary["report"] = report
        if options.min_agreement is not None:
            worst = min(s["end_to_end_agreement"] for s in report["sets"].values())
            if worst < options.min_agreement:
                raise EdgeError(f"{report_path}: quantized answers agree with fp32 on only {worst:.1%} of windows "
                                f"(--min-agreement {options.min_agreement:.1%}); the previous bundle is kept.")
        return quant_dir, specs, report

    def bundle(self, encoder_dir: Path, decoder_dir: Path, quant_dir: Path, specs: dict, report: dict,
               split_path: Path) -> Path:
        """Every file by its role into a staging folder, the manifest, then one rename into place (and a signature)."""
        from naturelm_edge.bundle.manifest import new_manifest, pack, stage_files, write_bundle
        from naturelm_edge.distill.species import SpeciesSplit

        options, profile = self.options, self.options.profile
        split = SpeciesSplit.read(split_path)
        with self.progress.step("bundle"):
            options.out.parent.mkdir(parents=True, exist_ok=True)  # staging beside OUT: the final rename stays atomic
            staging = Path(tempfile.mkdtemp(prefix=f".{options.out.name}.", dir=options.out.parent))
            copies = {quant_dir / roles.ENCODER.file: (roles.ENCODER.file, roles.ENCODER, specs["encoder"].label()),
                      quant_dir / roles.DECODER.file: (roles.DECODER.file, roles.DECODER, specs["decoder"].label())}
            for role, precision in ((roles.DECODER_TABLES, "fp32"), (roles.DECODER_CONFIG, None), (roles.TOKENIZER, None)):
                copies[decoder_dir / role.file] = (role.file, role, precision)
            student = options.encoder_kind == "student"
            encoder_report = (encoder_dir / "student_encoder.json", "student_encoder.json") if student else \
                (encoder_dir / "export_report.json", "encoder_export.json")
            for source, name in (encoder_report, (decoder_dir / "decoder_report.json", "decoder_export.json"),
                                 (quant_dir / "quantization_report.json", "quantization.json")):
                copies[source] = (roles.REPORT.file + name, roles.REPORT, None)
            from naturelm_edge.privacy.silero import provenance, speech_addition

            copies.update(speech_addition())  # the privacy filter's speech model, from the silero-vad wheel
            decoder_meta = json.loads((decoder_dir / roles.DECODER_CONFIG.file).read_text())
            manifest = new_manifest(
                f"naturelm-{profile.name}", stage_files(staging, copies),
                source_checkpoint={"id": str(options.checkpoint), "sha256": self.checkpoint_sha},
                target_profile=profile.name,
                audio={"sample_rate": DEFAULT_SETTINGS.sample_rate, "window_s": profile.audio.get("window_s", 10.0),
                       "hop_s": profile.audio.get("hop_s", 5.0), "clip_seconds": 10.0,
                       "time_expansion": profile.audio.get("time_expansion", 1.0), "fbank": asdict(DEFAULT_SETTINGS)},
                tokenizer=roles.TOKENIZER.file,
                prompts={"template": decoder_meta["prompt_template"], "tasks": decoder_meta["tasks"]},
                labels=sorted(set(self.labels.values())),
                species_split={"distill": split.distill, "held_out": split.held_out},
                calibration=report.get("calibration", {}),
                reports={"quantization": {k: report[k] for k in ("encoder", "decoder", "sets")}},
                encoder=self.encoder_section(encoder_dir, report),
                speech_filter=provenance(),
            )
            bundle = write_bundle(staging, options.out, manifest)
            if options.sign_key is not None:
                from naturelm_edge.bundle.signing import sign_bundle

                sign_bundle(bundle, options.sign_key)
            if options.tar:
                pack(bundle, bundle.with_suffix(".tar"))
        self.summary["bundle"] = str(bundle)
        self.summary["bundle_id"] = manifest["bundle_id"]
        return bundle

    def encoder_section(self, encoder_dir: Path, report: dict) -> dict:
        """The manifest's ``encoder``: which one the bundle carries; a student's teacher and fidelity figures."""
        if self.options.encoder_kind != "student":
            return {"kind": "full"}
        trained = json.loads((encoder_dir / "student_encoder.json").read_text())
        return {"kind": "student", "teacher": {"id": str(self.options.checkpoint), "sha256": self.checkpoint_sha},
                "arch": trained["config"]["arch"], "parameters": trained["parameters"],
                "fidelity": {"held_back_recordings": trained["fidelity_held_back"],
                             "against_full_encoder": report.get("student_encoder", {})}}


def _quantize_and_report(options: BuildOptions, split, labels: dict, tasks, encoder_dir: Path, decoder_dir: Path,  # noqa: ANN001
                         quant_dir: Path, specs: dict, report_path: Path, full_encoder: Path | None = None) -> None:
    from naturelm_edge.edge_runtime.decoder import OnnxDecoder
    from naturelm_edge.quantization.calibration import (
        ArrayReader,
        calibration_set,
        decoder_inputs,
        encoder_inputs,
    )
    from naturelm_edge.quantization.quantize import quantize
    from naturelm_edge.quantization.report import EvalSet, accuracy_report, format_table, run_encoder, session

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
                             specs["decoder"].label())
    if full_encoder is not None:
        from naturelm_edge.quantization.report import student_agreement

        report["student_encoder"] = student_agreement(full_encoder, quant_dir / "encoder.onnx", decoder_dir,
                                                      quant_dir / "decoder.onnx", sets, questions)
    report["calibration"] = {"files": [str(p) for p in calibration.files], "windows": int(len(calibration.features)),
                             "decoder_inputs": len(dec_inputs), "skipped": calibration.skipped,
                             "encoder": encoder_info, "decoder": decoder_info, "held_out_species": split.held_out,
                             "evaluation_files": [str(p) for p in eval_files]}
    write_atomic(report_path, json.dumps(report, indent=2, default=_jsonable) + "\n")
    report_path.with_suffix(".md").write_text(format_table(report) + "\n")


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
