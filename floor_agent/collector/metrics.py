"""Prometheus metrics of the collector, rendered from its counters and the store.

The database's reachability comes first and needs no database: while it is away, the
families read from the store are left out and the rest is still served."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector as MetricSource

from floor_agent.collector import database_health as db_health
from floor_agent.collector.camera_lag import camera_lags
from floor_agent.store.interface import StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Iterator

    from floor_agent.collector.core import Collector
    from floor_agent.collector.database_watch import DatabaseWatch


class _CollectorMetrics(MetricSource):
    def __init__(self, collector: Collector, database: DatabaseWatch | None = None) -> None:
        self.collector = collector
        self.database = database

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        if self.database is not None:
            state, now = self.database.state, time.time()
            yield GaugeMetricFamily("floor_collector_database_up",
                                    "1 when the collector's database answers, 0 during an "
                                    "outage", value=int(state.up))
            yield GaugeMetricFamily("floor_collector_database_down_seconds",
                                    "Seconds the current database outage has lasted (0 "
                                    "while up)", value=db_health.down_seconds(state, now))
            yield CounterMetricFamily("floor_collector_database_outages",
                                      "Database outages seen since the collector started",
                                      value=state.outages)
        yield from self._counted()
        try:
            families = list(self._stored())
        except StoreUnavailable as exc:
            if self.database is not None:
                self.database.failed(exc)
            return
        yield from families

    def _counted(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """This process's counters: no database needed."""
        counters = self.collector.counters
        batches = CounterMetricFamily("floor_ingest_batches", "Ingest batches by result",
                                      labels=["result"])
        for result in ("accepted", "rejected", "malformed"):
            batches.add_metric([result], counters.get(f"batch_{result}", 0))
        yield batches
        yield CounterMetricFamily("floor_ingest_events_stored", "Events stored by ingest",
                                  value=counters.get("events_stored", 0))
        raised = CounterMetricFamily("floor_alerts_raised", "Alerts raised by kind",
                                     labels=["kind"])
        for key, value in sorted(counters.items()):
            if key.startswith("alert_"):
                raised.add_metric([key.removeprefix("alert_")], value)
        yield raised

    def _stored(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """What the store holds (every collector on the database sees the same)."""
        stats = self.collector.store.stats()
        yield GaugeMetricFamily("floor_agents_enrolled", "Enrolled agents", value=stats["agents"])
        yield GaugeMetricFamily("floor_events_in_store", "Events in the store",
                                value=stats["events"])
        open_alerts = GaugeMetricFamily("floor_alerts_open", "Unacknowledged alerts by kind",
                                        labels=["kind"])
        for kind, count in sorted(stats["open_alerts"].items()):
            open_alerts.add_metric([kind], count)
        yield open_alerts
        outbox = GaugeMetricFamily(
            "floor_notifications", "Notifications in the outbox by channel and state "
            "(pending: not yet taken by the receiver; folded: waiting for a digest)",
            labels=["channel", "state"])
        for (channel, state), count in sorted(self.collector.store.notification_counts().items()):
            outbox.add_metric([channel, state], count)
        yield outbox
        yield from _camera_metrics(self.collector)


def _camera_metrics(collector: Collector) -> Iterator[GaugeMetricFamily]:
    """Each camera's lag (issue 22), from its box's newest cctv.segment / cctv.lagging /
    cctv.analysis_shed events (collector/camera_lag.py)."""
    labels = ["agent_id", "camera"]
    lag = GaugeMetricFamily(
        "floor_cctv_lag_seconds", "How far behind real time each camera's last written packet "
        "was, as its box last reported (every segment, and at each lag alarm)", labels=labels)
    lagging = GaugeMetricFamily(
        "floor_cctv_lagging", "1 while a camera is lagging (cctv.lagging, until "
        "cctv.lag_recovered)", labels=labels)
    shed = GaugeMetricFamily(
        "floor_cctv_analysis_shed", "1 while a camera's motion and tamper analysis is shed to "
        "key frames (cctv.analysis_shed, until cctv.analysis_restored); recording is never shed",
        labels=labels)
    for (agent_id, camera), figure in camera_lags(collector.store.latest_states()).items():
        if figure.seconds is not None:
            lag.add_metric([agent_id, camera], figure.seconds)
        lagging.add_metric([agent_id, camera], int(figure.lagging))
        shed.add_metric([agent_id, camera], int(figure.analysis_shed))
    yield lag
    yield lagging
    yield shed


def render_metrics(collector: Collector,
                   database: DatabaseWatch | None = None) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    registry.register(_CollectorMetrics(collector, database))
    return generate_latest(registry), CONTENT_TYPE_LATEST
