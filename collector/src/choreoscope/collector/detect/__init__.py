"""Anomaly detectors: one module per kind, each writing to the anomalies table."""
