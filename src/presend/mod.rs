//! The database side of the pre-send API, batched across concurrent checks: reads of
//! each phone's window and slot ([`reads`]) and reservations of slots ([`reserver`]).
//! The HTTP side is `http::presend`; the decision itself is `domain::presend`.

pub mod reads;
pub mod reserver;

pub use reads::StateReader;
pub use reserver::Reserver;
