-- SMS is billed per segment and inbound SMS is charged too (CONTRACT §9). Columns are
-- appended, so a build's write-backs list them after `updated_ms`.

-- Segments as the bot's send hook counted them, and as Twilio's NumSegments gave them
-- (0 = not given); the provider's figure wins.
ALTER TABLE outbound_messages ADD COLUMN hook_segments BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbound_messages ADD COLUMN segments BIGINT NOT NULL DEFAULT 0;

-- What an inbound message cost at receipt (SMS only; 0 and '' otherwise).
ALTER TABLE inbound_messages ADD COLUMN segments BIGINT NOT NULL DEFAULT 0;
ALTER TABLE inbound_messages ADD COLUMN cost DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE inbound_messages ADD COLUMN currency TEXT NOT NULL DEFAULT '';
