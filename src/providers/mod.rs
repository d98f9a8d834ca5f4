//! Provider adapters: check a webhook's signature and turn its payload into events.
//! They know the providers' formats and nothing about storage.

pub mod meta;
pub mod twilio;
pub mod twilio_url;

#[cfg(test)]
mod proptests;

use subtle::ConstantTimeEq;

/// Constant-time comparison of two byte strings (length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
