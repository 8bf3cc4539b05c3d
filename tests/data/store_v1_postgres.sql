-- The collector store's schema before it had a version ("version 1"), exactly as
-- floor_agent c724cbd created it (PostgreSQL): frozen, never edit (tests/data/store_v1_make.py).

CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT COLLATE "C" PRIMARY KEY,
    role TEXT COLLATE "C" NOT NULL,
    public_key TEXT COLLATE "C" NOT NULL,
    hostname TEXT COLLATE "C" NOT NULL DEFAULT '',
    enrolled_at TEXT COLLATE "C" NOT NULL,
    head_seq BIGINT NOT NULL DEFAULT 0,
    head_hash BYTEA NOT NULL,
    checkpoint_seq BIGINT,
    checkpoint_hash BYTEA,
    checkpoint_ts TEXT COLLATE "C",
    checkpoint_boot_id TEXT COLLATE "C",
    checkpoint_sig BYTEA,
    checkpoint_received_at TEXT COLLATE "C",
    last_seen_at TEXT COLLATE "C",
    events_total BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
    id BIGSERIAL PRIMARY KEY,
    agent_id TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    boot_id TEXT COLLATE "C" NOT NULL,
    ts TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    severity TEXT COLLATE "C" NOT NULL,
    severity_rank BIGINT NOT NULL,
    subject TEXT COLLATE "C" NOT NULL,
    data TEXT COLLATE "C" NOT NULL,
    hash BYTEA NOT NULL,
    received_at TEXT COLLATE "C" NOT NULL,
    UNIQUE (agent_id, seq)
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash BYTEA PRIMARY KEY,
    role TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    expires_at TEXT COLLATE "C" NOT NULL,
    used_at TEXT COLLATE "C",
    used_by TEXT COLLATE "C"
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash BYTEA PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    revoked_at TEXT COLLATE "C"
);
CREATE TABLE IF NOT EXISTS alerts (
    id BIGSERIAL PRIMARY KEY,
    fingerprint TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    severity TEXT COLLATE "C" NOT NULL,
    agent_id TEXT COLLATE "C",
    seq BIGINT,
    detail TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    last_seen_at TEXT COLLATE "C" NOT NULL,
    count BIGINT NOT NULL DEFAULT 1,
    acked_at TEXT COLLATE "C",
    acked_by TEXT COLLATE "C",
    ack_comment TEXT COLLATE "C"
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts (fingerprint) WHERE acked_at IS NULL;

CREATE INDEX IF NOT EXISTS events_ts ON events (ts, id);
CREATE INDEX IF NOT EXISTS events_agent_ts ON events (agent_id, ts, id);
CREATE INDEX IF NOT EXISTS events_kind_ts ON events (kind, ts, id);
CREATE INDEX IF NOT EXISTS events_severity_ts ON events (severity, ts, id);

CREATE TABLE IF NOT EXISTS credentials_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO credentials_meta (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS access_levels (
    level_id TEXT COLLATE "C" PRIMARY KEY,
    doors TEXT COLLATE "C" NOT NULL,
    windows TEXT COLLATE "C" NOT NULL,
    on_holidays INTEGER NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL
);
CREATE TABLE IF NOT EXISTS people (
    person_id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    active INTEGER NOT NULL,
    access_levels TEXT COLLATE "C" NOT NULL,
    duress_fingers TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL,
    revoked_at TEXT COLLATE "C"
);
CREATE TABLE IF NOT EXISTS cards (
    uid TEXT COLLATE "C" PRIMARY KEY,
    person_id TEXT COLLATE "C" NOT NULL REFERENCES people (person_id),
    active INTEGER NOT NULL,
    valid_from TEXT COLLATE "C",
    valid_until TEXT COLLATE "C",
    keyed INTEGER NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL
);
CREATE INDEX IF NOT EXISTS cards_person ON cards (person_id);
CREATE TABLE IF NOT EXISTS holidays (
    day TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL
);
CREATE TABLE IF NOT EXISTS templates (
    template_id TEXT COLLATE "C" PRIMARY KEY,
    person_id TEXT COLLATE "C" NOT NULL REFERENCES people (person_id),
    finger INTEGER NOT NULL,
    sealed BYTEA NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL
);
CREATE INDEX IF NOT EXISTS templates_person ON templates (person_id);
CREATE TABLE IF NOT EXISTS credential_log (
    id BIGSERIAL PRIMARY KEY,
    ts TEXT COLLATE "C" NOT NULL,
    actor TEXT COLLATE "C" NOT NULL,
    action TEXT COLLATE "C" NOT NULL,
    subject TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    detail TEXT COLLATE "C" NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
    username TEXT COLLATE "C" PRIMARY KEY,
    role TEXT COLLATE "C" NOT NULL,
    password_hash TEXT COLLATE "C" NOT NULL,
    must_change INTEGER NOT NULL,
    disabled INTEGER NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL,
    failures INTEGER NOT NULL,
    locked_until TEXT COLLATE "C"
);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT COLLATE "C" PRIMARY KEY,
    username TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    last_seen_at TEXT COLLATE "C" NOT NULL,
    csrf TEXT COLLATE "C" NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (username);
-- failed logins of names no user has: they lock like real ones (no enumeration)
CREATE TABLE IF NOT EXISTS login_failures (
    username TEXT COLLATE "C" PRIMARY KEY,
    failures INTEGER NOT NULL,
    locked_until TEXT COLLATE "C",
    updated_at TEXT COLLATE "C" NOT NULL
);
CREATE TABLE IF NOT EXISTS latest (
    agent_id TEXT COLLATE "C" NOT NULL,
    topic TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    ts TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    severity TEXT COLLATE "C" NOT NULL,
    data TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (agent_id, topic)
);
CREATE TABLE IF NOT EXISTS snapshots (
    agent_id TEXT COLLATE "C" NOT NULL,
    camera_id TEXT COLLATE "C" NOT NULL,
    jpeg BYTEA NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    size INTEGER NOT NULL,
    received_at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (agent_id, camera_id)
);
CREATE TABLE IF NOT EXISTS verifications (
    agent_id TEXT COLLATE "C" PRIMARY KEY,
    verified_at TEXT COLLATE "C" NOT NULL,
    ok INTEGER NOT NULL,
    checkpoint_seq BIGINT,
    stored_events BIGINT NOT NULL,
    problems TEXT COLLATE "C" NOT NULL,
    by_user TEXT COLLATE "C" NOT NULL
);
-- rows found in the events table above an agent's signed head that contradict what the
-- agent then signed: moved here by ingest (kept as evidence, never served as events)
CREATE TABLE IF NOT EXISTS quarantine (
    id BIGSERIAL PRIMARY KEY,
    agent_id TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    boot_id TEXT COLLATE "C" NOT NULL,
    ts TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    severity TEXT COLLATE "C" NOT NULL,
    subject TEXT COLLATE "C" NOT NULL,
    data TEXT COLLATE "C" NOT NULL,
    hash BYTEA NOT NULL,
    received_at TEXT COLLATE "C" NOT NULL,
    quarantined_at TEXT COLLATE "C" NOT NULL,
    reason TEXT COLLATE "C" NOT NULL
);
ALTER TABLE api_keys ADD COLUMN scopes TEXT COLLATE "C";
ALTER TABLE api_keys ADD COLUMN expires_at TEXT COLLATE "C";
ALTER TABLE api_keys ADD COLUMN last_used_at TEXT COLLATE "C";
ALTER TABLE agents ADD COLUMN anchor_endorsement TEXT COLLATE "C";
ALTER TABLE alerts ADD COLUMN source TEXT COLLATE "C";
CREATE TABLE IF NOT EXISTS schema_mark (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    digest TEXT COLLATE "C" NOT NULL
);
INSERT INTO schema_mark (id, digest) VALUES (1, 'cdec272c83b1d0f2b5b88e11eedcfbc20d3d1fd4b22bec9affdb84552bdd93da') ON CONFLICT (id) DO UPDATE SET digest = excluded.digest;
