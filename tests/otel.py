"""Telemetry read back in tests: the app's instruments and spans bound to an in-memory metric reader and span
exporter (OpenTelemetry's own SDK), so a test reads the values the app recorded, as an exporter would."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.telemetry import metrics, tracing


class Telemetry:
    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    @classmethod
    @contextmanager
    def bound(cls) -> Iterator[Telemetry]:
        telemetry = cls()
        metrics.bind(telemetry.meter_provider)
        tracing.bind(telemetry.tracer_provider)
        metrics.GAUGES.snapshot = None
        try:
            yield telemetry
        finally:
            metrics.GAUGES.snapshot = None
            metrics.bind(None)
            tracing.bind(None)
            telemetry.meter_provider.shutdown()
            telemetry.tracer_provider.shutdown()

    def points(self, name: str) -> list[Any]:
        """Every data point of instrument ``name`` collected now (observable gauges are called)."""
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def _matching(self, name: str, attributes: dict[str, Any]) -> list[Any]:
        return [p for p in self.points(name) if all(p.attributes.get(k) == v for k, v in attributes.items())]

    def value(self, name: str, **attributes: Any) -> float:
        """The sum over the points whose attributes include ``attributes``: a counter's count, a gauge's value,
        a histogram's sum."""
        total = 0.0
        for point in self._matching(name, attributes):
            total += point.sum if isinstance(point, HistogramDataPoint) else point.value
        return total

    def count(self, name: str, **attributes: Any) -> int:
        """How many values a histogram recorded (over the matching points)."""
        return sum(p.count for p in self._matching(name, attributes) if isinstance(p, HistogramDataPoint))

    def attributes(self, name: str) -> list[dict[str, Any]]:
        return [dict(p.attributes) for p in self.points(name) if isinstance(p, (NumberDataPoint, HistogramDataPoint))]

    def spans(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    def by(self, name: str, key: str, **attributes: Any) -> dict[str, float]:
        """Instrument ``name``'s values summed per value of attribute ``key`` (among points matching ``attributes``)."""
        found: dict[str, float] = {}
        for point in self._matching(name, attributes):
            label = str(point.attributes.get(key))
            found[label] = found.get(label, 0) + (point.sum if isinstance(point, HistogramDataPoint) else point.value)
        return {label: value for label, value in found.items() if value}

    def work_items(self, template: str) -> dict[str, float]:
        """What the queue worker did with a template's work items (``loyaltysync.work_items`` by outcome)."""
        return self.by("loyaltysync.work_items", "outcome", template=template)

    def callbacks(self, template: str) -> dict[str, float]:
        """A template's callbacks by result (``loyaltysync.callbacks``)."""
        return self.by("loyaltysync.callbacks", "result", template=template)
