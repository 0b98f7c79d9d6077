"""``/metrics`` in Prometheus' text format: the store's counts always, the running process's when attached."""

from __future__ import annotations

from collections.abc import Iterator

from naturelm_edge.station.data import StationData, temperatures
from naturelm_edge.station.live import STAGE_BUCKETS, LiveState


def metrics_text(data: StationData, live: LiveState | None) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(data, live))
    return generate_latest(registry)


class _Collector:
    def __init__(self, data: StationData, live: LiveState | None) -> None:
        self.data, self.live = data, live

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        totals, disk = self.data.totals(), self.data.disk()
        bundle = (self.live.bundle_id if self.live else totals["bundle_id"]) or "unknown"
        profile = (self.live.profile if self.live else totals["profile"]) or "unknown"
        labels = ["bundle", "profile"]
        info = GaugeMetricFamily("naturelm_edge_info", "The bundle and device profile of this station.", labels=labels)
        info.add_metric([bundle, profile], 1)
        yield info
        windows = CounterMetricFamily("naturelm_edge_windows", "Windows recorded in the store.", labels=labels)
        windows.add_metric([bundle, profile], totals["windows"])
        yield windows
        gated = CounterMetricFamily("naturelm_edge_windows_gated", "Windows the gate dropped.", labels=labels)
        gated.add_metric([bundle, profile], totals["gated"])
        yield gated
        events = CounterMetricFamily("naturelm_edge_events", "Events by the stage that answered them.",
                                     labels=[*labels, "stage"])
        for stage, n in sorted(totals["events_by_stage"].items()):
            events.add_metric([bundle, profile, stage], n)
        yield events
        yield _gauge("naturelm_edge_escalation_queue", "Windows waiting for the full model.", totals["escalation_queue"])
        over = CounterMetricFamily("naturelm_edge_escalations_over_budget", "Windows that asked for the full model "
                                   "when their recorder's hourly budget was spent.", labels=labels)
        over.add_metric([bundle, profile], totals["over_budget"])
        yield over
        yield _gauge("naturelm_edge_clips_bytes", "Size of the clip folder.", disk["clips_bytes"])
        yield _gauge("naturelm_edge_disk_free_bytes", "Free space where the output folder lives.", disk["free_bytes"])
        temps = GaugeMetricFamily("naturelm_edge_temperature_celsius", "Thermal zones.", labels=["zone"])
        for zone, value in temperatures().items():
            temps.add_metric([zone], value)
        yield temps
        if self.live is None:
            return
        health = self.live.health()
        yield _gauge("naturelm_edge_uptime_seconds", "Seconds since edge-run started.", health["uptime_s"])
        yield _gauge("naturelm_edge_real_time_factor", "Processing time per second of audio.", health["real_time_factor"])
        yield _gauge("naturelm_edge_input_overflows", "Input blocks the audio device dropped.", health["overflows"])
        for name in ("refused", "speech", "answered", "escalated", "delivered"):
            yield _counter(f"naturelm_edge_windows_{name}", f"Windows {name} since edge-run started.", health[name])
        streams = CounterMetricFamily("naturelm_edge_stream", "Network input: connections, drops, failed attempts.",
                                      labels=["url", "kind"])
        for url, counts in health["streams"].items():
            for kind in ("connections", "drops", "failed_attempts"):
                streams.add_metric([url, kind], counts[kind])
        yield streams
        stages = HistogramMetricFamily("naturelm_edge_stage_seconds", "Time per pipeline stage and window.",
                                       labels=["stage"])
        with self.live.lock:
            snapshot = {k: list(v) for k, v in self.live.stages.items()}
        for stage, counts in sorted(snapshot.items()):
            buckets = [(str(bound), counts[i]) for i, bound in enumerate(STAGE_BUCKETS)] + [("+Inf", counts[-1])]
            stages.add_metric([stage], buckets, sum_value=counts[-2])
        yield stages


def _gauge(name: str, doc: str, value: float):  # noqa: ANN202
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float):  # noqa: ANN202
    from prometheus_client.core import CounterMetricFamily

    return CounterMetricFamily(name, doc, value=value)
