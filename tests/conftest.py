"""Shared test fixtures: the shared recordings, the reference fixtures, a tiny checkpoint."""

from __future__ import annotations

import os

# One thread of torch, BLAS and OpenMP per xdist worker (and the commands it starts): each worker has a core, and
# two workers whose thread pools each take every core spin against each other (measured: two `edge demo` runs at
# once take 320 s each with the default pools, 90 s each with one thread).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

import shutil  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from testbed.corpus import TASKS_TOML  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NATURELM_EDGE_SHARED", REPO.parent / "shared"))
AUDIO = SHARED / "data" / "audio"
FIXTURES = SHARED / "data" / "fixtures"


# the session chain: a taught teacher, then `edge build` on it; every test that needs one of these waits minutes
SLOW_FIXTURES = {"taught_teacher", "built_bundle", "student_bundle", "bundle", "detector_bundle", "proof", "rule_cache", "exported"}


# xdist hands whole files to the two workers in collection order (``--dist loadfile --no-loadscope-reorder``):
# the file that builds the session chain first (the taught teacher takes about 100 s of it); the other worker
# meanwhile runs files that need none of it (about 110 s), then the proof, which waits only for the taught
# teacher; then the detector's, the longest after the chain. xdist's own order (most tests first) sent the
# detector's file first, and its worker waited 2.5 minutes for the chain (measured). Every other file follows,
# most tests first.
FIRST = ("test_build_and_bundle.py", "test_real_teacher.py", "test_audio.py", "test_export_encoder.py",
         "test_distillation_learns.py", "test_detector.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that needs the session chain (``pytest -m "not slow"`` is the fast subset);
    order the files as :data:`FIRST` says."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    count: dict[str, int] = {}
    for item in items:
        count[item.path.name] = count.get(item.path.name, 0) + 1

    def rank(item: pytest.Item) -> tuple[int, int, str]:
        name = item.path.name
        return (FIRST.index(name), 0, name) if name in FIRST else (len(FIRST), -count[name], name)

    items.sort(key=rank)  # stable: tests keep their order within a file


IN_CI = os.environ.get("CI") == "true"
_skipped: list[str] = []  # "test id: reason" of every skipped test (the xdist controller sees every report)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append(f"{report.nodeid}: {reason.removeprefix('Skipped: ')}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI every part a test needs is installed (``.ci/run`` installs them), so a skip is a failure."""
    if IN_CI and _skipped and exitstatus == 0 and not os.environ.get("PYTEST_XDIST_WORKER"):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int) -> None:  # noqa: ANN001 - TerminalReporter
    """How many tests ran and how many skipped, and in CI, why a skip fails the run."""
    stats = terminalreporter.stats
    ran = sum(len(stats.get(kind, [])) for kind in ("passed", "failed", "error", "xfailed", "xpassed"))
    terminalreporter.write_line(f"tests: {ran} ran, {len(_skipped)} skipped" + (" (CI: a skip fails the run)"
                                                                             if IN_CI and _skipped else ""))
    for line in _skipped:
        terminalreporter.write_line(f"  skipped {line}")


def _require(path: Path) -> Path:
    if path.exists():
        return path
    if IN_CI:
        pytest.fail(f"{path} is missing; CI must run with the shared folder at ../shared")
    pytest.skip(f"{path} not available")


@pytest.fixture(scope="session")
def audio_dir() -> Path:
    return _require(AUDIO)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return _require(FIXTURES)


@pytest.fixture(scope="session")
def reference_io(fixtures_dir: Path) -> dict[str, np.ndarray]:
    with np.load(fixtures_dir / "reference_io.npz") as data:
        return {k: data[k] for k in data.files}


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """``make(folder)`` once per test run, however many xdist workers ask: the first builds under a file lock,
    the others wait and reuse it (the slow fixtures would otherwise be built once per worker)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    folder, done = root / "made-once" / name, root / "made-once" / f"{name}.done"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            make(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from naturelm_edge.models.tiny import write_tiny_checkpoint

    return made_once(tmp_path_factory, "tiny-checkpoint", lambda folder: write_tiny_checkpoint(folder, seed=0))


@pytest.fixture(scope="session")
def taught_teacher(tiny_checkpoint: Path, audio_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint taught species names on the shared recordings (answers mean something)."""
    from naturelm_edge.distill.teacher_training import finetune_teacher
    from testbed.corpus import QUESTION

    return made_once(tmp_path_factory, "taught-teacher",
                     lambda folder: finetune_teacher(tiny_checkpoint, audio_dir, folder, QUESTION, steps=1500))


@pytest.fixture(scope="session")
def subset_audio(audio_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight bird species (three clips each), a whale and a toad chorus, with their labels (copied to tmp)."""
    from testbed.corpus import labelled_subset

    def make(root: Path) -> None:
        labelled_subset(audio_dir, root)

    return made_once(tmp_path_factory, "subset-audio", make)


SMALL_STUDENT = ["--student-layers", "2", "--student-hidden", "128", "--student-heads", "4"]


@pytest.fixture(scope="session")
def built_bundle(subset_audio: Path, taught_teacher: Path, tmp_path_factory: pytest.TempPathFactory):
    """`edge build` run twice on the subset (the second run must skip every stage)."""

    def make(work: Path) -> None:
        from typer.testing import CliRunner

        from naturelm_edge.cli import app

        work.mkdir(parents=True)
        (work / "tasks.toml").write_text(TASKS_TOML)
        runner = CliRunner()
        for name in ("first", "again"):
            result = runner.invoke(app, build_args(work, subset_audio, taught_teacher))
            assert result.exit_code == 0, result.output
            (work / f"{name}.out").write_text(result.output)

    work = made_once(tmp_path_factory, "built-bundle", make)
    return (work, build_args(work, subset_audio, taught_teacher), (work / "first.out").read_text(),
            (work / "again.out").read_text())


def build_args(work: Path, audio: Path, teacher: Path, encoder: str = "full") -> list[str]:
    return ["build", str(teacher), "--audio", str(audio), "--out", str(work / "bundle"), "--profile", "x86-cpu",
            "--tasks", str(work / "tasks.toml"), "--encoder", encoder, *SMALL_STUDENT]


@pytest.fixture(scope="session")
def student_bundle(built_bundle, subset_audio: Path, taught_teacher: Path, tmp_path_factory: pytest.TempPathFactory):
    """`edge build` for x86-cpu as its profile asks (a student encoder), in a copy of the full build's work folder:
    (work, bundle, the build's output)."""
    work_full, *_ = built_bundle

    def make(work: Path) -> None:
        from typer.testing import CliRunner

        from naturelm_edge.cli import app

        shutil.copytree(work_full, work, ignore=shutil.ignore_patterns("bundle", "*.out"), symlinks=True)
        args = [a for a in build_args(work, subset_audio, taught_teacher) if a not in ("--encoder", "full")]
        result = CliRunner().invoke(app, [*args, "--encoder-epochs", "3"])
        assert result.exit_code == 0, result.output
        (work / "student.out").write_text(result.output)

    work = made_once(tmp_path_factory, "student-bundle", make)
    return work, work / "bundle", (work / "student.out").read_text()


@pytest.fixture(scope="session")
def bundle(built_bundle) -> Path:
    """The tiny bundle `edge build` made for the x86 profile."""
    work, *_ = built_bundle
    return work / "bundle"
