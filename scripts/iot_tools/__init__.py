"""Project tooling shared by the chart tests, the service tests, the probe drill and the
benchmarks."""
