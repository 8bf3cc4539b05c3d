-- The collector store's schema before it had a version ("version 1"), exactly as
-- floor_agent c724cbd created it (SQLite): frozen, never edit (tests/data/store_v1_make.py).

CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    public_key TEXT NOT NULL,
    hostname TEXT NOT NULL DEFAULT '',
    enrolled_at TEXT NOT NULL,
    head_seq INTEGER NOT NULL DEFAULT 0,
    head_hash BLOB NOT NULL,
    checkpoint_seq INTEGER,
    checkpoint_hash BLOB,
    checkpoint_ts TEXT,
    checkpoint_boot_id TEXT,
    checkpoint_sig BLOB,
    checkpoint_received_at TEXT,
    last_seen_at TEXT,
    events_total INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    boot_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    severity_rank INTEGER NOT NULL,
    subject TEXT NOT NULL,
    data TEXT NOT NULL,
    hash BLOB NOT NULL,
    received_at TEXT NOT NULL,
    UNIQUE (agent_id, seq)
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash BLOB PRIMARY KEY,
    role TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    used_by TEXT
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    agent_id TEXT,
    seq INTEGER,
    detail TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 1,
    acked_at TEXT,
    acked_by TEXT,
    ack_comment TEXT
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts (fingerprint) WHERE acked_at IS NULL;

CREATE INDEX IF NOT EXISTS events_ts ON events (ts, id);
CREATE INDEX IF NOT EXISTS events_agent_ts ON events (agent_id, ts, id);
CREATE INDEX IF NOT EXISTS events_kind_ts ON events (kind, ts, id);
CREATE INDEX IF NOT EXISTS events_severity_ts ON events (severity, ts, id);

CREATE TABLE IF NOT EXISTS credentials_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO credentials_meta (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS access_levels (
    level_id TEXT PRIMARY KEY,
    doors TEXT NOT NULL,
    windows TEXT NOT NULL,
    on_holidays INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS people (
    person_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    active INTEGER NOT NULL,
    access_levels TEXT NOT NULL,
    duress_fingers TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS cards (
    uid TEXT PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people (person_id),
    active INTEGER NOT NULL,
    valid_from TEXT,
    valid_until TEXT,
    keyed INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cards_person ON cards (person_id);
CREATE TABLE IF NOT EXISTS holidays (
    day TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS templates (
    template_id TEXT PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people (person_id),
    finger INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS templates_person ON templates (person_id);
CREATE TABLE IF NOT EXISTS credential_log (
    id INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    version INTEGER NOT NULL,
    detail TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    must_change INTEGER NOT NULL,
    disabled INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    failures INTEGER NOT NULL,
    locked_until TEXT
);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    csrf TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (username);
-- failed logins of names no user has: they lock like real ones (no enumeration)
CREATE TABLE IF NOT EXISTS login_failures (
    username TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    locked_until TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS latest (
    agent_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    seq BIGINT NOT NULL,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (agent_id, topic)
);
CREATE TABLE IF NOT EXISTS snapshots (
    agent_id TEXT NOT NULL,
    camera_id TEXT NOT NULL,
    jpeg BLOB NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    size INTEGER NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (agent_id, camera_id)
);
CREATE TABLE IF NOT EXISTS verifications (
    agent_id TEXT PRIMARY KEY,
    verified_at TEXT NOT NULL,
    ok INTEGER NOT NULL,
    checkpoint_seq BIGINT,
    stored_events BIGINT NOT NULL,
    problems TEXT NOT NULL,
    by_user TEXT NOT NULL
);
-- rows found in the events table above an agent's signed head that contradict what the
-- agent then signed: moved here by ingest (kept as evidence, never served as events)
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    boot_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    subject TEXT NOT NULL,
    data TEXT NOT NULL,
    hash BLOB NOT NULL,
    received_at TEXT NOT NULL,
    quarantined_at TEXT NOT NULL,
    reason TEXT NOT NULL
);
ALTER TABLE api_keys ADD COLUMN scopes TEXT;
ALTER TABLE api_keys ADD COLUMN expires_at TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_at TEXT;
ALTER TABLE agents ADD COLUMN anchor_endorsement TEXT;
ALTER TABLE alerts ADD COLUMN source TEXT;
