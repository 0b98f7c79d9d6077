"""``edge-run``: the field command (files, folders, a watched folder, stdin or a microphone)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer

from naturelm_edge.cli.common import ProfilesDir, console, err_console, read_token, user_errors, web_address
from naturelm_edge.cli.paths import existing_file, existing_folder, existing_paths, output_folder

run_app = typer.Typer(help="Run on-device detection on recordings or a live stream.", add_completion=False,
                      pretty_exceptions_enable=False)


Recordings = Annotated[list[Path] | None, typer.Argument(
    help="Recordings or folders (recursive); a shell glob such as /media/card/*.WAV works.", show_default=False)]
Inputs = Annotated[list[str] | None, typer.Option("--input", help="Recordings or folders (recursive), or network "
                                          "streams (rtsp://, http(s)://); the paths after it count too "
                                          "(--input /media/card/*.WAV).")]
DetectorThreshold = Annotated[float | None, typer.Option(
    help="Detector score a window needs to reach the encoder; default: the bundle's (set for its recall target).")]
Privacy = Annotated[str | None, typer.Option(help="Windows where people talk: drop (no audio kept), mask (speech "
                                          "zeroed, the rest answered) or off; default: the site's, else drop.")]
Site = Annotated[Path | None, typer.Option(help="Site rules (TOML); default: BUNDLE/site.toml, then "
                                           "/etc/naturelm-edge/site.toml.")]
ClipsMaxMb = Annotated[float | None, typer.Option(
    help="Keep the clip folder under this size (oldest clips go first; the newest 10 per label stay).")]
Explain = Annotated[Path | None, typer.Option(help="Print why each window of this recording was dropped or "
                                           "answered (from --out's events.db) and exit.")]


@run_app.command()
@user_errors
def edge_run(
    recordings: Recordings = None,
    bundle: Annotated[Path | None, typer.Option("--bundle", help="Bundle directory or .tar (verified before any audio).")] = None,
    inputs: Inputs = None,
    stdin: Annotated[bool, typer.Option("--stdin", help="Raw S16_LE PCM on stdin (arecord | edge-run --stdin).")] = False,
    mic: Annotated[bool, typer.Option("--mic", help="Capture from a microphone (PortAudio).")] = False,
    watch: Annotated[Path | None, typer.Option(help="Folder a recorder drops files into; each is read once complete.")] = None,
    idle_exit: Annotated[float | None, typer.Option(help="With --watch: exit after this many seconds without new files.")] = None,
    device: Annotated[str | None, typer.Option(help="Input device index or name substring (default: the first).")] = None,
    list_devices: Annotated[bool, typer.Option("--list-devices", help="List input devices and exit.")] = False,
    max_seconds: Annotated[float | None, typer.Option(help="Stop live capture after this much audio.")] = None,
    rate: Annotated[int, typer.Option(help="Sample rate of --stdin.")] = 48000,
    channels: Annotated[int, typer.Option(help="Channels of --stdin.")] = 1,
    profile: Annotated[str | None, typer.Option(help="Device profile; default: the detected device.")] = None,
    profiles_dir: ProfilesDir = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder (events.db, JSONL, CSV, Raven).")] = Path("edge-run-out"),
    escalate: Annotated[str | None, typer.Option(help="URL of the full model, 'queue' or 'off'; default: the profile's.")] = None,
    token_file: Annotated[Path | None, typer.Option(help="Bearer token for --escalate URL.")] = None,
    time_expansion: Annotated[float | None, typer.Option(help="Slow ultrasonic audio N times (bats: 10).")] = None,
    no_gate: Annotated[bool, typer.Option("--no-gate", help="Send every window to the models.")] = False,
    gate_margin_db: Annotated[float | None, typer.Option(
        help="How far above the noise floor (dB) a window must reach [default: the gate's, 10]")] = None,
    no_detector: Annotated[bool, typer.Option("--no-detector", help="Skip the bundle's detection stage.")] = False,
    detector_threshold: DetectorThreshold = None,
    threshold: Annotated[float | None, typer.Option(help="Escalate answers below this confidence.")] = None,
    drain: Annotated[float, typer.Option(help="Files: at the end, send queued escalations for up to N s.")] = 60.0,
    privacy: Privacy = None,
    site: Site = None,
    check: Annotated[bool, typer.Option("--check", help="With --site: validate the site rules and exit.")] = False,
    clips_max_mb: ClipsMaxMb = None,
    trusted_keys: Annotated[Path | None, typer.Option(help="Only accept bundles signed by these keys.")] = None,
    self_test: Annotated[bool, typer.Option("--self-test", help="Check bundle, profile and providers; print a verdict.")] = False,
    install_service: Annotated[bool, typer.Option("--install-service", help="Write a systemd unit running this command.")] = False,
    service_path: Annotated[Path, typer.Option(help="Where --install-service writes the unit.")] = Path("/etc/systemd/system/naturelm-edge.service"),
    explain: Explain = None,
    web: Annotated[str | None, typer.Option(help="Serve the station dashboard and /metrics from this run at HOST:PORT.")] = None,
    web_token_file: Annotated[Path | None, typer.Option(help="Token for --web on an address other than localhost.")] = None,
    mqtt: Annotated[str | None, typer.Option(help="Publish events to this MQTT broker (mqtt://, mqtts://HOST[:PORT]).")] = None,
    mqtt_topic: Annotated[str, typer.Option(help="Topic prefix of --mqtt.")] = "naturelm-edge",
    mqtt_token_file: Annotated[Path | None, typer.Option(help="MQTT credentials: one line USER:PASSWORD.")] = None,
    mqtt_ca: Annotated[Path | None, typer.Option(help="CA certificate of an mqtts:// broker (default: the system's).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run's summary as JSON (for scripts).")] = False,
) -> None:
    """Stream audio through the gate and the on-device models; escalate when unsure; never lose an event."""
    if one_off(install_service, service_path, list_devices, explain, out):
        return
    from naturelm_edge.device_profiles import detect, get
    from naturelm_edge.edge_runtime.clips import RetentionPolicy
    from naturelm_edge.edge_runtime.gate import GateSettings
    from naturelm_edge.edge_runtime.runner import Runner, RunOptions
    from naturelm_edge.edge_runtime.settings import RunFlags
    from naturelm_edge.errors import EdgeError

    loaded, rules = open_bundle(bundle, trusted_keys, site, check)
    if check:
        return
    chosen = get(profile, profiles_dir) if profile else detect(extra_dir=profiles_dir)
    outlets = Outlets(web, web_token_file, mqtt, mqtt_topic, mqtt_token_file, mqtt_ca)
    urls, inputs = split_inputs(inputs, recordings)
    check_paths(out, inputs, recordings, watch, {"--token-file": token_file, **outlets.files()}, self_test)
    if self_test:
        run_self_test(loaded, chosen)
        return
    inputs = [*(inputs or []), *(recordings or [])]
    if sum([bool(inputs or urls), stdin, mic, watch is not None]) != 1:
        raise EdgeError("give one of --input PATH (files, folders or stream URLs), --watch DIR, --stdin or --mic.")
    gate = GateSettings(enabled=not no_gate, **({} if gate_margin_db is None else {"margin_db": gate_margin_db}))
    options = RunOptions(out, RunFlags(escalate, threshold, privacy, time_expansion),
                         read_token(token_file) if token_file else None, gate, quiet=quiet, detector=not no_detector,
                         detector_threshold=detector_threshold, retention=RetentionPolicy(max_mb=clips_max_mb),
                         site=rules, drain_s=drain if inputs else 0.0)
    runner = Runner(loaded, chosen, options, err_console)
    expansion = runner.settings.time_expansion
    microphone = open_microphone(device, runner.spec.sample_rate, max_seconds, expansion) if mic else None
    sources = make_sources(runner.spec, expansion, inputs, microphone, (rate, channels) if stdin else None, watch,
                           idle_exit)
    print_notes(runner.summary, loaded, runner.settings.privacy)
    summary, streams = run_with(runner, outlets, sources, urls, expansion)
    print_summary(summary, out, microphone, as_json, streams)


def run_with(runner, outlets: Outlets, sources, urls: list[str], expansion: float):  # noqa: ANN001, ANN201
    """The run, with its network streams read at once and the station and MQTT beside it; the summary and
    each stream's health."""
    from naturelm_edge.edge_runtime.network import NetworkStream

    streams = [NetworkStream(url, runner.spec, expansion, console=err_console) for url in urls]
    together = [stream.sources() for stream in streams]
    with attached(runner, outlets) as live:
        if live is not None:
            sources = (live.tee(source) for source in sources)
            together = [(live.tee(source) for source in stream) for stream in together]
            live.streams = {stream.url: stream.health for stream in streams}
        summary = runner.run(sources, together, [stream.stop for stream in streams])
    return summary, {stream.url: stream.health for stream in streams}


