//! Outbound message statuses and the funnel that orders them.

/// The contract's outbound status set, in funnel order.
///
/// `Accepted` is the bot's send hook; `Sent → Delivered → Read` is the provider's funnel;
/// `Failed` stands beside it (a multi-device user can see both `delivered` and `failed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Accepted,
    Sent,
    Delivered,
    Read,
    Failed,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Accepted,
        Status::Sent,
        Status::Delivered,
        Status::Read,
        Status::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Read => "read",
            Status::Failed => "failed",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// Statuses this one implies by the monotone funnel: read ⇒ delivered ⇒ sent.
    pub fn implied(self) -> StatusSet {
        let mut set = StatusSet::EMPTY.with(self);
        if self >= Status::Delivered && self != Status::Failed {
            set = set.with(Status::Sent);
        }
        if self == Status::Read {
            set = set.with(Status::Delivered);
        }
        set
    }
}

/// A small set of statuses, stored in the database as an integer bit mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusSet(u8);

impl StatusSet {
    pub const EMPTY: StatusSet = StatusSet(0);

    pub fn from_bits(bits: i64) -> Self {
        Self((bits & 0x1f) as u8)
    }

    pub fn bits(self) -> i64 {
        i64::from(self.0)
    }

    pub fn contains(self, s: Status) -> bool {
        self.0 & s.bit() != 0
    }

    #[must_use]
    pub fn with(self, s: Status) -> Self {
        Self(self.0 | s.bit())
    }

    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    #[must_use]
    pub fn minus(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Every status in the set plus those it implies by the funnel.
    #[must_use]
    pub fn closure(self) -> Self {
        self.iter().fold(self, |acc, s| acc.union(s.implied()))
    }

    /// Members in funnel order.
    pub fn iter(self) -> impl Iterator<Item = Status> {
        Status::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_implies_delivered_and_sent_but_not_accepted() {
        let set = StatusSet::EMPTY.with(Status::Read).closure();
        let got: Vec<_> = set.iter().collect();
        assert_eq!(got, vec![Status::Sent, Status::Delivered, Status::Read]);
    }

    #[test]
    fn failed_and_accepted_imply_nothing_else() {
        assert_eq!(
            Status::Failed.implied().iter().collect::<Vec<_>>(),
            vec![Status::Failed]
        );
        assert_eq!(
            Status::Accepted.implied().iter().collect::<Vec<_>>(),
            vec![Status::Accepted]
        );
    }

    #[test]
    fn closure_of_any_order_is_the_same() {
        let a = StatusSet::EMPTY
            .with(Status::Read)
            .with(Status::Sent)
            .closure();
        let b = StatusSet::EMPTY
            .with(Status::Sent)
            .with(Status::Delivered)
            .with(Status::Read);
        assert_eq!(a, b.closure());
    }

    #[test]
    fn bits_round_trip_and_ignore_unknown_high_bits() {
        let set = StatusSet::EMPTY
            .with(Status::Delivered)
            .with(Status::Failed);
        assert_eq!(StatusSet::from_bits(set.bits()), set);
        assert_eq!(StatusSet::from_bits(set.bits() | 0x100), set);
        assert_eq!(
            set.minus(StatusSet::EMPTY.with(Status::Failed))
                .iter()
                .count(),
            1
        );
    }
}
