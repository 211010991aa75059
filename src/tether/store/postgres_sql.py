"""The PostgreSQL store's schema (versioned migrations) and statements.

Every table lives in the store's own schema (``search_path`` is set on each pooled connection), so several
deployments, or parallel test runs, share one database without meeting.
"""

from __future__ import annotations

from tether.store.record_rows import COLUMNS

# Each entry is one schema version; a database at version N runs entries N+1.. in order, under an advisory lock so
# nodes starting together migrate once.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE items (hash TEXT PRIMARY KEY, body BYTEA NOT NULL)",
        "CREATE SEQUENCE put_order",
        """
        CREATE TABLE responses (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            parent_id TEXT,
            depth INTEGER NOT NULL,
            model TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            completed_at BIGINT,
            params BYTEA NOT NULL,
            input_hashes TEXT[] NOT NULL,
            input_ids TEXT[] NOT NULL,
            output_hashes TEXT[] NOT NULL,
            usage BYTEA,
            error BYTEA,
            incomplete_details BYTEA,
            events BYTEA NOT NULL,
            snapshot TEXT[],
            deleted BOOLEAN NOT NULL DEFAULT FALSE,
            expires_at DOUBLE PRECISION,
            idempotency_key TEXT,
            put_order BIGINT NOT NULL DEFAULT nextval('put_order')
        )
        """,
        "CREATE INDEX responses_idempotency ON responses (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL",
        "CREATE INDEX responses_expires_at ON responses (expires_at)",
        "CREATE INDEX responses_parent_id ON responses (parent_id)",
        "CREATE SEQUENCE fencing_tokens",
        """
        CREATE TABLE turns (
            response_id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            node TEXT NOT NULL,
            token BIGINT NOT NULL,
            idempotency_key TEXT,
            lease_until DOUBLE PRECISION NOT NULL,
            state TEXT NOT NULL,
            ended_at DOUBLE PRECISION
        )
        """,
        """
        CREATE TABLE turn_keys (
            tenant TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            response_id TEXT NOT NULL,
            PRIMARY KEY (tenant, idempotency_key)
        )
        """,
        """
        CREATE TABLE turn_events (
            response_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            body BYTEA NOT NULL,
            PRIMARY KEY (response_id, seq)
        )
        """,
    ),
    (
        """
        CREATE TABLE edge_blobs (
            tenant TEXT NOT NULL,
            hash TEXT NOT NULL,
            body BYTEA NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (tenant, hash)
        )
        """,
        "CREATE INDEX edge_blobs_expires_at ON edge_blobs (expires_at)",
    ),
    # A node that does not generate a turn asks its generating node to cancel it; the heartbeat reads the mark.
    ("ALTER TABLE turns ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT FALSE",),
)
SCHEMA_VERSION = len(MIGRATIONS)

VISIBLE = "NOT deleted AND (expires_at IS NULL OR expires_at > %(now)s)"
SELECT_RECORD = f"SELECT {', '.join(COLUMNS)} FROM responses"
UPSERT_RECORD = (
    f"INSERT INTO responses ({', '.join(COLUMNS)}) VALUES ({', '.join(f'%({c})s' for c in COLUMNS)}) "
    f"ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in COLUMNS[1:])}, "
    "deleted = FALSE, put_order = nextval('put_order')"
)
INSERT_ITEMS = (
    "INSERT INTO items (hash, body) SELECT * FROM unnest(%s::text[], %s::bytea[]) ON CONFLICT (hash) DO NOTHING"
)
SELECT_ITEMS = "SELECT hash, body FROM items WHERE hash = ANY(%s)"
PUT_EDGE_BLOBS = """
    INSERT INTO edge_blobs (tenant, hash, body, expires_at)
    SELECT %(tenant)s, * FROM unnest(%(hashes)s::text[], %(bodies)s::bytea[], %(expiries)s::float8[])
    ON CONFLICT (tenant, hash) DO UPDATE SET expires_at = EXCLUDED.expires_at
"""
GET_EDGE_BLOBS = (
    "SELECT hash, body FROM edge_blobs WHERE tenant = %(tenant)s AND hash = ANY(%(hashes)s) AND expires_at > %(now)s"
)
PURGE_EDGE_BLOBS = "DELETE FROM edge_blobs WHERE expires_at <= %(now)s"

# One round trip from a response up to the nearest snapshot; the bound stops a (corrupt) cycle.
CHAIN = f"""
    WITH RECURSIVE chain (id, parent_id, input_hashes, output_hashes, snapshot, n) AS (
        SELECT id, parent_id, input_hashes, output_hashes, snapshot, 0 FROM responses
        WHERE id = %(id)s AND tenant = %(tenant)s AND {VISIBLE}
        UNION ALL
        SELECT r.id, r.parent_id, r.input_hashes, r.output_hashes, r.snapshot, c.n + 1
        FROM chain AS c JOIN responses AS r ON r.id = c.parent_id
        WHERE c.snapshot IS NULL AND r.tenant = %(tenant)s AND c.n < %(limit)s
    )
    SELECT id, parent_id, input_hashes, output_hashes, snapshot FROM chain ORDER BY n
"""

