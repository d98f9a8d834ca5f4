-- The relay's outbox (CONTRACT §7): each signed webhook to pass on to the bot, written in
-- the transaction that records its events, before the provider is answered. A row stays
-- after delivery (delivered_ms > 0) until --relay-max-age-hours, as the record that keeps a
-- byte-identical redelivery from being relayed twice; the worker deletes it then.
CREATE TABLE relay_outbox (
    -- 'meta' or 'twilio'
    target          TEXT NOT NULL,
    -- hex SHA-256 of the path suffix, a newline and the body: the dedupe key
    body_hash       TEXT NOT NULL,
    -- the bytes the provider sent, passed on unchanged
    body            BYTEA NOT NULL,
    content_type    TEXT NOT NULL,
    -- Meta's X-Hub-Signature-256 as received ('' for Twilio, which is re-signed)
    signature       TEXT NOT NULL DEFAULT '',
    -- Twilio: what followed /webhooks/twilio (sub-path and query), appended to the URL
    path_suffix     TEXT NOT NULL DEFAULT '',
    received_ms     BIGINT NOT NULL,
    -- 0 while waiting; the time of the bot's 2xx once delivered
    delivered_ms    BIGINT NOT NULL DEFAULT 0,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    -- the replica attempting it, until lease_until_ms (a crashed one's lease runs out)
    lease_owner     TEXT NOT NULL DEFAULT '',
    lease_until_ms  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (target, body_hash)
);
-- The worker's claim: waiting rows of a target that are due, oldest first.
CREATE INDEX relay_outbox_waiting ON relay_outbox (target, received_ms) WHERE delivered_ms = 0;
