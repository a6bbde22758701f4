-- Devices the platform has heard from; ingest keeps last_seen, ops_worker marks them offline.
CREATE TABLE IF NOT EXISTS devices (
    device_id  text PRIMARY KEY,
    status     text NOT NULL DEFAULT 'online' CHECK (status IN ('online', 'offline')),
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);

-- One row per reading. (device_id, ts) identifies a reading, which makes redelivered and
-- re-sent messages idempotent.
CREATE TABLE IF NOT EXISTS telemetry (
    device_id   text NOT NULL,
    ts          timestamptz NOT NULL,
    metrics     jsonb NOT NULL,
    inserted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, ts)
);
-- BRIN: near-free to maintain on append-mostly data; serves retention and the evaluator.
CREATE INDEX IF NOT EXISTS telemetry_ts_brin ON telemetry USING brin (ts);
CREATE INDEX IF NOT EXISTS telemetry_inserted_at_brin ON telemetry USING brin (inserted_at);

-- Messages ingest could not accept, kept with the reason (acked, never retried).
CREATE TABLE IF NOT EXISTS quarantine (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream       text NOT NULL,
    stream_seq   bigint NOT NULL,
    subject      text NOT NULL,
    reason       text NOT NULL,
    payload      bytea NOT NULL,
    payload_size integer NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream, stream_seq)
);

-- Threshold rules: alert when a metric goes above (>) or below (<) the threshold,
-- at most once per rule, device and window of window_seconds.
CREATE TABLE IF NOT EXISTS alert_rules (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL,
    device_id      text,
    metric         text NOT NULL,
    operator       text NOT NULL CHECK (operator IN ('>', '<')),
    threshold      double precision NOT NULL,
    window_seconds integer NOT NULL CHECK (window_seconds > 0),
    enabled        boolean NOT NULL DEFAULT true
);

CREATE TABLE IF NOT EXISTS alerts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id      bigint NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    device_id    text NOT NULL,
    window_start timestamptz NOT NULL,
    observed     double precision NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (rule_id, device_id, window_start)
);

-- Webhooks that receive a device's readings.
CREATE TABLE IF NOT EXISTS message_routes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id   text NOT NULL,
    webhook_url text NOT NULL,
    enabled     boolean NOT NULL DEFAULT true
);
CREATE INDEX IF NOT EXISTS message_routes_enabled_device ON message_routes (device_id) WHERE enabled;

-- Deliveries that failed every attempt. message_id makes a redelivered failure idempotent.
CREATE TABLE IF NOT EXISTS dead_letters (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id text NOT NULL UNIQUE,
    route_id   bigint NOT NULL,
    device_id  text NOT NULL,
    payload    jsonb NOT NULL,
    attempts   integer NOT NULL,
    last_error text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