def one_off(install_service: bool, service_path: Path, list_devices: bool, explain: Path | None, out: Path) -> bool:
    """The modes that do one thing and exit (a systemd unit, the input devices, a recording explained)."""
    if install_service:
        write_service(service_path)
    elif list_devices:
        print_devices()
    elif explain is not None:
        print_explanation(out, explain)
    else:
        return False
    return True


def split_inputs(inputs: list[str] | None, recordings: list[Path] | None) -> tuple[list[str], list[Path]]:
    """``--input`` values: network stream URLs, and paths (never both kinds with recordings in one run)."""
    from naturelm_edge.edge_runtime.network import is_stream
    from naturelm_edge.errors import EdgeError

    urls = [i for i in inputs or [] if is_stream(i)]
    paths = [Path(i) for i in inputs or [] if not is_stream(i)]
    if urls and (paths or recordings):
        raise EdgeError("give network streams or recordings, not both: a stream never ends, the files would wait.")
    return urls, paths


@dataclass
class Outlets:
    """Where a run shows and sends what it finds besides its output folder: the station, an MQTT broker."""

    web: str | None
    web_token_file: Path | None
    mqtt: str | None
    mqtt_topic: str
    mqtt_token_file: Path | None
    mqtt_ca: Path | None

    def files(self) -> dict[str, Path | None]:
        return {"--web-token-file": self.web_token_file, "--mqtt-token-file": self.mqtt_token_file,
                "--mqtt-ca": self.mqtt_ca}


