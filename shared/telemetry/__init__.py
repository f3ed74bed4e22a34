"""OpenTelemetry metrics and traces (docs/operations.md: Metrics and traces).

``setup`` turns the Azure Monitor exporter on when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set (and
only then); ``metrics`` holds every instrument and the small functions the sync calls to record on them;
``tracing`` the three spans (``sync.run``, ``sync.range``, ``sync.callback``); ``sampling`` reads the
backlog, parked counts and watermark ages from storage for the observable gauges. A low layer: it imports
only ``shared.observability`` (``sampling`` also reads ``shared.state``; tests/shared/test_layers.py holds it
there)."""
