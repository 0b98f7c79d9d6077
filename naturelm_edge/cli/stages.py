"""``edge checkpoint``, ``edge export``, ``edge distill``, ``edge detector`` and ``edge build``: the export stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from naturelm_edge.cli.common import (
    Beams,
    Device,
    Dtype,
    LlamaPath,
    MaxNewTokens,
    ProfilesDir,
    RayAddress,
    RayWorkers,
    console,
    err_console,
    full_model_options,
    progress_bar,
    user_errors,
)
from naturelm_edge.errors import EdgeError

checkpoint_app = typer.Typer(help="Build or inspect NatureLM-audio checkpoints.", no_args_is_help=True)
export_app = typer.Typer(help="Export model parts to ONNX with parity verification.", no_args_is_help=True)
distill_app = typer.Typer(help="Distil NatureLM's decoder into a small student.", no_args_is_help=True)
detector_app = typer.Typer(help="The cascade's detection stage: train it and add it to a bundle.", no_args_is_help=True)


@checkpoint_app.command("tiny")
@user_errors
def checkpoint_tiny(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the checkpoint to.")],
    seed: Annotated[int, typer.Option(help="Random seed of the weights.")] = 0,
) -> None:
    """Write a tiny NatureLM-audio checkpoint (random weights) in exactly the official layout."""
    from naturelm_edge.models.tiny import write_tiny_checkpoint

    write_tiny_checkpoint(out_dir, seed)
    console.print(f"tiny checkpoint written to {out_dir} (random weights, seed {seed})")


@checkpoint_app.command("official-shape")
@user_errors
def checkpoint_official_shape(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the checkpoint to.")],
    llm_layers: Annotated[int | None, typer.Option(help="Decoder layers of the Llama base (default: all 32).")] = None,
    narrow: Annotated[bool, typer.Option("--narrow", help="The official vocabulary, special ids, head layout and "
                                                            "LoRA at a width CI can build (LLM 256 wide, tiny BEATs).")] = False,
    seed: Annotated[int, typer.Option(help="Random seed of the weights.")] = 0,
) -> None:
    """Write a checkpoint in the official layout at the official sizes (random weights, bf16 safetensors):
    BEATs 12x768, Q-Former, projection into Llama-3.1-8B's widths (4096, 32 heads, 8 KV heads, FFN 14336,
    vocabulary 128256 with the special tokens at their real ids), LoRA r 32 on q/k/v/o."""
    from naturelm_edge.models.tiny import SHAPES, write_checkpoint

    if llm_layers is not None and llm_layers < 1:
        raise EdgeError("--llm-layers must be at least 1.")
    shape = SHAPES["narrow" if narrow else "official"]
    with progress_bar() as progress:
        bar = progress.add_task(f"writing the {shape.name} shape (bytes)", total=None)
        write_checkpoint(out_dir, shape, seed, llm_layers,
                         on_tensor=lambda n, total: progress.update(bar, advance=n, total=total))
    total = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    console.print(f"{shape.name}-shape checkpoint written to {out_dir}: {total / 2**30:.2f} GiB "
                  f"(random weights, {llm_layers or shape.num_hidden_layers} LLM layers, seed {seed})")


@export_app.command("encoder")
@user_errors
def export_encoder_cmd(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint directory, training file or hub id.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    verify_audio: Annotated[
        list[Path] | None, typer.Option("--verify-audio", help="Audio files or folders to verify on.")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="Config preset for a training file without config.json.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Export the audio encoder (fbank -> audio tokens) to ONNX and verify it against PyTorch."""
    run_encoder_export(checkpoint, out, verify_audio, preset, quiet)


def run_encoder_export(
    checkpoint: str, out: Path, verify_audio: list[Path] | None, preset: str | None, quiet: bool
) -> dict:
    from naturelm_edge.export.encoder import REPORT_FILE, export_encoder
    from naturelm_edge.models import load
    from naturelm_edge.progress import Progress

    progress = Progress(quiet=quiet)
    with progress.step(f"loading {checkpoint}"):
        loaded = load(checkpoint, preset_name=preset)
    source = {"checkpoint": loaded.source.name, "sha256": loaded.source.sha256(), "settings": loaded.source.describe()}
    progress.note(f"settings: {source['settings']}")
    try:
        report = export_encoder(loaded.model, out, verify_audio, source, progress)
    finally:
        report_path = out / REPORT_FILE
        if report_path.is_file():
            print_report(json.loads(report_path.read_text()))
    return report.__dict__


