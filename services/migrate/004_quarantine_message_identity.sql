-- A quarantined message is identified by its stream, its sequence and the time JetStream
-- stored it: a stream deleted and created again numbers its messages from 1 again, and
-- (stream, stream_seq) alone would take a new message for a redelivery of an old one and
-- drop it. A redelivery keeps its stored time, so redeliveries still collapse into one row.
ALTER TABLE quarantine ADD COLUMN IF NOT EXISTS stored_at timestamptz;
ALTER TABLE quarantine DROP CONSTRAINT IF EXISTS quarantine_stream_stream_seq_key;
CREATE UNIQUE INDEX IF NOT EXISTS quarantine_message
    ON quarantine (stream, stream_seq, stored_at) NULLS NOT DISTINCT;
