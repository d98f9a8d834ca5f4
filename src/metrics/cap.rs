//! The series cap of CONTRACT §6.4: each label alone keeps `--max-label-values` values, but
//! their combinations could still multiply (200 operations × 200 models), so a family also
//! keeps at most `--max-series` series. A new label set past that is counted with its
//! bounded labels as `other` (the fixed ones keep their values), in a series that may go
//! past the cap by one per combination of fixed labels.

use std::hash::Hash;
use std::sync::{Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};

/// A label set some of whose labels are bounded (template, code, model, operation,
/// intent, currency).
pub trait Capped: Sized + PartialEq {
    /// The same labels with every bounded one as `other`.
    fn overflowed(&self) -> Self;
}

/// The cap, and the counter of `messaging_label_overflow_total{label="series"}`.
#[derive(Clone, Debug)]
pub struct SeriesCap {
    max: usize,
    overflow: Counter,
}

impl SeriesCap {
    pub fn new(max: usize, overflow: Counter) -> Self {
        Self { max, overflow }
    }

    /// The labels a series missing from a family of `len` series is made under: its own
    /// while there is room, else the overflowed ones, counted when that changes a label.
    pub fn place<L: Capped>(&self, labels: L, len: usize) -> L {
        if len < self.max {
            return labels;
        }
        let other = labels.overflowed();
        if other != labels {
            self.overflow.inc();
        }
        other
    }

    /// `family` under this cap.
    pub fn over<L, M, C>(&self, family: Family<L, M, C>) -> CappedFamily<L, M, C> {
        CappedFamily {
            family,
            cap: self.clone(),
            made: Mutex::new(0),
        }
    }
}

/// A prometheus-client family under a [`SeriesCap`]. Counting into an existing series
/// is one lookup under the family's read lock, as `get_or_create` is.
#[derive(Debug)]
pub struct CappedFamily<L, M, C = fn() -> M> {
    family: Family<L, M, C>,
    cap: SeriesCap,
    /// Series made so far. Held while one is made, so that two new label sets cannot
    /// both take the last room.
    made: Mutex<usize>,
}

impl<L, M, C> CappedFamily<L, M, C>
where
    L: Capped + Clone + Hash + Eq,
    C: MetricConstructor<M>,
{
    /// The family itself, to register (and, in tests, to hold as a scrape would).
    pub(super) fn family(&self) -> &Family<L, M, C> {
        &self.family
    }

    /// Applies `f` to the metric of `labels`, or of their overflowed labels when the
    /// family is full and `labels` is new.
    pub fn with(&self, labels: L, f: impl FnOnce(&M)) {
        if let Some(metric) = self.family.get(&labels) {
            return f(&metric);
        }
        let mut made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        let mut labels = labels;
        if self.family.get(&labels).is_none() {
            labels = self.cap.place(labels, *made);
            if self.family.get(&labels).is_none() {
                *made += 1;
            }
        }
        f(&self.family.get_or_create(&labels));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Hash, PartialEq, Eq)]
    struct Pair {
        fixed: &'static str,
        bounded: String,
    }

    impl Capped for Pair {
        fn overflowed(&self) -> Self {
            Self {
                fixed: self.fixed,
                bounded: "other".to_owned(),
            }
        }
    }

    fn pair(fixed: &'static str, bounded: &str) -> Pair {
        Pair {
            fixed,
            bounded: bounded.to_owned(),
        }
    }

    fn count(family: &CappedFamily<Pair, Counter>, labels: Pair) {
        family.with(labels, |c| {
            c.inc();
        });
    }

    #[test]
    fn a_full_family_counts_new_label_sets_as_other_and_existing_ones_as_themselves() {
        let overflow = Counter::default();
        let family = SeriesCap::new(2, overflow.clone()).over(Family::default());
        count(&family, pair("a", "x"));
        count(&family, pair("a", "y"));
        count(&family, pair("a", "z"));
        count(&family, pair("b", "z"));
        count(&family, pair("a", "x"));
        count(&family, pair("a", "other"));

        let value = |labels: Pair| family.family().get(&labels).map(|c| c.get());
        assert_eq!(
            value(pair("a", "x")),
            Some(2),
            "an existing series still counts"
        );
        assert_eq!(value(pair("a", "y")), Some(1));
        assert_eq!(value(pair("a", "z")), None, "past the cap");
        assert_eq!(value(pair("a", "other")), Some(2), "z, and other itself");
        assert_eq!(
            value(pair("b", "other")),
            Some(1),
            "fixed labels keep theirs"
        );
        assert_eq!(
            overflow.get(),
            2,
            "a label set already other is not relabelled"
        );
    }
}
