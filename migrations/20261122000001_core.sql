-- Core schema, written in the SQL that Postgres and SQLite share so that one set of
-- migrations and one code path serve both. Times are unix milliseconds (BIGINT), absent
-- values are 0 or '' rather than NULL, and sets of statuses are bit masks.

-- One row per outbound message, keyed as the provider names it. It is the dedupe state
-- for statuses (seen_mask) and the record of what has been counted (counted_mask,
-- observed_mask): the transaction that changes these is the one whose replica counts.
CREATE TABLE outbound_messages (
    provider            TEXT NOT NULL,
    message_id          TEXT NOT NULL,
    channel             TEXT NOT NULL,
    phone               TEXT NOT NULL DEFAULT '',
    -- send hook: hook_seen = 1 once the bot reported the message
    hook_seen           BIGINT NOT NULL DEFAULT 0,
    is_template         BIGINT NOT NULL DEFAULT 0,
    template_name       TEXT NOT NULL DEFAULT '',
    category            TEXT NOT NULL DEFAULT '',
    sent_at_ms          BIGINT NOT NULL DEFAULT 0,
    reservation_id      TEXT NOT NULL DEFAULT '',
    first_seen_ms       BIGINT NOT NULL,
    seen_mask           BIGINT NOT NULL DEFAULT 0,
    counted_mask        BIGINT NOT NULL DEFAULT 0,
    observed_mask       BIGINT NOT NULL DEFAULT 0,
    accepted_ms         BIGINT NOT NULL DEFAULT 0,
    sent_ms             BIGINT NOT NULL DEFAULT 0,
    delivered_ms        BIGINT NOT NULL DEFAULT 0,
    read_ms             BIGINT NOT NULL DEFAULT 0,
    failed_ms           BIGINT NOT NULL DEFAULT 0,
    pricing_type        TEXT NOT NULL DEFAULT '',
    pricing_category    TEXT NOT NULL DEFAULT '',
    -- -1 unknown, 0 false, 1 true
    pricing_billable    BIGINT NOT NULL DEFAULT -1,
    has_pricing         BIGINT NOT NULL DEFAULT 0,
    error_code          TEXT NOT NULL DEFAULT '',
    error_title         TEXT NOT NULL DEFAULT '',
    error_message       TEXT NOT NULL DEFAULT '',
    error_details       TEXT NOT NULL DEFAULT '',
    -- label set fixed at first count; label_fixed = 0 while waiting for the send hook
    label_fixed         BIGINT NOT NULL DEFAULT 0,
    label_template      TEXT NOT NULL DEFAULT '',
    label_category      TEXT NOT NULL DEFAULT '',
    window_open_at_send BIGINT NOT NULL DEFAULT 0,
    cost                DOUBLE PRECISION NOT NULL DEFAULT 0,
    cost_category       TEXT NOT NULL DEFAULT '',
    currency            TEXT NOT NULL DEFAULT '',
    -- bumped by every locking upsert; 0 means the row was just created
    version             BIGINT NOT NULL DEFAULT 0,
    updated_ms          BIGINT NOT NULL,
    PRIMARY KEY (provider, message_id)
);

-- The grace-period sweeper looks only at messages still waiting for their send hook.
CREATE INDEX outbound_messages_pending ON outbound_messages (first_seen_ms) WHERE label_fixed = 0;
CREATE INDEX outbound_messages_updated ON outbound_messages (updated_ms);
CREATE INDEX outbound_messages_phone ON outbound_messages (phone);

-- Inbound user messages: the dedupe key and what the query API reports.
CREATE TABLE inbound_messages (
    provider     TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    channel      TEXT NOT NULL,
    phone        TEXT NOT NULL DEFAULT '',
    kind         TEXT NOT NULL,
    received_ms  BIGINT NOT NULL,
    PRIMARY KEY (provider, message_id)
);
CREATE INDEX inbound_messages_received ON inbound_messages (received_ms);

-- One row per phone: the 24-hour customer-service window and message counts.
CREATE TABLE sessions (
    phone               TEXT PRIMARY KEY,
    window_started_ms   BIGINT NOT NULL DEFAULT 0,
    last_inbound_ms     BIGINT NOT NULL DEFAULT 0,
    -- earliest inbound message not yet answered (response latency), 0 when none
    pending_inbound_ms  BIGINT NOT NULL DEFAULT 0,
    user_messages       BIGINT NOT NULL DEFAULT 0,
    business_messages   BIGINT NOT NULL DEFAULT 0,
    version             BIGINT NOT NULL DEFAULT 0,
    updated_ms          BIGINT NOT NULL
);
CREATE INDEX sessions_last_inbound ON sessions (last_inbound_ms);

-- Provider errors not tied to a message carry no id: one row per distinct error,
-- counted again only when it recurs after the dedupe window.
CREATE TABLE webhook_errors (
    dedupe_key     TEXT PRIMARY KEY,
    provider       TEXT NOT NULL,
    code           TEXT NOT NULL,
    first_seen_ms  BIGINT NOT NULL,
    last_seen_ms   BIGINT NOT NULL
);

-- Operator settings (`/v1/config`), one JSON document.
CREATE TABLE settings (
    id          BIGINT PRIMARY KEY,
    document    TEXT NOT NULL,
    updated_ms  BIGINT NOT NULL
);
