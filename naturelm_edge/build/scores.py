"""``edge build --teacher NAME`` for a teacher that answers with scores over a label list (BirdNET v2.4).

The same kind of step table as NatureLM's (:mod:`naturelm_edge.build.steps`), with the same staleness stamps,
progress and costs: the teacher's answers on every window of the audio (and augmented copies of the training
recordings), a classifier student fitted to them, its int8 version calibrated on held-back recordings, a
report of how often each answers as the teacher does on recordings that neither trained nor calibrated it, and
the screening's detector, trained on the teacher's verdict per window of every recording the report does not judge.
The bundle's audio contract, labels, licence and teacher identity come from the teacher.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from naturelm_edge.atomic import write_atomic
from naturelm_edge.audio.files import list_audio
from naturelm_edge.build.context import BuildOptions
from naturelm_edge.build.stamps import Stamps, audio_digest, digest, file_digest
from naturelm_edge.build.steps import Step
from naturelm_edge.bundle import roles
from naturelm_edge.errors import EdgeError
from naturelm_edge.progress import Progress
from naturelm_edge.teachers import Teacher, teacher

MODEL, TRAINED, REPORT = "encoder.onnx", "classifier.json", "quantization_report.json"
DETECTOR, DETECTOR_REPORT = "detector.onnx", "detector.json"
# the bundle's escalation threshold, chosen on held-back recordings at build, keeps this share of the calls the
# teacher hears there (a call the student calls silence as surely as the threshold is lost for good; one it
# escalates costs the server a window, and the hourly budget caps those) ...
RECALL = 0.97
# ... and sends at least the student's least sure fifth (the ceiling on what a station sends). On three
# splits of the shared recordings the fifth alone escalated 9-32 % of the evaluation windows and kept 31-80 % of
# the teacher's calls there; with the recall goal, 33-43 % and 80-88 %.
ESCALATED_SHARE = 0.2
# the recordings it is chosen on: every one that did not train the student's weights (a fifth of a folder's
# recordings; the calibration ones alone are a twentieth, 20 windows of the shared set, too few for a quantile)
HELD_BACK = ("validation", "calibration")
# the support floor sits this far under the lowest support of the held-back windows the student names as the
# teacher does (cosine similarity; on the shared recordings those lie at 0.82 and above with the int8 student,
# and a toad chorus an earlier student called a thrush lay at 0.72-0.78)
SUPPORT_MARGIN = 0.05
HeldBack = tuple[tuple[str, ...], np.ndarray, np.ndarray]  # roles, quantized student's outputs, teacher's label


class State:
    """One scores build: options, the teacher (loaded when a step first needs it), and each step's folder."""

    def __init__(self, options: BuildOptions, progress: Progress) -> None:
        self.options, self.progress = options, progress
        self.teacher: Teacher = teacher(options.teacher)
        self.work = options.work
        self.work.mkdir(parents=True, exist_ok=True)
        self.stamps = Stamps(self.work)
        self.files = list_audio(options.audio)
        if not self.files:
            raise EdgeError(f"{options.audio}: no recordings to build from.")
        self.audio_key = audio_digest(self.files)
        self.summary: dict = {"stages": {}, "costs": {}, "teacher": self.teacher.name}
        self.cache = self.work / f"teacher-{self.teacher.name}"
        self.student = self.work / "classifier"
        self.quantized = self.work / f"quantized-{options.profile.name}"
        self.detector = self.work / "detector"
        self.contract = self.teacher.contract(options.profile.audio.get("time_expansion", 1.0))

    @functools.cached_property
    def adapter(self):  # noqa: ANN201 - the teacher's adapter (BirdNET)
        return self.teacher.load(threads=self.options.profile.intra_op_threads)

    def asked(self) -> list[int]:
        """Labels the user asks for: a species file (scientific or common names, or BirdNET's ``Sci_Common``
        lines, one per line) and the range model's species for a place and week."""
        o, found = self.options, []
        if o.species_file is not None:
            found += species_in(o.species_file, self.adapter.scientific, self.adapter.labels)
        if o.lat is not None and o.lon is not None:
            from naturelm_edge.teachers.birdnet import range_species

            found += range_species(o.lat, o.lon, o.week if o.week is not None else -1)
        return sorted(set(found))


