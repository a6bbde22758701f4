-- route_delivery: real webhook requests made per route message. JetStream's delivery count
-- also counts redeliveries caused by NATS or database trouble and by deferrals (circuit
-- open, endpoint busy), so attempts are counted here, once per request actually sent. A row
-- lives while a message is being retried; it is deleted on success or dead letter.
CREATE TABLE IF NOT EXISTS delivery_attempts (
    message_id text PRIMARY KEY,
    route_id   bigint NOT NULL,
    attempts   integer NOT NULL,
    last_error text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- For purging rows whose message has left the stream (ROUTES keeps messages one day).
CREATE INDEX IF NOT EXISTS delivery_attempts_updated_at ON delivery_attempts (updated_at);
