"""Teacher answers on a Ray cluster, as a Ray Data pipeline whose last stage is the teacher as an actor pool.

units of work (recordings still to ask about) -> ``flat_map`` on CPU tasks (decode, resample, window: one row per
window still to ask) -> ``map_batches`` on a pool of actors, each holding the teacher once (``batch`` windows a
call; one GPU per actor when asked) -> rows streamed back to the driver, grouped (a recording's view, or one
window's tasks) and handed to the collector, which alone writes its cache.

A teacher on the CPU (no GPU asked) runs both stages in one actor per CPU instead (``flat_map`` over units on the
actor pool): its windows' samples (half a megabyte each at 48 kHz) then never cross the object store, and only
the answers travel; decoding and the teacher compete for the same cores either way.

The collectors (:mod:`naturelm_edge.distill.scores`, :mod:`naturelm_edge.distill.collect`) give the same three
functions to this route and to their single-process loop (which windows a unit has, what the teacher answers on
a batch of them, how a finished group is written), so both fill the same cache with the same answers.

What Ray guarantees: a task that dies is retried, an actor that dies is restarted and the blocks it held are
computed again from their lineage (Ray Data's fault tolerance), a node lost takes its work to the live ones.
What this adds: a group reaches the cache only when every one of its rows came back, in one atomic write by the
driver, keyed by recording and window; a row computed twice is dropped at the driver, and a driver killed and
started again lists only what the cache lacks, so every window is answered into the cache exactly once.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from naturelm_edge.errors import AudioError, EdgeError

Windows = Callable[[Any], Iterator[tuple[str, int, Any]]]  # unit -> (group, rows in the group, payload) per window
Answer = Callable[[list[Any]], list[Any]]  # payloads of a batch -> one result each (runs in the actors)


def connect(address: str, workers: int | None) -> None:
    """Join the cluster at ``address`` (``ray://...``, ``host:port`` or ``auto``), or start a Ray of its own on this
    machine with ``workers`` CPUs (``local``: a new one even where ``ray start`` runs a cluster here, which Ray
    would otherwise join)."""
    try:
        import ray
    except ImportError:
        raise EdgeError("--ray needs Ray: pip install 'naturelm-edge[cluster]'.") from None
    local = address == "local"
    ray.init(address=address, num_cpus=workers if local else None, include_dashboard=False, log_to_driver=False,
             ignore_reinit_error=True)


def remote_call(function: Callable[[Any], Any], argument: Any, gpus: float = 0.0) -> Any:  # noqa: ANN401
    """``function(argument)`` run once on the cluster (on a GPU node when ``gpus``): what the driver must know
    of a teacher it never loads itself."""
    import ray

    return ray.get(ray.remote(num_gpus=gpus or None)(function).remote(argument))


class _Windows:
    """The CPU stage: a unit's windows as rows (a unit that cannot be read is one row saying why)."""

    def __init__(self, windows: Windows) -> None:
        self.windows = windows

    def __call__(self, row: dict) -> Iterator[dict]:
        name, unit = pickle.loads(row["unit"])
        try:
            for index, (group, count, payload) in enumerate(self.windows(unit)):
                yield {"group": group, "index": index, "count": count, "payload": pickle.dumps(payload), "error": ""}
        except AudioError as err:
            yield {"group": name, "index": 0, "count": 0, "payload": b"", "error": str(err) or name}


def _unreadable(name: str, err: AudioError) -> dict:
    """An answered row saying why a unit could not be read (the columns :class:`_Teacher` returns)."""
    return {"group": name, "count": 0, "results": b"", "error": str(err) or name}


class _Teacher:
    """The actor stage: the teacher loaded once per actor, asked a batch of windows per call; each window comes
    back as a row of its own, its result as the one ``(index, result)`` pair of its ``results``."""

    def __init__(self, make: Callable[[], Answer]) -> None:
        self.answer = make()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        asked = [i for i, error in enumerate(batch["error"]) if not error]
        results = self.answer([pickle.loads(batch["payload"][i]) for i in asked])
        out = np.array([b""] * len(batch["error"]), dtype=object)
        for i, result in zip(asked, results):
            out[i] = pickle.dumps([(int(batch["index"][i]), result)])
        return {"group": batch["group"], "count": batch["count"], "error": batch["error"], "results": out}


class _Fused:
    """Both stages in one actor, for a teacher on the CPU: a unit's windows answered where they were cut, and a
    batch's answers of one group sent back as one row (``batch`` pairs): the samples are never pickled, and
    the driver receives a row per batch, not per window (measured: no faster on one worker than a row per
    window, within this machine's noise)."""

    def __init__(self, windows: Windows, make: Callable[[], Answer], batch: int) -> None:
        self.windows, self.answer, self.batch = windows, make(), batch

    def __call__(self, row: dict) -> Iterator[dict]:
        name, unit = pickle.loads(row["unit"])
        try:
            cut = list(self.windows(unit))
        except AudioError as err:
            yield _unreadable(name, err)
            return
        for start in range(0, len(cut), self.batch):
            part = cut[start:start + self.batch]
            pairs: dict[tuple[str, int], list] = {}
            for index, (group, count, _), result in zip(range(start, start + len(part)), part,
                                                        self.answer([payload for _, _, payload in part])):
                pairs.setdefault((group, count), []).append((index, result))
            for (group, count), found in pairs.items():
                yield {"group": group, "count": count, "results": pickle.dumps(found), "error": ""}


def answers_on_ray(units: list[tuple[str, Any]], windows: Windows, make_teacher: Callable[[], Answer],
                   batch: int, workers: int | None, gpus: float = 0.0) -> Iterator[tuple[str, list[Any] | str]]:
    """(group, the teacher's results in window order) for every group of ``units`` (named ``(name, unit)``), or
    (unit name, why it could not be read); groups come back as the cluster finishes them."""
    import logging

    import ray

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # the collector shows its own progress with an ETA
    ray.data.DataContext.get_current().enable_progress_bars = False
    pool = workers or max(1, int(ray.cluster_resources().get("GPU" if gpus else "CPU", 1)))
    rows = ray.data.from_items([{"unit": pickle.dumps(u)} for u in units], override_num_blocks=max(1, len(units)))
    if gpus:  # decoding on CPU tasks (half a CPU each, as before), the teacher on GPU actors fed by the object store
        answered = (rows.flat_map(_Windows(windows), num_cpus=0.5)
                    .map_batches(_Teacher, fn_constructor_args=(make_teacher,), batch_size=batch, batch_format="numpy",
                                 compute=ray.data.ActorPoolStrategy(size=pool), num_gpus=gpus, num_cpus=1))
    else:
        answered = rows.flat_map(_Fused, fn_constructor_args=(windows, make_teacher, batch),
                                 compute=ray.data.ActorPoolStrategy(size=pool), num_cpus=1)
    parts: dict[str, dict[int, Any]] = {}  # by window index: a row that came back twice counts once
    for row in answered.iter_rows():
        if row["error"]:
            yield row["group"], row["error"]
            continue
        found = parts.setdefault(row["group"], {})
        found.update(pickle.loads(row["results"]))
        if len(found) == row["count"]:
            yield row["group"], [found[i] for i in sorted(parts.pop(row["group"]))]