@contextmanager
def attached(runner, outlets: Outlets) -> Iterator:  # noqa: ANN001 - Runner
    """The station (``--web``) and the MQTT publisher (``--mqtt``) beside the run; yields the live state.

    Both run in threads of their own: a dead broker or a broken page never stops detection.
    """
    web, mqtt = outlets.web, outlets.mqtt
    if web is None and mqtt is None:
        yield None
        return
    from naturelm_edge.station.live import LiveState

    live = LiveState(runner.summary, runner.spec.sample_rate, runner.bundle.id, runner.profile.name,
                     runner.options.retention.max_mb)
    runner.pipeline.timed = live.timed
    closers = []
    if web is not None:
        from naturelm_edge.station.server import Station

        token = read_token(outlets.web_token_file) if outlets.web_token_file else None
        station = Station(runner.options.out, *web_address(web), token, live).start()
        err_console.print(f"station: {station.url}")
        closers.append(station.close)
    if mqtt is not None:
        from naturelm_edge.station.mqtt import MqttPublisher, read_credentials

        login = read_credentials(outlets.mqtt_token_file) if outlets.mqtt_token_file else None
        publisher = MqttPublisher(runner.options.out / "events.db", mqtt, outlets.mqtt_topic, live, login,
                                  outlets.mqtt_ca, err_console).start()
        closers.append(publisher.close)
    try:
        yield live
    finally:
        for close in closers:
            close()


def open_microphone(device: str | None, sample_rate: int, max_seconds: float | None, expansion: float):  # noqa: ANN201
    from naturelm_edge.edge_runtime.microphone import Microphone

    return Microphone(device, sample_rate, max_seconds=max_seconds, time_expansion=expansion)


def print_devices() -> None:
    from naturelm_edge.edge_runtime.microphone import list_devices

    for d in list_devices():
        console.print(f"{d.index:3d}  {d.name}  ({d.channels} channels, {d.rate} Hz)", highlight=False)


def check_paths(out: Path, inputs: list[Path] | None, recordings: list[Path] | None, watch: Path | None,
                files: dict[str, Path | None], self_test: bool) -> None:
    """Every path this run needs, checked before the first window (nothing half-done on a bad argument);
    ``files``: option -> a file it names (token files, a CA certificate)."""
    existing_paths([*(inputs or []), *(recordings or [])], "--input")
    if watch is not None:
        existing_folder(watch, "--watch")
    for option, path in files.items():
        if path is not None:
            existing_file(path, option)
    if not self_test:
        output_folder(out, "--out")


