"""Generic OpenTelemetry bootstrap for Flask services."""
