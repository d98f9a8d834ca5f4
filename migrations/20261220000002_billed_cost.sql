-- The providers' own figures (CONTRACT §9), read in the background.

-- Twilio: each message with a final status, looked up once in the Messages API. A row is
-- queued by the worker's scan of outbound_messages and stays after it is done
-- (done_ms > 0) as the record that it was counted, so neither a restart nor another
-- replica counts it again; it goes with the message at the retention purge.
CREATE TABLE billing_lookups (
    provider        TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    channel         TEXT NOT NULL,
    -- the `category` label the billed price is counted under (`sms` for SMS)
    category        TEXT NOT NULL,
    -- when the message was charged (its delivery, read, send or failure): the day of /v1/costs
    charged_ms      BIGINT NOT NULL,
    enqueued_ms     BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    -- the next lookup; a claim moves it ahead by a lease, so a replica that died
    -- mid-lookup leaves the row to be tried again
    next_attempt_ms BIGINT NOT NULL,
    -- 0 while waiting; the time the price was counted (or the lookup given up)
    done_ms         BIGINT NOT NULL DEFAULT 0,
    -- the billed price, positive, in currency ('' when given up)
    price           DOUBLE PRECISION NOT NULL DEFAULT 0,
    currency        TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (provider, message_id)
);
CREATE INDEX billing_lookups_due ON billing_lookups (next_attempt_ms) WHERE done_ms = 0;
CREATE INDEX billing_lookups_charged ON billing_lookups (charged_ms);

-- Meta: the last pricing_analytics figure of each day and pricing category, so that a
-- read adds only what a figure grew by since the last one counted, across restarts.
CREATE TABLE billing_meta_days (
    -- the UTC day's start, unix milliseconds
    day_ms      BIGINT NOT NULL,
    category    TEXT NOT NULL,
    cost        DOUBLE PRECISION NOT NULL,
    currency    TEXT NOT NULL,
    updated_ms  BIGINT NOT NULL,
    PRIMARY KEY (day_ms, category)
);
