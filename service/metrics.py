"""Prometheus metrics, in a registry of the app's own (several apps in one process stay apart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lrface_requests_total", "HTTP requests", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "lrface_request_seconds",
            "Request latency",
            ["route", "method"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.gallery_faces = Gauge("lrface_gallery_faces", "Faces in the gallery index", registry=self.registry)
        self.model = Info("lrface_model", "Served model", registry=self.registry)