# As SQLite's: a row may go once it is expired or tombstoned and no remaining row descends from it.
PURGE = f"""
    DELETE FROM responses
    WHERE NOT ({VISIBLE})
    AND id NOT IN (
        WITH RECURSIVE kept (id) AS (
            SELECT parent_id FROM responses WHERE parent_id IS NOT NULL AND {VISIBLE}
            UNION
            SELECT r.parent_id FROM responses AS r JOIN kept ON r.id = kept.id WHERE r.parent_id IS NOT NULL
        )
        SELECT id FROM kept
    )
"""
COLLECT_ITEMS = """
    DELETE FROM items WHERE hash NOT IN (
        SELECT unnest(input_hashes) FROM responses
        UNION SELECT unnest(output_hashes) FROM responses
        UNION SELECT unnest(snapshot) FROM responses WHERE snapshot IS NOT NULL
    )
"""
PURGE_TURNS = """
    WITH gone AS (DELETE FROM turns WHERE ended_at IS NOT NULL AND ended_at <= %(before)s RETURNING response_id),
    keys AS (DELETE FROM turn_keys WHERE response_id IN (SELECT response_id FROM gone))
    DELETE FROM turn_events WHERE response_id IN (SELECT response_id FROM gone)
"""

HELD = "response_id = %(id)s AND token = %(token)s AND state = 'running' AND lease_until > %(now)s"
APPEND_EVENTS = f"""
    WITH held AS (SELECT response_id FROM turns WHERE {HELD} FOR SHARE),
    written AS (
        INSERT INTO turn_events (response_id, seq, body)
        SELECT held.response_id, u.seq, u.body FROM held, unnest(%(seqs)s::int[], %(bodies)s::bytea[]) AS u (seq, body)
        ON CONFLICT DO NOTHING
    )
    SELECT (SELECT count(*) FROM held), pg_notify(%(channel)s, %(id)s)
"""
INSERT_EVENTS = (
    "INSERT INTO turn_events (response_id, seq, body) SELECT %s, * FROM unnest(%s::int[], %s::bytea[]) "
    "ON CONFLICT DO NOTHING"
)
RENEW_LEASE = f"UPDATE turns SET lease_until = %(until)s WHERE {HELD} RETURNING cancel_requested"
REQUEST_CANCEL = (
    "UPDATE turns SET cancel_requested = TRUE WHERE response_id = %(id)s AND tenant = %(tenant)s AND state = 'running'"
)
READ_TURN = """
    SELECT t.tenant, t.node, t.state, t.lease_until, t.cancel_requested,
        (SELECT array_agg(e.body ORDER BY e.seq) FROM turn_events AS e
         WHERE e.response_id = t.response_id AND e.seq > %(after)s)
    FROM turns AS t WHERE t.response_id = %(id)s
"""


_TYPES = {
    "depth": "integer",
    "created_at": "bigint",
    "completed_at": "bigint",
    "params": "bytea",
    "input_hashes": "text[]",
    "input_ids": "text[]",
    "output_hashes": "text[]",
    "usage": "bytea",
    "error": "bytea",
    "incomplete_details": "bytea",
    "events": "bytea",
    "snapshot": "text[]",
    "expires_at": "double precision",
}
_TYPED = ", ".join(f"%(r_{c})s::{_TYPES.get(c, 'text')}" for c in COLUMNS)

# A turn's commit in one statement (one round trip), every write gated on the lease still being held: the items, the
# record, the last events, "done", and the wake-up. Nothing is written if another node fenced this one off.
FINISH_TURN = f"""
    WITH held AS (SELECT response_id FROM turns WHERE {HELD} FOR UPDATE),
    new_items AS (
        INSERT INTO items (hash, body)
        SELECT u.hash, u.body FROM unnest(%(item_hashes)s::text[], %(item_bodies)s::bytea[]) AS u (hash, body)
        WHERE EXISTS (SELECT 1 FROM held)
        ON CONFLICT (hash) DO NOTHING
    ),
    record AS (
        INSERT INTO responses ({", ".join(COLUMNS)})
        SELECT {_TYPED} WHERE %(has_record)s AND EXISTS (SELECT 1 FROM held)
        ON CONFLICT (id) DO UPDATE SET {", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])},
            deleted = FALSE, put_order = nextval('put_order')
    ),
    events AS (
        INSERT INTO turn_events (response_id, seq, body)
        SELECT held.response_id, u.seq, u.body FROM held, unnest(%(seqs)s::int[], %(bodies)s::bytea[]) AS u (seq, body)
        ON CONFLICT DO NOTHING
    ),
    ended AS (UPDATE turns SET state = 'done', ended_at = %(now)s WHERE response_id IN (SELECT response_id FROM held))
    SELECT (SELECT count(*) FROM held), pg_notify(%(channel)s, %(id)s)
"""

# A claim in one statement: the key (if any) and the turn. Both columns NULL means the key's holder went away
# between the conflict and the read: claim again.
CLAIM_TURN = """
    WITH claimed AS (
        INSERT INTO turn_keys (tenant, idempotency_key, response_id)
        SELECT %(tenant)s, %(key)s, %(id)s WHERE %(key)s::text IS NOT NULL
        ON CONFLICT DO NOTHING
        RETURNING response_id
    ),
    turn AS (
        INSERT INTO turns (response_id, tenant, node, token, idempotency_key, lease_until, state)
        SELECT %(id)s, %(tenant)s, %(node)s, nextval('fencing_tokens'), %(key)s, %(until)s, 'running'
        WHERE %(key)s::text IS NULL OR EXISTS (SELECT 1 FROM claimed)
        RETURNING token
    )
    SELECT (SELECT token FROM turn),
        (SELECT response_id FROM turn_keys WHERE tenant = %(tenant)s AND idempotency_key = %(key)s)
"""