def print_report(report: dict) -> None:
    table = Table(title=f"encoder export: {report['onnx_path']}")
    for column in ("output", "max abs error", "scale", "min cosine", "result"):
        table.add_column(column)
    for name, stats in report["parity"].items():
        table.add_row(
            name,
            f"{stats['max_abs_error']:.2e}",
            f"{stats['scale']:.3g}",
            f"{stats['min_cosine']:.7f}",
            "[green]pass[/green]" if stats["passed"] else "[red]FAIL[/red]",
        )
    console.print(table)
    console.print(
        f"{report['parameters'] / 1e6:.1f} M parameters, {report['onnx_bytes'] / 1e6:.1f} MB ONNX, "
        f"exported in {report['export_seconds']:.1f} s, verified on {len(report['clips'])} clips"
    )


@distill_app.command("collect")
@user_errors
def distill_collect(
    checkpoint: Annotated[str, typer.Argument(help="Teacher checkpoint (directory, training file or hub id).")],
    audio: Annotated[Path, typer.Option("--audio", help="Folder of recordings (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", help="Cache directory (resumed when it exists).")],
    tasks: Annotated[Path | None, typer.Option("--tasks", help="Task file (TOML/YAML); default: built-in.")] = None,
    labels: Annotated[Path | None, typer.Option(help="LABELS.csv; default: AUDIO/LABELS.csv if present.")] = None,
    top_k: Annotated[int, typer.Option(help="Teacher distribution entries kept per position.")] = 20,
    window: Annotated[float, typer.Option(help="Window length in seconds.")] = 10.0,
    hop: Annotated[float, typer.Option(help="Hop in seconds.")] = 5.0,
    merging_factor: Annotated[float, typer.Option(help="LoRA merging factor of the teacher.")] = 1.0,
    batch: Annotated[int | None, typer.Option(help="Windows per forward pass (default 32).")] = None,
    ray: RayAddress = None,
    workers: RayWorkers = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    llama_path: LlamaPath = None,
    beams: Beams = None,
    max_new_tokens: MaxNewTokens = None,
) -> None:
    """Cache what the teacher answers for every window and task (resumable), here or on a Ray cluster."""
    from naturelm_edge.distill.collect import TeacherSource, collect
    from naturelm_edge.distill.tasks import load_tasks

    options = full_model_options(device, dtype, llama_path, beams, max_new_tokens, merging_factor)
    task_list = [task.resolved(options.generation) for task in load_tasks(tasks)]
    actors = f"{workers} teacher actors" if workers else "a teacher actor per CPU (per GPU with --device cuda)"
    where = f"Ray ({ray}), {actors}" if ray else options.placement.describe()
    console.print(f"teacher on {where}, {options.generation.num_beams} beams by default")
    with progress_bar() as progress:
        summary = collect(TeacherSource(checkpoint, options), audio, task_list, out, window, hop, top_k, labels,
                          progress=progress, ray=ray, workers=workers, **({"batch_size": batch} if batch else {}))
    for failure in summary.failed or []:
        err_console.print(f"[yellow]skipped:[/yellow] {failure}", highlight=False)
    console.print(f"{summary.files} recordings, {summary.windows} windows: {summary.asked} answers asked "
                  f"({summary.answers_per_second:.1f}/s), {summary.reused} already cached -> {out}")


