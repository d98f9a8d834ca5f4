-- Pre-send state (`/v1/check-send`, `/v1/reservations`), in the SQL Postgres and SQLite
-- share: times are unix milliseconds, absent values are 0 or '' rather than NULL.

-- One row per phone: its template cooldown slot. The slot is free at time t when
--   last_template_ms + cooldown <= t  and  hold_ms + cooldown <= t
-- (0 means "never"). last_template_ms is the `sent_at` of the latest template send hook;
-- hold_ms is when a still-unconfirmed reservation took the slot (hold_id names it).
-- A reservation counts as a template sent at reservation time until it is confirmed by a
-- send hook (which moves its time into last_template_ms) or released (which clears it).
-- Taking the slot is one conditional upsert (`ON CONFLICT … DO UPDATE … WHERE <free>`):
-- the row lock makes every other concurrent taker see the taken slot, on any replica.
CREATE TABLE cooldowns (
    phone             TEXT PRIMARY KEY,
    last_template_ms  BIGINT NOT NULL DEFAULT 0,
    hold_id           TEXT NOT NULL DEFAULT '',
    hold_ms           BIGINT NOT NULL DEFAULT 0,
    updated_ms        BIGINT NOT NULL
);
-- A release or a confirming send hook finds the slot by the reservation holding it.
CREATE INDEX cooldowns_hold ON cooldowns (hold_id);

-- Every reservation handed out, so that a release or a send hook can find it and a
-- repeated release is answered the same way. status: held, confirmed, released.
-- expires_ms is when the slot frees on its own if the reservation is neither confirmed
-- nor released (reservation time + the cooldown in force then).
CREATE TABLE reservations (
    id          TEXT PRIMARY KEY,
    phone       TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL,
    status      TEXT NOT NULL,
    message_id  TEXT NOT NULL DEFAULT '',
    updated_ms  BIGINT NOT NULL
);
CREATE INDEX reservations_phone ON reservations (phone);
CREATE INDEX reservations_updated ON reservations (updated_ms);

-- `/v1/errors` lists failed messages newest first.
CREATE INDEX outbound_messages_failed ON outbound_messages (failed_ms) WHERE failed_ms > 0;

-- Bumped by every change of the settings document, so that a replica's periodic reload
-- never replaces settings it already holds with an older read (clocks may differ).
ALTER TABLE settings ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
