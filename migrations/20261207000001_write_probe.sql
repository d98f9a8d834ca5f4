-- One row that readiness rewrites after a write failed for want of storage (disk full,
-- I/O error): the exporter is ready again only once a write succeeds (CONTRACT §6.2).
-- On SQLite the rewrite also stores `pad`, 64 KiB, more than a batch of writes needs:
-- a one-page write can fit in the last scraps of a full disk while real writes cannot.
CREATE TABLE write_probe (
    id INTEGER PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    pad BYTEA
);
INSERT INTO write_probe (id, at_ms) VALUES (1, 0);
