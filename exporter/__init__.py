"""Prometheus exporter for AWS HealthImaging image set versions."""
