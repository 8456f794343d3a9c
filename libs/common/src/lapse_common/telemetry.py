"""OpenTelemetry setup: traces follow a request over gRPC and every Kafka hop."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import context, metrics, propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from lapse_common.settings import TelemetrySettings


def setup_telemetry(service_name: str, settings: TelemetrySettings) -> None:
    """Install tracer and meter providers; export over OTLP when an endpoint is set."""
    resource = Resource.create({"service.name": f"lapse-{service_name}"})
    tracer_provider = TracerProvider(resource=resource)
    readers: list[MetricReader] = []
    if settings.exporter_endpoint:
        # Imported here so a process without an exporter does not load the gRPC exporter.
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.exporter_endpoint, insecure=True))
        )
        readers.append(
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=settings.exporter_endpoint, insecure=True)
            )
        )
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))


def current_trace_context() -> str:
    """The current trace context as JSON, to store with a row a timer will act on later."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return json.dumps(carrier)


@contextmanager
def continued_trace(stored: str) -> Iterator[None]:
    """Make a stored trace context current, so work done later joins the original trace."""
    token = context.attach(propagate.extract(json.loads(stored or "{}")))
    try:
        yield
    finally:
        context.detach(token)
