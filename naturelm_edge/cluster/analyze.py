"""``edge analyze``: a recorder archive through edge-run's window pipeline, on a Ray cluster when asked.

The unit of work is one recorder: its files in recorder-time order, through a window pipeline with a screening
state of its own (the gate's noise floor and the detector's site floor belong to a recorder, so a recorder
never spans two workers). Each recorder is a Ray task; a worker process keeps the bundle's onnxruntime
sessions across the tasks it runs (:func:`_pipeline`). The driver feeds each finished recorder's windows,
in order, to the same bookkeeping ``edge-run`` uses (:class:`naturelm_edge.edge_runtime.runner.Runner`: site
rules, the escalation decision with its budget per recorder, the event store, JSONL/CSV/Raven, clips), so an
analysis over the cluster stores what ``edge-run`` would, window for window.

What Ray guarantees: a task whose worker process or node dies is run again (``max_retries``) on a live one.
What this adds: a task's windows reach the store only once the whole task returned, in one process (the
driver), and every window is committed with its 'done' mark in one transaction keyed by (recording,
offset); windows already stored are sent to the workers as done and come back as resumed. A retried task
therefore lands once, and a driver killed and started again goes on from what is stored.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from naturelm_edge.cluster.answers import connect
from naturelm_edge.edge_runtime.pipeline import WindowResult
from naturelm_edge.edge_runtime.runner import Runner, Summary
from naturelm_edge.edge_runtime.sources import Source, file_sources
from naturelm_edge.errors import AudioError
from naturelm_edge.progress import Progress

RETRIES = 3  # a recorder whose workers die this many times is reported, not retried for ever


@dataclass(frozen=True)
class Recorder:
    """One recorder's files in order, and the windows of each already stored (its unit of work)."""

    name: str
    files: tuple[tuple[str, datetime | None], ...]
    done: tuple[tuple[str, tuple[float, ...]], ...]


@dataclass(frozen=True)
class Setup:
    """What a worker needs to run the window pipeline as the driver's ``edge-run`` settings say."""

    bundle: str
    profile: object  # device_profiles.Profile
    gate: object  # edge_runtime.gate.GateSettings
    privacy: str
    detector: bool
    detector_threshold: float | None
    site_floor: object  # edge_runtime.detector.SiteFloor or None (off), as the run's settings resolved it
    time_expansion: float
    keep_samples: bool  # clips or escalations need the windows' audio


_PIPELINES: dict[bytes, object] = {}  # per worker process: the sessions, loaded once per setup


def _pipeline(setup: Setup):  # noqa: ANN202 - WindowPipeline
    from naturelm_edge.bundle.open import load_bundle
    from naturelm_edge.edge_runtime.engine import Engine
    from naturelm_edge.edge_runtime.pipeline import WindowPipeline

    key = pickle.dumps(setup)
    if key not in _PIPELINES:
        engine = Engine(load_bundle(Path(setup.bundle)), setup.profile, setup.detector, setup.detector_threshold,
                        setup.site_floor)
        _PIPELINES[key] = WindowPipeline(engine, setup.gate, privacy=setup.privacy)
    return _PIPELINES[key]


def analyse_recorder(setup: Setup, recorder: Recorder) -> list[tuple[str, list[WindowResult] | str]]:
    """Every window of one recorder's files (in order, one screening state), or why a file could not be read."""
    from naturelm_edge.edge_runtime.sources import file_source

    pipeline = _pipeline(setup).fresh()
    spec, done = pipeline.audio.spec, dict(recorder.done)
    out: list[tuple[str, list[WindowResult] | str]] = []
    for path, start in recorder.files:
        source = file_source(Path(path), spec, setup.time_expansion, start)
        stored = set(done.get(source.id, ()))
        try:
            windows = [r if setup.keep_samples else replace(r, samples=None)
                       for r in pipeline.run(source, skip=lambda offset, s=stored: round(offset, 3) in s)]
            out.append((source.id, windows))
        except AudioError as err:
            out.append((source.id, str(err)))
    return out


def recorders(sources: list[Source], runner: Runner) -> list[Recorder]:
    """Sources grouped by recorder (a file of unknown origin is a recorder of its own), in time order."""
    grouped: dict[str, list[Source]] = {}
    for source in sources:
        grouped.setdefault(source.recorder or source.id, []).append(source)
    return [Recorder(name, tuple((s.id, s.start) for s in group),
                     tuple((s.id, tuple(sorted(runner.store.done_offsets(s.id)))) for s in group))
            for name, group in grouped.items()]


class ClusterRun:
    """The driver: recorders to Ray tasks, each finished one's sources handed to the runner as they come."""

    def __init__(self, runner: Runner, setup: Setup, address: str, workers: int | None,
                 progress: Progress) -> None:
        self.runner, self.setup, self.address, self.workers, self.progress = runner, setup, address, workers, progress
        self.results: dict[str, list[WindowResult] | str] = {}
        self.per_recorder: dict[str, dict[str, int]] = {}

    def windows_of(self, source: Source, skip=None) -> Iterator[WindowResult]:  # noqa: ANN001 - the runner's signature
        found = self.results.pop(source.id)
        if isinstance(found, str):
            raise AudioError(found)
        yield from found

    def sources(self, paths: list[Path]) -> Iterator[Source]:
        """The archive's sources, each recorder's in order, recorders in the order the cluster finishes them."""
        import ray

        spec = self.runner.spec
        every = file_sources(paths, spec, self.setup.time_expansion)
        by_id = {s.id: s for s in every}
        jobs = recorders(every, self.runner)
        connect(self.address, self.workers)
        task = ray.remote(num_cpus=1, max_retries=RETRIES)(analyse_recorder)
        setup = ray.put(self.setup)
        pending = {task.remote(setup, job): job for job in jobs}
        bar = self.progress.add_task("recorders", total=len(jobs))
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready)
            try:
                found = ray.get(ready)
            except (ray.exceptions.RayError, OSError) as err:
                found = [(path, f"{path}: not analysed, its workers failed {RETRIES + 1} times ({type(err).__name__})")
                         for path, _ in job.files]
            self.results.update(found)
            self.per_recorder[job.name] = {"files": len(job.files), **_counts(found)}
            self.progress.update(bar, advance=1)
            for path, _ in job.files:
                yield by_id[path]


def _counts(found: list[tuple[str, list[WindowResult] | str]]) -> dict[str, int]:
    windows = [w for _, ws in found if not isinstance(ws, str) for w in ws]
    return {"windows": len(windows), "answered": sum(w.answered for w in windows),
            "detections": sum(w.detection for w in windows), "unreadable": sum(isinstance(ws, str) for _, ws in found)}


def analyse(runner: Runner, paths: list[Path], address: str, workers: int | None,
            progress: Progress) -> tuple[Summary, dict[str, dict[str, int]]]:
    """The archive through ``runner``'s bookkeeping, its windows computed on a Ray cluster (``address``: an
    existing one, ``ray://...`` or ``auto``; ``local``: a Ray on this machine with ``workers`` CPUs)."""
    options, settings = runner.options, runner.settings
    setup = Setup(str(runner.bundle.root), runner.profile, options.gate, settings.privacy, options.detector,
                  options.detector_threshold, settings.site_floor, settings.time_expansion,
                  keep_samples=options.clips or settings.escalate != "off")
    cluster = ClusterRun(runner, setup, address, workers, progress)
    runner.windows_of = cluster.windows_of
    return runner.run(cluster.sources(paths)), cluster.per_recorder
