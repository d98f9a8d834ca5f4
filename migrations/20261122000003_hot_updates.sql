-- Every status rewrites its message row. In Postgres a row update that changes an indexed
-- column cannot be a HOT update, so indexing `updated_ms` (changed by every write) added an
-- entry to every index of the table for every status. Retention goes by `first_seen_ms`,
-- written once, instead.
DROP INDEX outbound_messages_updated;
CREATE INDEX outbound_messages_first_seen ON outbound_messages (first_seen_ms);
