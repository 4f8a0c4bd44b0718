"""Benchmarks of the modellens service: the cost of telemetry and ML monitoring, measured side by side."""
