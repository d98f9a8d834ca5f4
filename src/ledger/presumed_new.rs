//! Whether a batch takes the rows it needs and does not keep ([`super::recent`]) for new
//! ones, unread. A bot's traffic makes a row's first write a new message's first
//! status or send hook, a row no one has stored: reading it only to find it absent is a
//! round trip, a third of a small batch's time. A row taken for new is written back as a
//! row read as absent, so one that was stored after all is refused and the batch runs
//! again with its rows locked: never counted wrong, but a rerun costs several round trips.
//!
//! So rows are taken for new only while the evidence says they are: after a run of
//! database reads in which no row missing from the kept ones was stored. A batch that
//! took rows for new and lost a race doubles the run needed next time (a restart, a
//! replica sharing messages, kept rows too few for the traffic); a long enough run of
//! batches that took rows for new and committed halves it again. Each [`RowKind`] has
//! its own evidence: a message's send hook and `sent` status open it, while a `read`
//! may come hours later, long after its row stopped being kept.

/// Clean reads needed before rows are first taken for new.
const FIRST_NEEDED: u32 = 8;

/// The longest run of clean reads ever needed.
const MOST_NEEDED: u32 = 4_096;

/// Rows whose absence is judged apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RowKind {
    /// A message the batch has a send hook or an `accepted` or `sent` status of.
    Opening,
    /// A message the batch has only later statuses of.
    Later,
    Session,
}

impl RowKind {
    const ALL: [RowKind; 3] = [RowKind::Opening, RowKind::Later, RowKind::Session];

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of [`RowKind`]s, as bits (so that it fits an atomic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Kinds(pub u8);

impl Kinds {
    pub fn with(self, kind: RowKind) -> Self {
        Self(self.0 | kind.bit())
    }

    pub fn union(self, other: Kinds) -> Self {
        Self(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn contains(self, kind: RowKind) -> bool {
        self.0 & kind.bit() != 0
    }
}

/// The evidence for each kind of row.
#[derive(Debug, Default)]
pub(super) struct ByKind([PresumedNew; 3]);

impl ByKind {
    pub fn holds(&self, kind: RowKind) -> bool {
        self.0[kind as usize].holds()
    }

    /// A batch read these rows that were not kept, each of its kind and whether it was
    /// stored.
    pub fn read(&mut self, rows: impl Iterator<Item = (RowKind, bool)>) {
        let (mut unknown, mut stored) = ([0; 3], [0; 3]);
        for (kind, was_stored) in rows {
            unknown[kind as usize] += 1;
            stored[kind as usize] += usize::from(was_stored);
        }
        for kind in RowKind::ALL {
            let k = kind as usize;
            self.0[k].read(unknown[k], stored[k]);
        }
    }

    /// A batch that took rows of these kinds for new committed.
    pub fn held(&mut self, kinds: Kinds) {
        self.each(kinds, PresumedNew::held);
    }

    /// A batch that took rows of these kinds for new lost a race: which row did is not
    /// known, so each kind counts it.
    pub fn failed(&mut self, kinds: Kinds) {
        self.each(kinds, PresumedNew::failed);
    }

    fn each(&mut self, kinds: Kinds, f: fn(&mut PresumedNew)) {
        for kind in RowKind::ALL.into_iter().filter(|k| kinds.contains(*k)) {
            f(&mut self.0[kind as usize]);
        }
    }
}

#[derive(Debug)]
struct PresumedNew {
    /// Database reads in a row that found none of the rows missing from the kept ones.
    clean_reads: u32,
    needed: u32,
    /// Batches in a row that took rows for new and committed.
    held: u32,
}

impl Default for PresumedNew {
    fn default() -> Self {
        Self {
            clean_reads: 0,
            needed: FIRST_NEEDED,
            held: 0,
        }
    }
}

impl PresumedNew {
    /// Rows missing from the kept ones are taken for new.
    pub fn holds(&self) -> bool {
        self.clean_reads >= self.needed
    }

    /// A batch read `unknown` rows that were not kept; `stored` of them were in the
    /// database.
    pub fn read(&mut self, unknown: usize, stored: usize) {
        if unknown == 0 {
            return;
        }
        self.clean_reads = if stored == 0 {
            self.clean_reads.saturating_add(1)
        } else {
            0
        };
    }

    /// A batch that took rows for new committed: they were new.
    pub fn held(&mut self) {
        self.held += 1;
        if self.held >= self.needed {
            self.needed = (self.needed / 2).max(FIRST_NEEDED);
            self.held = 0;
        }
    }

    /// A batch that took rows for new lost a race: one of them was stored (or another
    /// writer changed a kept one; either way, read again for a while).
    pub fn failed(&mut self) {
        self.clean_reads = 0;
        self.held = 0;
        self.needed = (self.needed * 2).min(MOST_NEEDED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean_reads(p: &mut PresumedNew, n: u32) {
        for _ in 0..n {
            p.read(3, 0);
        }
    }

    #[test]
    fn rows_are_taken_for_new_only_after_a_run_of_reads_that_found_them_new() {
        let mut p = PresumedNew::default();
        clean_reads(&mut p, FIRST_NEEDED - 1);
        assert!(!p.holds());
        p.read(0, 0);
        assert!(!p.holds(), "a read of kept rows only is no evidence");
        p.read(4, 1);
        clean_reads(&mut p, FIRST_NEEDED - 1);
        assert!(!p.holds(), "a stored row starts the run again");
        p.read(2, 0);
        assert!(p.holds());
    }

    #[test]
    fn each_lost_race_doubles_the_run_needed_and_committed_batches_halve_it() {
        let mut p = PresumedNew::default();
        clean_reads(&mut p, FIRST_NEEDED);
        p.failed();
        clean_reads(&mut p, 2 * FIRST_NEEDED - 1);
        assert!(!p.holds());
        p.read(1, 0);
        assert!(p.holds());
        p.failed();
        clean_reads(&mut p, 4 * FIRST_NEEDED);
        assert!(p.holds());
        for _ in 0..4 * FIRST_NEEDED {
            p.held();
        }
        p.failed();
        clean_reads(&mut p, 4 * FIRST_NEEDED - 1);
        assert!(!p.holds(), "halved to 2×, doubled back to 4×");
        p.read(1, 0);
        assert!(p.holds());
    }

    #[test]
    fn each_kind_of_row_has_its_own_evidence() {
        let mut by_kind = ByKind::default();
        let rows = [
            (RowKind::Opening, false),
            (RowKind::Opening, false),
            (RowKind::Later, true),
            (RowKind::Session, false),
        ];
        for _ in 0..FIRST_NEEDED {
            by_kind.read(rows.into_iter());
        }
        assert!(by_kind.holds(RowKind::Opening));
        assert!(
            !by_kind.holds(RowKind::Later),
            "later statuses found stored rows"
        );
        assert!(by_kind.holds(RowKind::Session));
        by_kind.failed(Kinds::default().with(RowKind::Session));
        assert!(
            by_kind.holds(RowKind::Opening),
            "only the kinds taken for new"
        );
        assert!(!by_kind.holds(RowKind::Session));
    }

    #[test]
    fn the_run_needed_stays_within_its_bounds() {
        let mut p = PresumedNew::default();
        for _ in 0..20 {
            p.failed();
        }
        clean_reads(&mut p, MOST_NEEDED);
        assert!(p.holds());
        for _ in 0..100 * MOST_NEEDED {
            p.held();
        }
        p.failed();
        clean_reads(&mut p, 2 * FIRST_NEEDED - 1);
        assert!(!p.holds(), "never below the first run, doubled");
        p.read(1, 0);
        assert!(p.holds());
    }
}
