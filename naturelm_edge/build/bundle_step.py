"""The bundle: every file by its role into a staging folder, the manifest, one rename into place (and a
signature). It always runs: it is cheap, and the manifest records the build that made it."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from naturelm_edge.build.context import Build
from naturelm_edge.bundle import roles
from naturelm_edge.errors import EdgeError


def checked_report(b: Build) -> dict:
    """The quantization report, refused below ``--min-agreement`` (the previous bundle is then kept)."""
    report_path = b.quantized / "quantization_report.json"
    report = json.loads(report_path.read_text())
    b.summary["report"] = report
    least = b.options.min_agreement
    if least is not None:
        worst = min(s["end_to_end_agreement"] for s in report["sets"].values())
        if worst < least:
            raise EdgeError(f"{report_path}: quantized answers agree with fp32 on only {worst:.1%} of windows "
                            f"(--min-agreement {least:.1%}); the previous bundle is kept.")
    return report


def _copies(b: Build) -> dict:
    """{source file: (path in the bundle, role, precision)} for every file the bundle carries."""
    from naturelm_edge.build.quantization_step import specs_of

    specs, quant_dir, decoder_dir = specs_of(b), b.quantized, b.decoder
    copies = {quant_dir / roles.ENCODER.file: (roles.ENCODER.file, roles.ENCODER, specs["encoder"].label()),
              quant_dir / roles.DECODER.file: (roles.DECODER.file, roles.DECODER, specs["decoder"].label())}
    for role, precision in ((roles.DECODER_TABLES, "fp32"), (roles.DECODER_CONFIG, None), (roles.TOKENIZER, None)):
        copies[decoder_dir / role.file] = (role.file, role, precision)
    encoder_report = (b.encoder_dir / "student_encoder.json", "student_encoder.json") if b.with_student else \
        (b.encoder_dir / "export_report.json", "encoder_export.json")
    for source, name in (encoder_report, (decoder_dir / "decoder_report.json", "decoder_export.json"),
                         (quant_dir / "quantization_report.json", "quantization.json")):
        copies[source] = (roles.REPORT.file + name, roles.REPORT, None)
    return copies


def write_bundle_of(b: Build, report: dict) -> Path:
    from naturelm_edge.build.steps import STEPS
    from naturelm_edge.distill.species import SpeciesSplit
    from naturelm_edge.teachers import NATURELM

    options, profile = b.options, b.options.profile
    split = SpeciesSplit.read(b.split)
    decoder_meta = json.loads((b.decoder / roles.DECODER_CONFIG.file).read_text())
    return publish(b, f"naturelm-{profile.name}", _copies(b), dict(
        source_checkpoint={"id": str(options.checkpoint), "sha256": b.checkpoint_sha},
        audio=NATURELM.audio_section(profile.audio),
        tokenizer=roles.TOKENIZER.file,
        prompts={"template": decoder_meta["prompt_template"], "tasks": decoder_meta["tasks"]},
        labels=sorted(set(b.labels.values())),
        species_split={"distill": split.distill, "held_out": split.held_out},
        calibration=report.get("calibration", {}),
        reports={"quantization": {k: report[k] for k in ("encoder", "decoder", "sets")}},
        encoder=encoder_section(b, report),
        build=build_section(b, STEPS),
    ))


def publish(b, name: str, copies: dict, fields: dict) -> Path:  # noqa: ANN001 - any build state
    """Stage ``copies`` (and the privacy filter's speech model), write the manifest, rename the bundle into place
    (a failed build leaves the previous one), then sign and pack it as asked."""
    from naturelm_edge.bundle.manifest import new_manifest, pack, stage_files, write_bundle
    from naturelm_edge.privacy.silero import provenance, speech_addition

    options = b.options
    with b.progress.step("bundle"):
        options.out.parent.mkdir(parents=True, exist_ok=True)  # staging beside OUT: the final rename stays atomic
        staging = Path(tempfile.mkdtemp(prefix=f".{options.out.name}.", dir=options.out.parent))
        manifest = new_manifest(name, stage_files(staging, {**copies, **speech_addition()}),
                                target_profile=options.profile.name, speech_filter=provenance(), **fields)
        bundle = write_bundle(staging, options.out, manifest)
        if options.sign_key is not None:
            from naturelm_edge.bundle.signing import sign_bundle

            sign_bundle(bundle, options.sign_key)
        if options.tar:
            pack(bundle, bundle.with_suffix(".tar"))
    b.summary["bundle"] = str(bundle)
    b.summary["bundle_id"] = manifest["bundle_id"]
    return bundle


def encoder_section(b: Build, report: dict) -> dict:
    """The manifest's ``encoder``: which one the bundle carries; a student's teacher and fidelity figures."""
    if not b.with_student:
        return {"kind": "full"}
    trained = json.loads((b.encoder_dir / "student_encoder.json").read_text())
    return {"kind": "student", "teacher": {"id": str(b.options.checkpoint), "sha256": b.checkpoint_sha},
            "arch": trained["config"]["arch"], "parameters": trained["parameters"],
            "stopped": trained["training"]["stopped_because"],
            "fidelity": {"held_back_recordings": trained["fidelity_held_back"],
                         "against_full_encoder": report.get("student_encoder", {})}}


def build_section(b, table: tuple) -> dict:  # noqa: ANN001 - any build state; its recipe's steps
    """How each training step ended and what it cost, as its stamp recorded it (this run's or an earlier one),
    and the seed of the split and the weights (which held-out set the bundle's own figures come from)."""
    steps = {}
    for step in table:
        stamp = b.stamps.root / f"{step.name}.json"
        if step.applies(b) and stamp.is_file():
            steps[step.name] = json.loads(stamp.read_text()).get("cost")
    return {"steps": steps, "seed": b.options.seed}
