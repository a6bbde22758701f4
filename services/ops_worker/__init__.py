"""ops_worker: periodic database maintenance (devices gone silent, telemetry retention)."""
