-- Least privilege: what each service's login role may do, one row per (service, relation).
-- migrate re-applies this matrix on every run (services/migrate/roles.py reconcile_grants):
-- a privilege a service role holds in schema public and that is not listed here is revoked,
-- a listed one is granted. A migration that adds a table adds its rows in the same file; a
-- table without rows is the owner's alone. (Chosen over ALTER DEFAULT PRIVILEGES, which gives
-- every future table the same privileges for a role: a new table of secrets would be readable
-- by every service that reads anything.) `columns` NULL: the whole table; else only those
-- columns. Role names are not here: each deployment names its roles (DB_<SERVICE>_USER).
CREATE TABLE IF NOT EXISTS service_grants (
    service    text NOT NULL
               CHECK (service IN ('ingest', 'evaluator', 'ui', 'ops', 'route_delivery')),
    relation   text NOT NULL,
    privileges text[] NOT NULL CHECK (cardinality(privileges) > 0
               AND privileges <@ ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']),
    columns    text[],
    PRIMARY KEY (service, relation)
);

INSERT INTO service_grants (service, relation, privileges, columns) VALUES
    -- ingest (ingest_iot/store.py): COMMIT_BATCH writes readings, device presence and
    -- quarantined messages (RETURNING and ON CONFLICT read them back); ROUTED_DEVICES reads
    -- which devices have routes, not where they go nor their secrets. pg_notify needs no grant.
    ('ingest', 'telemetry', '{SELECT,INSERT}', NULL),
    ('ingest', 'devices', '{SELECT,INSERT,UPDATE}', NULL),
    ('ingest', 'quarantine', '{SELECT,INSERT}', NULL),
    ('ingest', 'message_routes', '{SELECT}', '{id,device_id,enabled}'),
    -- evaluator (evaluator_iot/rules.py): EVALUATE reads rules and readings and inserts
    -- alerts; READ_POSITION/SAVE_POSITION keep its position. LISTEN needs no grant.
    ('evaluator', 'alert_rules', '{SELECT}', NULL),
    ('evaluator', 'telemetry', '{SELECT}', NULL),
    ('evaluator', 'alerts', '{SELECT,INSERT}', NULL),
    ('evaluator', 'evaluator_position', '{SELECT,INSERT,UPDATE}', NULL),
    -- ui (ui_iot/queries.py): reads only.
    ('ui', 'devices', '{SELECT}', NULL),
    ('ui', 'telemetry', '{SELECT}', NULL),
    ('ui', 'alerts', '{SELECT}', NULL),
    ('ui', 'alert_rules', '{SELECT}', NULL),
    -- ops (ops_worker/maintenance.py): MARK_OFFLINE and PRUNE_BATCH. Advisory locks need no
    -- grant.
    ('ops', 'devices', '{SELECT,UPDATE}', NULL),
    ('ops', 'telemetry', '{SELECT,DELETE}', NULL),
    -- route_delivery (route_delivery/delivery.py, main.py): the route's URL (and signing
    -- secret), its attempt ledger, dead letters.
    ('route_delivery', 'message_routes', '{SELECT}', NULL),
    ('route_delivery', 'delivery_attempts', '{SELECT,INSERT,UPDATE,DELETE}', NULL),
    ('route_delivery', 'dead_letters', '{SELECT,INSERT}', NULL)
ON CONFLICT (service, relation) DO UPDATE
    SET privileges = excluded.privileges, columns = excluded.columns;
