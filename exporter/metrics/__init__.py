"""Metric families built from the fleet view, the exporter's own metrics, and their exposition."""
