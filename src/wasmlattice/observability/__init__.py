"""Traces, metrics and logs of the lattice (docs/observability.md).

A low layer (only the OpenTelemetry SDK and the standard library below it), so every part of the
host can record spans and measurements: the settings (`settings.py`, wasmCloud's flags and the
standard `OTEL_*` variables), tracing, metrics and the log correlation.
"""
