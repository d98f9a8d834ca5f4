//! No root certificates, in place of Mozilla's.
//!
//! sqlx's rustls adds this crate's roots to every Postgres root store, beside the CAs of
//! `sslrootcert`, where libpq trusts `sslrootcert` alone. With Mozilla's roots there, any
//! certificate a public CA issued, for any name, would pass `sslmode=verify-ca`.
//! `sslrootcert=system` names the system's CA bundle instead (`src/store/pg_tls.rs`).
#![no_std]

pub const TLS_SERVER_ROOTS: &[pki_types::TrustAnchor<'static>] = &[];
