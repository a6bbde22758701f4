"""The health kit every service composes: configuration, logging, probe state and server,
the process lifecycle, and the NATS and PostgreSQL connections with their readiness checks."""
