"""evaluator_iot: threshold alert rules over new telemetry, woken by LISTEN, backed by polling."""