@distill_app.command("split")
@user_errors
def distill_split(
    out: Annotated[Path, typer.Option("--out", help="Split file to write (JSON).")],
    labels: Annotated[Path | None, typer.Option(help="LABELS.csv with path and species_common.")] = None,
    folders: Annotated[Path | None, typer.Option(help="A folder per species.")] = None,
    cache: Annotated[Path | None, typer.Option(help="Split the species the teacher named in a cache.")] = None,
    held_out: Annotated[float, typer.Option(help="Share of species held out.")] = 0.25,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Split species into distillation and held-out sets (disjoint, seeded)."""
    from naturelm_edge.distill.species import (
        labels_from_csv,
        labels_from_folders,
        species_from_answers,
        split_species,
    )

    if sum(x is not None for x in (labels, folders, cache)) != 1:
        raise EdgeError("give exactly one of --labels, --folders or --cache.")
    if labels is not None:
        species, source = set(labels_from_csv(labels).values()), str(labels)
    elif folders is not None:
        species, source = set(labels_from_folders(folders).values()), str(folders)
    else:
        species = species_from_answers(cache)
        source = str(cache)
    split = split_species(species, held_out, seed, source)
    split.write(out)
    console.print(f"{len(split.distill)} distillation species, {len(split.held_out)} held out -> {out}")


@distill_app.command("train")
@user_errors
def distill_train(
    cache: Annotated[Path, typer.Argument(help="Teacher cache from `edge distill collect`.")],
    out: Annotated[Path, typer.Option("--out", help="Student directory (training resumes when it exists).")],
    split: Annotated[Path | None, typer.Option(help="Species split file; default: seeded split of the labels.")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs the learning rate falls to 0 over (at most: see --patience).")] = 6,
    batch_size: Annotated[int, typer.Option()] = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate, after half an epoch of warm-up.")] = 1e-3,
    ce_weight: Annotated[float, typer.Option(help="Weight of cross-entropy on the teacher's answers.")] = 1.0,
    kl_weight: Annotated[float, typer.Option(help="Weight of KL to the teacher's top-k distribution.")] = 1.0,
    layers: Annotated[int, typer.Option()] = 4,
    hidden: Annotated[int, typer.Option()] = 384,
    heads: Annotated[int, typer.Option(help="Attention heads (must divide --hidden).")] = 6,
    seed: Annotated[int, typer.Option()] = 0,
    patience: Annotated[int, typer.Option(help="Stop when the held-out species' loss (else the training loss) has "
                                              "not improved for this many epochs; 0 runs every epoch.")] = 3,
) -> None:
    """Train the student decoder on the cached teacher answers."""
    from naturelm_edge.distill.train import TrainConfig, train

    if hidden % heads or heads % 2:
        raise EdgeError(f"--hidden {hidden} must be a multiple of --heads {heads}, and --heads even.")
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, ce_weight=ce_weight, kl_weight=kl_weight,
                         layers=layers, hidden=hidden, heads=heads, seed=seed, patience=patience)
    with progress_bar() as progress:
        summary = train(cache, out, config, split, progress=progress)
    console.print(f"student trained: {summary['steps']} steps on {summary['examples']} answers, vocabulary "
                  f"{summary['vocab']} tokens, final cross-entropy {summary['final_ce']:.3f}; stopped: "
                  f"{summary['stopped_because']} -> {out}")


@detector_app.command("train")
@user_errors
def detector_train(
    bundle: Annotated[Path, typer.Argument(help="Bundle to add the detection stage to.")],
    audio: Annotated[Path, typer.Option("--audio", help="Labelled recordings (LABELS.csv: focal = calls, background = none).")],
    out: Annotated[Path, typer.Option("--out", help="Bundle to write (may be BUNDLE itself: replaced atomically).")],
    labels: Annotated[Path | None, typer.Option(help="LABELS.csv; default: AUDIO/LABELS.csv.")] = None,
    teacher_answers: Annotated[Path | None, typer.Option(
        help="Label each window by the teacher's answer to the detection question ('None': no call), from this "
             "cache of `edge distill collect`; with --checkpoint, the answers are collected into it first. A scores "
             "teacher's cache (`edge build --teacher birdnet-v2.4`'s WORK/teacher-birdnet-v2.4) gives its verdict "
             "instead: a call at >= 0.5, none below 0.1.")] = None,
    checkpoint: Annotated[str | None, typer.Option(
        help="Teacher checkpoint to ask the detection question on every window of AUDIO (no labels needed).")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Folder of AUDIO to keep out of training (repeatable).")] = None,
    recall: Annotated[float, typer.Option(help="Share of held-back call windows of every kind the threshold must pass.")] = 0.98,
    skip: Annotated[float, typer.Option(help="Share of held-back call-free windows it must still refuse (recall wins).")] = 0.98,
    epochs: Annotated[int, typer.Option()] = 16,
    seed: Annotated[int, typer.Option()] = 0,
    sign: Annotated[Path | None, typer.Option(help="ed25519 private key to sign the new bundle with.")] = None,
) -> None:
    """Train the cascade's detection stage (a small CNN on the fbank) and add it to a bundle."""
    from naturelm_edge.detection.training import DetectorConfig, add_detector

    for name, share in (("--recall", recall), ("--skip", skip)):
        if not 0 < share <= 1:
            raise EdgeError(f"{name} {share}: give a share between 0 and 1.")
    if checkpoint is not None:
        teacher_answers = teacher_answers or out.with_name(f"{out.name}.teacher-answers")
        collect_detection_answers(checkpoint, bundle, audio, teacher_answers)
    with err_console.status("detector ...") as status:
        result = add_detector(bundle, audio, out, DetectorConfig(epochs=epochs, recall=recall, skip=skip, seed=seed), labels,
                              tuple(exclude or ()), sign, status.update, teacher_answers)
    v = result["validation"]
    free = "n/a" if v["call_free_skipped"] is None else f"{v['call_free_skipped']:.0%}"
    unseen = v["recall_unseen"]
    checked = "n/a" if unseen["share"] is None else f"{unseen['share']:.0%} of {unseen['count']}"
    console.print(f"detector: threshold {result['threshold']:.3f}; on held-back windows it keeps {v['recall']:.0%} of "
                  f"{v['calls']} calls (target {recall:.0%} of each kind; {checked} where the threshold was set on "
                  f"other recordings) and refuses {free} of call-free ones (target {skip:.0%}); trained on "
                  f"{result['training']['windows']} windows -> bundle {result['bundle_id']} at {result['bundle']}")


def collect_detection_answers(checkpoint: str, bundle: Path, audio: Path, out: Path) -> None:
    """Ask the teacher the detection question on every window of ``audio`` as the bundle cuts it (resumable)."""
    from naturelm_edge.bundle.open import load_bundle
    from naturelm_edge.detection.labels import DETECTION_KIND
    from naturelm_edge.distill.collect import collect
    from naturelm_edge.distill.tasks import load_tasks
    from naturelm_edge.models.full import NatureLMTeacher

    spec = load_bundle(bundle).audio.spec
    options = full_model_options("auto", "auto", None, None, None)
    tasks = [t.resolved(options.generation) for t in load_tasks() if t.kind == DETECTION_KIND]
    with progress_bar() as progress:
        summary = collect(NatureLMTeacher(checkpoint, options), audio, tasks, out, spec.window_s, spec.hop_s,
                          progress=progress)
    for failure in summary.failed or []:
        err_console.print(f"[yellow]skipped:[/yellow] {failure}", highlight=False)
    console.print(f"teacher answers: {summary.windows} windows ({summary.reused} already cached) -> {out}")


@distill_app.command("encoder")
@user_errors
def distill_encoder_cmd(
    checkpoint: Annotated[str, typer.Argument(help="Teacher checkpoint whose audio path the student learns.")],
    audio: Annotated[Path, typer.Option("--audio", help="Recordings, labelled or not (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", help="Student folder (resumed when it exists).")],
    arch: Annotated[str, typer.Option(help="Student size: mobilenet-s or mobilenet-m.")] = "mobilenet-s",
    epochs: Annotated[int | None, typer.Option(help="Training epochs, at most (see --patience); default: the "
                                                    "student encoder's own (12).")] = None,
    patience: Annotated[int, typer.Option(help="Stop when the held-back recordings' loss has not improved for this "
                                               "many epochs; 0 runs every epoch.")] = 3,
    views: Annotated[int, typer.Option(help="Each window as recorded plus VIEWS - 1 augmented copies.")] = 3,
    split: Annotated[Path | None, typer.Option(
        help="Species split (`edge distill split`): its held-out species only judge (needs labels).")] = None,
    labels: Annotated[Path | None, typer.Option(help="LABELS.csv for --split; default: AUDIO/LABELS.csv.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Distil the teacher's audio path into a small CNN on the fbank (for profiles without a GPU)."""
    from naturelm_edge.distill.encoder import EncoderStudentConfig, every_fifth, teacher_path
    from naturelm_edge.distill.species import SpeciesSplit, labels_for
    from naturelm_edge.export.student_encoder import distill_encoder

    held, species_of = (set(SpeciesSplit.read(split).held_out), labels_for(audio, labels)) if split else (set(), {})
    if split is not None and not species_of:
        raise EdgeError(f"--split {split}: no labels for {audio} (give --labels) to tell held-out species apart.")

    def held_out(relative: str, index: int) -> bool:
        return species_of.get(relative) in held if split else every_fifth(relative, index)
    config = EncoderStudentConfig(arch=arch, epochs=epochs or EncoderStudentConfig.epochs, views=views, seed=seed,
                                  patience=patience)
    with progress_bar() as progress:
        report = distill_encoder(teacher_path(checkpoint), audio, out, config, held_out, progress)
    fid = report["fidelity_held_back"]
    judged = (f"token cosine {fid['token_cosine_mean']:.3f} (centred {fid['centred_cosine_mean']:.3f}) on "
              f"{fid['windows']} held-back windows" if fid["windows"] else "no held-back windows to judge on")
    console.print(f"student encoder: {report['parameters'] / 1e6:.2f} M parameters, {report['windows']} windows x "
                  f"{views} views, {report['training']['epochs']} epochs ({report['training']['stopped_because']}); "
                  f"{judged} -> {out}")


@export_app.command("decoder")
@user_errors
def export_decoder_cmd(
    student: Annotated[Path, typer.Argument(help="Student directory from `edge distill train`.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    cache: Annotated[Path | None, typer.Option(help="Teacher cache to verify on (default: the training cache).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Export the student decoder to ONNX with KV cache and verify generation against PyTorch."""
    from naturelm_edge.export.decoder import export_decoder
    from naturelm_edge.progress import Progress

    report = export_decoder(student, out, cache, Progress(quiet=quiet))
    stats = report["parity"]["logits"]
    console.print(f"decoder: {report['onnx_bytes'] / 1e6:.1f} MB ONNX; logits max error {stats['max_abs_error']:.2e} "
                  f"(scale {stats['scale']:.3g}), min cosine {stats['min_cosine']:.7f}; greedy answers equal "
                  f"{report['greedy_equal']}/{report['greedy_total']} -> {out}")


def _check_labels_flags(teacher: str, text: bool, species: Path | None, lat: float | None, lon: float | None,
                        week: int | None) -> None:
    """--species, --lat, --lon and --week choose a scores teacher's labels: refused with a text teacher, and the
    range model's place checked before any work."""
    if text and (species, lat, lon, week) != (None, None, None, None):
        raise EdgeError(f"--species, --lat, --lon and --week choose a scores teacher's labels; teacher {teacher} "
                        "answers in text.")
    if not text:
        from naturelm_edge.teachers.birdnet import check_place

        check_place(lat, lon, week)


@user_errors
def build_cmd(
    audio: Annotated[Path, typer.Option("--audio", help="Recordings for distillation, calibration and reports.")],
    out: Annotated[Path, typer.Option("--out", help="Bundle directory to write (replaced atomically).")],
    checkpoint: Annotated[str | None, typer.Argument(
        help="NatureLM checkpoint (directory, training file or hub id); not used with --teacher birdnet-v2.4.")] = None,
    teacher: Annotated[str, typer.Option(help="Who the bundle learns from: naturelm (CHECKPOINT) or birdnet-v2.4 "
                                              "(installed with the birdnet extra).")] = "naturelm",
    species: Annotated[Path | None, typer.Option(
        help="A scores teacher: species to keep besides those it hears (one name per line).")] = None,
    lat: Annotated[float | None, typer.Option(help="With --lon: add the species BirdNET's range model expects here.")] = None,
    lon: Annotated[float | None, typer.Option(help="Longitude for --lat.")] = None,
    week: Annotated[int | None, typer.Option(help="Week of the year 1-48 for the range model (default: all year).")] = None,
    threshold: Annotated[float, typer.Option(help="A scores bundle names a species from this confidence.")] = 0.5,
    profile: Annotated[str | None, typer.Option(help="Device profile; default: the detected device.")] = None,
    profiles_dir: ProfilesDir = None,
    work: Annotated[Path | None, typer.Option(help="Work folder for stages (default OUT.work).")] = None,
    tasks: Annotated[Path | None, typer.Option(help="Task file; default: built-in NatureLM tasks.")] = None,
    labels: Annotated[Path | None, typer.Option(help="LABELS.csv; default: AUDIO/LABELS.csv.")] = None,
    epochs: Annotated[int, typer.Option(help="Student decoder epochs the learning rate falls to 0 over (at most: "
                                             "see --patience).")] = 6,
    patience: Annotated[int, typer.Option(help="Stop when the held-out species' loss (else the training loss) has "
                                              "not improved for this many epochs; 0 runs every epoch.")] = 3,
    student_layers: Annotated[int, typer.Option()] = 4,
    student_hidden: Annotated[int, typer.Option()] = 384,
    student_heads: Annotated[int, typer.Option()] = 6,
    encoder: Annotated[str | None, typer.Option(
        help="full (NatureLM's audio path) or student (distilled); default: what the profile asks for.")] = None,
    encoder_epochs: Annotated[int | None, typer.Option(
        help="Student encoder training epochs, at most (see --patience); default: the student's own (12 for a "
             "NatureLM student encoder, 30 for a scores teacher's student).")] = None,
    views: Annotated[int, typer.Option(help="Each training window as it is and views - 1 augmented copies the "
                                            "teacher also answers (student encoder, scores teacher).")] = 3,
    calibration_windows: Annotated[int, typer.Option(help="Windows of held-out species to calibrate on.")] = 32,
    min_agreement: Annotated[float | None, typer.Option(help="Fail when quantized answers agree with fp32 less often.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split (recordings for a scores teacher, species for "
                                           "NatureLM) and of the students' weights: another seed, another "
                                           "held-out set to judge the recipe on.")] = 0,
    sign: Annotated[Path | None, typer.Option(help="ed25519 private key to sign the bundle with.")] = None,
    tar: Annotated[bool, typer.Option("--tar", help="Also write BUNDLE.tar.")] = False,
    ray: RayAddress = None,
    workers: RayWorkers = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    llama_path: LlamaPath = None,
    beams: Beams = None,
    max_new_tokens: MaxNewTokens = None,
) -> None:
    """Export, distil, quantize and bundle: the whole export stage in one command."""
    from naturelm_edge.build import BuildOptions, build
    from naturelm_edge.device_profiles import detect, get
    from naturelm_edge.device_profiles.schema import ENCODERS
    from naturelm_edge.progress import Progress
    from naturelm_edge.teachers import TEXT
    from naturelm_edge.teachers import teacher as teacher_named

    if encoder is not None and encoder not in ENCODERS:
        raise EdgeError(f"--encoder {encoder}: choose one of {', '.join(ENCODERS)}.")
    text = teacher_named(teacher).answers == TEXT
    if text and checkpoint is None:
        raise EdgeError("edge build: give the NatureLM CHECKPOINT to distil (or --teacher birdnet-v2.4).")
    _check_labels_flags(teacher, text, species, lat, lon, week)
    chosen = get(profile, profiles_dir) if profile else detect(extra_dir=profiles_dir)
    options = BuildOptions(checkpoint or "", audio, chosen, out, work or out.with_name(out.name + ".work"), tasks,
                           labels, epochs, student_layers, student_hidden, student_heads,
                           calibration_windows=calibration_windows, min_agreement=min_agreement, sign_key=sign, tar=tar,
                           full_model=full_model_options(device, dtype, llama_path, beams, max_new_tokens),
                           encoder=encoder, encoder_epochs=encoder_epochs, encoder_views=views, patience=patience,
                           teacher=teacher, seed=seed,
                           species_file=species, lat=lat, lon=lon, week=week, threshold=threshold, ray=ray,
                           workers=workers)
    console.print(f"building from teacher [bold]{teacher}[/bold] for profile [bold]{chosen.name}[/bold] "
                  + (f"({options.encoder_kind} {chosen.precision['encoder']} encoder, "
                     f"{chosen.precision['decoder']} decoder)" if text else f"({chosen.precision['encoder']} student)"))
    summary = build(options, Progress())
    console.print(summary["table"])
    console.print(f"bundle {summary['bundle_id']} -> {summary['bundle']}")



# the command's first name, kept so existing scripts go on working
distill_app.command("detector", help="Alias of `edge detector train`.")(detector_train)