def open_bundle(path: Path | None, trusted_keys: Path | None, site: Path | None, check: bool):  # noqa: ANN201
    """The bundle (None for a bare ``--site FILE --check``) and the site rules in force, warnings printed;
    with ``check``, say the rules are valid."""
    from naturelm_edge.bundle.open import load_bundle
    from naturelm_edge.edge_runtime.site import load_site
    from naturelm_edge.errors import EdgeError

    if path is None and not check:
        raise EdgeError("give --bundle DIR (a bundle from `edge build`).")
    if check and site is None:
        raise EdgeError("--check validates a site file: give --site FILE.")
    bundle = load_bundle(path, trusted_keys) if path is not None else None
    rules = load_site(site, bundle.labels if bundle else [], bundle.root if bundle else None)
    for warning in rules.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if check:
        console.print(f"{rules.source}: valid ({len(rules.allow)} allowed, {len(rules.deny)} denied, "
                      f"{len(rules.thresholds)} thresholds, {len(rules.actions)} actions, confirm "
                      f"{rules.confirm_count} within {rules.confirm_within_s:g} s, privacy {rules.privacy or 'drop'}, "
                      f"site floor {floor_summary(rules.floor)})")
    return bundle, rules


def floor_summary(floor) -> str:  # noqa: ANN001 - SiteFloor or None
    """'off', 'default', or the settings that differ from the default's."""
    from dataclasses import fields

    from naturelm_edge.edge_runtime.detector import DEFAULT_FLOOR

    if floor is None:
        return "off"
    changed = [f"{f.name}={getattr(floor, f.name):g}" for f in fields(floor)
               if getattr(floor, f.name) != getattr(DEFAULT_FLOOR, f.name)]
    return ", ".join(changed) or "default"


def print_notes(summary, bundle, privacy: str) -> None:  # noqa: ANN001 - Summary, Bundle
    """What a user should know before the first window: providers missing here, a bundle from a tiny checkpoint,
    a privacy filter turned off."""
    if summary.missing_providers:
        err_console.print(f"[yellow]note:[/yellow] {', '.join(summary.missing_providers)} not available here; "
                          f"running on {', '.join(summary.providers)}", highlight=False)
    if "tiny" in str(bundle.manifest.get("source_checkpoint", {}).get("id", "")):
        err_console.print("[yellow]note: this bundle comes from a tiny checkpoint; its answers mean little[/yellow]")
    if privacy == "off":
        err_console.print("[yellow]note:[/yellow] privacy filter off: windows where people talk are answered, "
                          "clipped and escalated like any other", highlight=False)


def make_sources(spec, expansion: float, inputs: list[Path], microphone, stdin: tuple[int, int] | None,  # noqa: ANN001
                 watch: Path | None, idle_exit: float | None):  # noqa: ANN201 - iterable of Source
    """The one kind of source asked for: the microphone, stdin (rate, channels), a watched folder, or recordings."""
    from naturelm_edge.edge_runtime.sources import file_sources, stdin_source

    if microphone is not None:
        from naturelm_edge.edge_runtime.microphone import mic_source

        return [mic_source(microphone)]
    if stdin is not None:
        return [stdin_source(spec, stdin[0], stdin[1], time_expansion=expansion)]
    if watch is not None:
        from naturelm_edge.edge_runtime.watch import FolderWatcher

        return FolderWatcher(watch, spec, expansion, poll_s=1.0, idle_exit_s=idle_exit).sources()
    return file_sources(inputs, spec, expansion)


def print_summary(summary, out: Path, microphone, as_json: bool, streams: dict) -> None:  # noqa: ANN001
    if as_json:
        print(json.dumps({**asdict(summary), "real_time_factor": summary.real_time_factor,
                          "events": str(out / "events.db"), "streams": {u: asdict(h) for u, h in streams.items()}},
                         indent=2))
        return
    console.print(
        f"windows {summary.windows} (resumed past {summary.resumed}), gated {summary.gated}, "
        f"people talking {summary.speech + summary.speech_masked} ({summary.speech} dropped, "
        f"{summary.speech_masked} masked), removed by site rules "
        f"{sum(summary.removed.values())} ({', '.join(f'{k} {v}' for k, v in sorted(summary.removed.items())) or '-'}), "
        f"not calls {summary.not_calls}, already heard {summary.heard}, answered {summary.answered}, "
        f"escalated {summary.escalated} (delivered {summary.delivered}, queued {summary.queue}; "
        f"{summary.over_budget} more refused by the hourly budget), "
        f"failed files {len(summary.failed)}, clips saved {summary.clips_saved} (skipped {summary.clips_skipped}), "
        f"real-time factor {summary.real_time_factor:.3f} -> {out / 'events.db'}")
    if microphone is not None:
        stats = microphone.stats
        console.print(f"microphone {microphone.device.name if microphone.device else microphone.wanted}: "
                      f"{stats.seconds:.1f} s captured, {stats.overflows} overflows, {stats.reopens} reopens")
    for url, health in streams.items():
        console.print(f"stream {url}: {health.connections} connections, {health.drops} drops, "
                      f"{health.failed_attempts} failed attempts")