def species_in(path: Path, scientific: list[str], common: list[str]) -> list[int]:
    """The teacher's indices of the species named in ``path``; names it does not know are refused together."""
    index = {name.lower(): i for names in (scientific, common) for i, name in enumerate(names)}
    index.update({f"{s}_{c}".lower(): i for i, (s, c) in enumerate(zip(scientific, common))})
    try:
        names = [line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as err:
        raise EdgeError(f"{path}: cannot read the species list ({err}).") from err
    names = [n for n in names if n]
    unknown = [n for n in names if n.lower() not in index]
    if unknown:
        raise EdgeError(f"{path}: {len(unknown)} species the teacher does not know ({', '.join(unknown[:5])}); use its "
                        "scientific or common names.")
    return [index[n.lower()] for n in names]


def _answers_key(b: State) -> str:
    o = b.options
    return digest(b.adapter.identity, b.audio_key, asdict(b.teacher.training_spec), asdict(b.teacher.fbank),
                  o.encoder_views, o.seed)


def _answers(b: State) -> dict:
    from naturelm_edge.distill.scores import collect_scores

    o = b.options
    counts = collect_scores(b.adapter, o.audio, b.cache, b.teacher.training_spec, b.teacher.fbank, o.encoder_views,
                            o.seed, b.progress, ray=o.ray, workers=o.workers)
    # each unreadable recording was named as it was skipped; the manifest keeps how many
    return counts | {"unreadable": len(counts["unreadable"]), "views": o.encoder_views}


def _config(b: State):  # noqa: ANN202 - distill.classifier.ClassifierConfig
    from naturelm_edge.distill.classifier import ClassifierConfig

    o = b.options
    return ClassifierConfig(arch=o.encoder_arch, epochs=o.encoder_epochs or ClassifierConfig.epochs,
                            patience=max(1, o.patience), seed=o.seed)


def _student_key(b: State) -> str:
    from naturelm_edge.distill.classifier import FIRST_EXPANSION, PRECEDENTS

    return digest(file_digest(b.cache / "recordings.json"), sorted(p.name for p in b.cache.glob("*.npz")),
                  asdict(_config(b)), b.asked(), b.options.encoder_views,
                  {"first_expansion": FIRST_EXPANSION, "precedents": PRECEDENTS})


def _student(b: State) -> dict:
    """The classifier fitted on the training recordings, judged on the validation ones, exported to ONNX."""
    from naturelm_edge.distill.classifier import kept_labels, precedents, train_classifier, with_support
    from naturelm_edge.distill.scores import load_scores
    from naturelm_edge.export.classifier import export_classifier

    views = b.options.encoder_views
    train, validation = load_scores(b.cache, "train", views), load_scores(b.cache, "validation", views)
    classes = kept_labels(train, b.adapter.animal, b.asked())
    net, summary = train_classifier(train, validation, classes, b.adapter.class_layer(), b.adapter.animal, _config(b),
                                    b.progress)
    examples, owners = precedents(net, train, classes, b.adapter.animal, seed=b.options.seed)
    b.student.mkdir(parents=True, exist_ok=True)
    export_classifier(with_support(net, examples, owners), b.student / MODEL, b.contract, b.adapter.identity["sha256"])
    kept = {"classes": classes, "labels": [b.adapter.labels[i] for i in classes],
            "scientific": [b.adapter.scientific[i] for i in classes], "training": summary,
            "config": asdict(_config(b)), "precedents": int(len(examples))}
    write_atomic(b.student / TRAINED, json.dumps(kept, indent=2) + "\n")
    return {"train_windows": summary["train_windows"], "epochs": summary["epochs"], "labels": len(classes)}


def _detector_config(b: State):  # noqa: ANN202 - detection.training.DetectorConfig
    """98 % of every kind of held-back call kept and 80 % of call-free windows refused, the screening targets
    the site-hours benchmark judges by (`edge detector train` asks 98 % of a site's own backgrounds; the
    teacher's call-free windows here are soundscapes of many sites, quiet stretches of focal clips included)."""
    from naturelm_edge.detection.training import DetectorConfig

    return DetectorConfig(skip=0.8, seed=b.options.seed)


def _detector_key(b: State) -> str:
    from naturelm_edge.detection.labels import CALL, CALL_FREE, UNJUDGED

    return digest(file_digest(b.cache / "recordings.json"), file_digest(b.cache / "meta.json"),
                  sorted(p.name for p in b.cache.glob("*-0.npz")), asdict(_detector_config(b)), asdict(b.contract.spec), asdict(b.contract.fbank), CALL, CALL_FREE,
                  UNJUDGED)


def _detector(b: State) -> dict:
    """The screening's detection stage, on the teacher's own verdict per window (a call, none, or undecided and
    left out) of the recordings the student is not judged on. A detector that misses its targets is left out of
    the bundle, and the build says why (the bundle then screens with the energy gate alone)."""
    from naturelm_edge.detection.labels import UNJUDGED, DetectorError, recordings_from_scores
    from naturelm_edge.detection.training import check_targets, export_detector, fit_detector

    spec, settings, config = b.contract.spec, b.contract.fbank, _detector_config(b)
    recordings = recordings_from_scores(b.cache, b.options.audio, spec, b.adapter.animal, UNJUDGED)
    trained, training = fit_detector(recordings, spec, settings, config, b.progress.note)
    b.detector.mkdir(parents=True, exist_ok=True)
    sizes = {"recordings": training["recordings"], "windows": training["windows"], "epochs": config.epochs}
    try:
        check_targets(trained, b.cache, "the bundle goes without a detector")
    except DetectorError as err:
        b.progress.note(f"detector left out: {err} (`edge detector train` adds one later)")
        (b.detector / DETECTOR).unlink(missing_ok=True)
        write_atomic(b.detector / DETECTOR_REPORT, json.dumps({"left_out": str(err)}, indent=2) + "\n")
        return sizes
    section = export_detector(trained, b.detector / DETECTOR, spec, settings)
    section["training"] = {"labels": str(b.cache), "labels_from": f"{b.teacher.name} verdicts", **training,
                           "roles": list(UNJUDGED)}
    write_atomic(b.detector / DETECTOR_REPORT, json.dumps({"section": section}, indent=2) + "\n")
    return sizes


def _detector_copies(b: State) -> tuple[dict, dict]:
    """The detector's file and manifest section for the bundle step, when the detector step kept one."""
    found = json.loads((b.detector / DETECTOR_REPORT).read_text())
    if "section" not in found:
        return {}, {}
    return {b.detector / DETECTOR: (roles.DETECTOR.file, roles.DETECTOR, "fp32")}, {"detector": found["section"]}


def _quantization_key(b: State) -> str:
    return digest(file_digest(b.student / MODEL), b.options.profile.precision[roles.ENCODER.name],
                  b.options.profile.quant_target, b.options.profile.calibration, b.options.calibration_windows,
                  b.options.threshold, ESCALATED_SHARE, RECALL, HELD_BACK, SUPPORT_MARGIN)


def _quantize(b: State) -> dict:
    """int8 (or the profile's precision) calibrated on the calibration recordings, then judged with the fp32
    student against the teacher on the evaluation recordings."""
    from naturelm_edge.distill.scores import read_split
    from naturelm_edge.quantization.calibration import ArrayReader, calibration_set, encoder_inputs
    from naturelm_edge.quantization.quantize import QuantSpec, quantize

    o, profile = b.options, b.options.profile
    split = read_split(b.cache)
    # a small folder may have no calibration recording: then the validation, else the training ones (said so)
    used = next((r for r in ("calibration", "validation", "train") if r in split.values()), "train")
    files = [o.audio / r for r, role in sorted(split.items()) if role == used]
    calibration = calibration_set(files, b.contract.spec, o.calibration_windows, where=f"{o.audio} ({used} "
                                  "recordings)", settings=b.contract.fbank)
    spec = QuantSpec(profile.precision[roles.ENCODER.name], profile.quant_target, profile.calibration)
    info = quantize(b.student / MODEL, b.quantized / MODEL, spec, ArrayReader(encoder_inputs(calibration)),
                    o.work / "calibration-ranges", calibration.digest())
    held = held_back(b, split)
    support = support_floor(b, held)
    report = {"precision": spec.label(), "quantization": info,
              "calibration": {"recordings": len(calibration.files), "windows": int(len(calibration.features)),
                              "role": used},
              "support": support, "escalation": escalation_point(b, held, support), **judged(b)}
    write_atomic(b.quantized / REPORT, json.dumps(report, indent=2, default=str) + "\n")
    return {"calibration_windows": int(len(calibration.features)),
            "evaluation_windows": report["evaluation"]["windows"]}


def _logits(model: Path, features: np.ndarray) -> np.ndarray:
    """A student's logits on a stack of fbank windows (32 a run)."""
    from naturelm_edge.quantization.report import session

    sess = session(model)
    return np.concatenate([sess.run(None, {"fbank": features[i:i + 32]})[0]
                           for i in range(0, len(features), 32)]) if len(features) else np.zeros((0, 0))


def held_back(b: State, split: dict[str, str]) -> HeldBack:
    """The :data:`HELD_BACK` recordings' windows as recorded (the training ones' when a small folder holds none
    back; ``split``: each recording's role): their roles, the quantized student's outputs and the teacher's
    answer (its class index, -1: nothing), read, run and named once for the support floor and the escalation
    threshold."""
    from naturelm_edge.distill.agreement import named
    from naturelm_edge.distill.scores import load_scores

    roles = tuple(r for r in HELD_BACK if r in split.values()) or ("train",)
    data = load_scores(b.cache, roles)
    recorded = data.views == 0
    return (roles, _logits(b.quantized / MODEL, data.features[recorded].astype(np.float32)),
            named(data.logits[recorded].astype(np.float32), b.options.threshold, b.adapter.animal))


def support_floor(b: State, held: HeldBack) -> dict:
    """The support floor: :data:`SUPPORT_MARGIN` under the lowest support among the held-back windows
    (:func:`held_back`) where the quantized student names the teacher's own species (None when it names none of
    them: no floor applies)."""
    from naturelm_edge.edge_runtime.scores import decisions

    kept = np.asarray(json.loads((b.student / TRAINED).read_text())["classes"])
    roles, logits, teacher = held
    found = {"floor": None, "windows": 0, "roles": list(roles), "margin": SUPPORT_MARGIN}
    if not len(logits):
        return found
    label, _ = decisions(logits, b.options.threshold, presence=True, support={"floor": None})
    right = (label >= 0) & (kept[np.maximum(label, 0)] == teacher)
    if right.any():
        found.update(floor=round(float(logits[right, -1].min()) - SUPPORT_MARGIN, 4), windows=int(right.sum()))
    return found


def escalation_point(b: State, held: HeldBack, support: dict) -> dict:
    """The bundle's escalation threshold, on the held-back recordings' windows (:func:`held_back`) with the
    decision's confidence as the runtime computes it (support floor included): above the sureness of all but
    ``1 - RECALL`` of the teacher's calls there that the quantized student calls silence, so that those
    escalate, and at least at the student's least sure :data:`ESCALATED_SHARE` of the windows."""
    from naturelm_edge.edge_runtime.scores import decisions

    roles, logits, teacher = held
    found = {"confidence_threshold": None, "windows": int(len(logits)), "roles": list(roles), "recall": RECALL,
             "share": ESCALATED_SHARE}
    if not len(logits):
        return found
    label, sure = decisions(logits, b.options.threshold, presence=True, support=support)
    calls = teacher >= 0
    silenced = np.sort(sure[calls & (label < 0)])[::-1]  # the calls lost unless the threshold is above them
    allowed = int(np.floor((1 - RECALL) * calls.sum()))
    # (a confidence is at most 1: a student certain of silence over too many calls escalates nearly everything)
    keeping = min(1.0, float(np.ceil((silenced[allowed] + 1e-6) * 1e4) / 1e4)) if len(silenced) > allowed else 0.0
    threshold = max(keeping, round(float(np.quantile(sure, ESCALATED_SHARE)), 4))
    kept = calls & ((label >= 0) | (sure < threshold))
    return found | {"confidence_threshold": threshold, "calls": int(calls.sum()),
                    "calls_kept": round(float(kept.sum() / calls.sum()), 4) if calls.any() else None,
                    "escalated": round(float(np.mean(sure < threshold)), 4)}


def judged(b: State) -> dict:
    """fp32 and quantized students against the teacher, on the evaluation recordings as they are (no views)."""
    from naturelm_edge.distill.agreement import agreement
    from naturelm_edge.distill.scores import load_scores

    kept = json.loads((b.student / TRAINED).read_text())
    data = load_scores(b.cache, "evaluation")
    original = data.views == 0
    features, teacher_logits = data.features[original].astype(np.float32), data.logits[original]
    figures: dict = {"evaluation": {"recordings": len(set(np.asarray(data.recordings)[original])),
                                    "windows": int(original.sum())}}
    for name, model in (("fp32", b.student / MODEL), ("quantized", b.quantized / MODEL)):
        labels = _logits(model, features)[:, :len(kept["classes"])]  # then the presence and support columns
        figures[name] = agreement(labels, teacher_logits, kept["classes"], b.adapter.animal, b.options.threshold)
    return figures


def finish(b: State) -> Path:
    """The bundle: the quantized student as its encoder, the teacher's labels, identity and licence."""
    from naturelm_edge.build.bundle_step import build_section, publish

    kept = json.loads((b.student / TRAINED).read_text())
    report = json.loads((b.quantized / REPORT).read_text())
    b.summary["report"], b.summary["table"] = report, table(report)
    profile, contract = b.options.profile, b.contract
    copies = {b.quantized / MODEL: (roles.ENCODER.file, roles.ENCODER, report["precision"]),
              b.student / TRAINED: (roles.REPORT.file + "classifier.json", roles.REPORT, None),
              b.quantized / REPORT: (roles.REPORT.file + "quantization.json", roles.REPORT, None)}
    detector_copies, detector_fields = _detector_copies(b)
    return publish(b, f"{b.teacher.name}-{profile.name}", {**copies, **detector_copies}, dict(
        source_checkpoint={"id": b.teacher.name, "sha256": b.adapter.identity["sha256"]},
        teacher={**b.adapter.identity, "licence_note": b.teacher.licence},
        audio=b.teacher.audio_section({"time_expansion": contract.time_expansion}),
        answers={"kind": roles.SCORES, "threshold": b.options.threshold, "question": "species",
                 "scientific": kept["scientific"], "presence": True,
                 "support": {"floor": report["support"]["floor"], "precedents": kept["precedents"]}},
        labels=kept["labels"],
        escalation=report["escalation"],
        encoder={"kind": "student", "arch": kept["config"]["arch"], "parameters": kept["training"]["parameters"],
                 "stopped": kept["training"]["stopped"], "fidelity": {k: report[k] for k in ("fp32", "quantized")}},
        reports={"quantization": {"precision": report["precision"], "evaluation": report["evaluation"]}},
        build=build_section(b, STEPS),
        **detector_fields,
    ))


def _cell(figure: dict) -> str:
    if figure["share"] is None:
        return "n/a (0 windows)"
    low, high = figure["ci95"]
    return f"{figure['share']:.1%} [{low:.1%}, {high:.1%}] of {figure['count']}"


def table(report: dict) -> str:
    """The report as a user reads it: how often each student answers as the teacher on unseen recordings."""
    lines = [f"against the teacher on {report['evaluation']['windows']} windows of "
             f"{report['evaluation']['recordings']} evaluation recordings (95 % Wilson intervals):",
             "| student | same species | names a call where the teacher does | silent where the teacher is |",
             "|---|---|---|---|"]
    for name in ("fp32", report["precision"]):
        figures = report["fp32" if name == "fp32" else "quantized"]
        lines.append(f"| {name} | {_cell(figures['species'])} | {_cell(figures['detection_recall'])} | "
                     f"{_cell(figures['quiet_kept_quiet'])} |")
    return "\n".join(lines)


STEPS: tuple[Step, ...] = (
    Step("teacher answers", _answers_key, lambda b: [b.cache / "recordings.json"], _answers),
    Step("student classifier", _student_key, lambda b: [b.student / MODEL, b.student / TRAINED], _student),
    Step("quantization", _quantization_key, lambda b: [b.quantized / MODEL, b.quantized / REPORT], _quantize),
    Step("detector", _detector_key, lambda b: [b.detector / DETECTOR_REPORT], _detector),
)