def print_explanation(out: Path, recording: Path) -> None:
    """Each window of ``recording`` in ``OUT/events.db``: outcome, gate level over its floor, detector score."""
    from naturelm_edge.cli.common import print_table
    from naturelm_edge.edge_runtime.store import EventStore
    from naturelm_edge.errors import EdgeError

    existing_file(out / "events.db", "--out (its events.db)")
    store = EventStore(out / "events.db")
    try:
        sources = store.sources()
        wanted = recording.resolve()
        matches = [s for s in sources if Path(s).resolve() == wanted] or [s for s in sources if Path(s).name == recording.name]
        if not matches:
            raise EdgeError(f"{recording}: no window of it in {out / 'events.db'}; run edge-run on it with --out {out}.")
        for source in matches:
            rows = []
            for row in store.explain(source):
                above = (row["level_db"] - row["floor_db"]) if row["level_db"] is not None else None
                rows.append([f"{row['offset_s']:.1f}", row["outcome"] or "(not recorded)",
                             *(f"{v:.1f}" if v is not None else "-" for v in (row["level_db"], row["floor_db"], above)),
                             *(f"{row[k]:.3f}" if row[k] is not None else "-" for k in ("detector_score",
                                                                                         "detector_threshold")),
                             row["answers"] or ""])
            print_table(["offset s", "outcome", "level dB", "floor dB", "above floor dB", "detector", "threshold",
                         "answer"], rows, title=source)
    finally:
        store.close()


def write_service(path: Path) -> None:
    """A systemd unit that runs this very edge-run command line (without the service options)."""
    import shlex
    from importlib import resources

    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if arg == "--install-service" or arg.startswith("--service-path="):
            continue
        if arg == "--service-path":
            skip = True
            continue
        args.append(str(Path(arg).resolve()) if Path(arg).exists() else arg)
    executable = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).name == "edge-run" else None
    command = [str(executable)] if executable else [sys.executable, "-c", "from naturelm_edge.cli import run_edge; run_edge()"]
    template = resources.files("naturelm_edge.edge_runtime").joinpath("naturelm-edge.service").read_text()
    unit = template.format(exec_start=shlex.join(command + args), workdir=Path.cwd())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(unit)
    console.print(f"wrote {path}; enable it with: sudo systemctl daemon-reload && sudo systemctl enable --now {path.stem}")


def run_self_test(bundle, profile) -> None:  # noqa: ANN001 - Bundle, Profile
    """Bundle verified (done by the caller), profile loaded, providers present, one window answered."""
    import numpy as np

    from naturelm_edge.audio import fbank
    from naturelm_edge.edge_runtime.engine import Engine
    from naturelm_edge.errors import EdgeError
    from naturelm_edge.sample_data import synthetic_soundscape

    engine = Engine(bundle, profile)
    audio = bundle.audio
    features = fbank(synthetic_soundscape(audio.spec.window_s, audio.spec.sample_rate), audio.fbank)
    started = time.perf_counter()
    result = engine.answer(engine.audio_tokens(features))
    elapsed = time.perf_counter() - started
    checks = [("bundle", True, f"{bundle.id}, {len(bundle.manifest['files'])} files verified"),
              ("profile", True, profile.name),
              ("providers", not engine.missing or len(engine.providers) > 0,
               f"running on {', '.join(engine.providers)}" + (f"; missing {', '.join(engine.missing)}" if engine.missing else "")),
              ("inference", bool(np.isfinite(result.answer.confidence_mean)),
               f"one window in {elapsed * 1000:.0f} ms, answer {result.answer.text!r}")]
    if engine.detector is not None:
        score = engine.detector.score(features, audio.spec.window)
        checks.append(("detector", bool(np.isfinite(score)),
                       f"score {score:.2f} on a synthetic soundscape (threshold {engine.detector.threshold:.2f})"))
    for name, ok, detail in checks:
        console.print(f"{'[green]ok[/green]' if ok else '[red]FAIL[/red]'}  {name}: {detail}", highlight=False)
    if not all(ok for _, ok, _ in checks):
        raise EdgeError("self-test failed.")
    console.print("self-test passed")
