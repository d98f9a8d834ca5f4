//! The rows this exporter committed lately, as committed. A batch whose messages (and
//! the sessions they need) are all here takes them instead of reading them: a small one
//! pays one round trip, its write-back (which is its commit), instead of two, and a large
//! one spares the database its read (a third of its work on batched webhooks). A bot's
//! statuses follow their send hook and each other within seconds, so most of its
//! batches find their rows here.
//!
//! A row taken from here is a read made earlier, and the write-back checks its version
//! as after any read: if another writer (a replica, the grace sweep) changed the row
//! meanwhile, the write is refused, nothing is counted, and the batch runs again from
//! the database. A lost race also empties the cache and turns it off for a minute, so
//! replicas that share messages do not pay a rerun per batch.
//!
//! While rows missing from here have lately proved new ([`PresumedNew`]), a batch takes
//! them for new instead of reading them.

use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

use crate::domain::message::MessageState;
use crate::domain::session::SessionState;
use crate::domain::{Channel, Provider};
use crate::store::{messages, sessions};

use super::presumed_new::{ByKind, Kinds, RowKind};

/// A message whose text (ids, template, error, …) is longer is not kept, so that the
/// cache's memory stays bounded whatever the providers send (Meta's errors are a few
/// hundred bytes).
const MAX_TEXT_BYTES: usize = 2_048;

/// Sessions kept per message kept. A session is a phone and six numbers, a tenth of a
/// message's size, and a bot writes to the same users again over hours: with as many
/// sessions as messages, the first status of a returning user's message found its
/// session gone and read it (and, in doing so, kept rows from being taken for new).
const SESSIONS_PER_MESSAGE: usize = 4;

/// How long the cache stays off after a batch lost a race for a row.
const OFF_AFTER_RACE_MS: i64 = 60_000;

pub(super) struct Recent {
    state: Mutex<State>,
}

struct State {
    /// By provider ([`provider_slot`]), then message id.
    messages: [Kept<messages::Loaded>; 2],
    sessions: Kept<sessions::Loaded>,
    /// `None`: nothing is kept (`--kept-rows 0`).
    capacity: Option<NonZeroUsize>,
    off_until_ms: i64,
    presumed_new: ByKind,
}

/// Rows taken out for a batch, in the order asked for.
pub(super) struct Taken<T> {
    pub rows: Vec<T>,
    /// The kinds of the rows that were not kept and are taken for new.
    pub new: Kinds,
}

impl State {
    fn empty(capacity: Option<NonZeroUsize>, off_until_ms: i64) -> Self {
        let cap = capacity.unwrap_or(NonZeroUsize::MIN);
        let sessions = cap.saturating_mul(NonZeroUsize::new(SESSIONS_PER_MESSAGE).unwrap());
        Self {
            messages: [Kept::new(cap), Kept::new(cap)],
            sessions: Kept::new(sessions),
            capacity,
            off_until_ms,
            presumed_new: ByKind::default(),
        }
    }

    /// Rows are kept and taken unless none are to be, or a race turned the cache off
    /// until after `now_ms`.
    fn on_at(&self, now_ms: i64) -> bool {
        self.capacity.is_some() && now_ms >= self.off_until_ms
    }
}

impl Recent {
    /// Keeps up to `capacity` messages of each provider and four times as many sessions
    /// (`--kept-rows`), the least recently kept going first; none if 0. A kept message
    /// takes about 1 KiB; a message's next status comes within seconds.
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State::empty(NonZeroUsize::new(capacity), 0)),
        }
    }

    /// Takes the stored state of every key (each of its [`RowKind`]) out, in the keys'
    /// order, if every one is here or rows of its kind missing from here are taken for
    /// new (and the cache is on at `now_ms`); else takes nothing. The batch gives its
    /// rows back once committed ([`Self::keep`]).
    pub fn take_messages(
        &self,
        keys: &[(Provider, &str, Channel)],
        kinds: &[RowKind],
        now_ms: i64,
    ) -> Option<Taken<messages::Loaded>> {
        let mut state = self.state.lock().expect("cache lock");
        let on = state.on_at(now_ms);
        let State {
            messages,
            presumed_new,
            ..
        } = &mut *state;
        let keys = keys
            .iter()
            .zip(kinds)
            .map(|(key @ (p, id, _), kind)| (provider_slot(*p), *id, *kind, key));
        take_all(on, presumed_new, messages, keys, |(p, id, channel)| {
            let state = MessageState::new(*p, (*id).to_owned(), *channel, now_ms);
            (state, None)
        })
    }

    /// Takes the stored session of every phone out, in the phones' order, as
    /// [`Self::take_messages`] does.
    pub fn take_sessions(&self, phones: &[&str], now_ms: i64) -> Option<Taken<sessions::Loaded>> {
        let mut state = self.state.lock().expect("cache lock");
        let on = state.on_at(now_ms);
        let State {
            sessions,
            presumed_new,
            ..
        } = &mut *state;
        let phones = phones.iter().map(|p| (0, *p, RowKind::Session, *p));
        take_all(
            on,
            presumed_new,
            std::slice::from_mut(sessions),
            phones,
            sessions::absent,
        )
    }

    /// A batch read these rows from the database: the ones not kept here show whether
    /// rows of their kind missing from here are new.
    pub fn read_from_database<'a>(
        &self,
        messages: impl Iterator<Item = (&'a MessageState, Option<i64>, RowKind)>,
        sessions: impl Iterator<Item = (&'a SessionState, Option<i64>)>,
    ) {
        let mut state = self.state.lock().expect("cache lock");
        let State {
            messages: kept_messages,
            sessions: kept_sessions,
            presumed_new,
            ..
        } = &mut *state;
        let not_kept = messages
            .filter(|(m, ..)| !kept_messages[provider_slot(m.provider)].contains(&m.message_id))
            .map(|(_, version, kind)| (kind, version.is_some()))
            .chain(
                sessions
                    .filter(|(s, _)| !kept_sessions.contains(&s.phone))
                    .map(|(_, version)| (RowKind::Session, version.is_some())),
            );
        presumed_new.read(not_kept);
    }

    /// A batch that took rows of these kinds for new committed.
    pub fn new_rows_held(&self, kinds: Kinds) {
        self.state
            .lock()
            .expect("cache lock")
            .presumed_new
            .held(kinds);
    }

    /// A batch that took rows of these kinds for new lost a race. The kept rows stay: a
    /// row taken for new is the likelier culprit, and if a kept one was, the reads that
    /// follow lose the next race and turn keeping off ([`Self::lost_race`]).
    pub fn new_rows_refused(&self, kinds: Kinds) {
        self.state
            .lock()
            .expect("cache lock")
            .presumed_new
            .failed(kinds);
    }

    /// Keeps rows as a batch committed them, each with the version it now has.
    pub fn keep(
        &self,
        messages: impl Iterator<Item = (MessageState, i64)>,
        sessions: impl Iterator<Item = (SessionState, i64)>,
        now_ms: i64,
    ) {
        let mut state = self.state.lock().expect("cache lock");
        if !state.on_at(now_ms) {
            return;
        }
        for (m, version) in messages.filter(|(m, _)| text_bytes(m) <= MAX_TEXT_BYTES) {
            let slot = provider_slot(m.provider);
            state.messages[slot].put((m, Some(version)));
        }
        for (s, version) in sessions {
            state.sessions.put((s, Some(version)));
        }
    }

    /// Drops the messages of these ids (of either provider): another path (the grace
    /// sweep) is writing them.
    pub fn forget<'a>(&self, ids: impl Iterator<Item = &'a str>) {
        let mut state = self.state.lock().expect("cache lock");
        for id in ids {
            for slot in &mut state.messages {
                slot.pop(id);
            }
        }
    }

    /// Empties the cache: rows were deleted (retention), and a kept copy of one must not
    /// be written back as if it were still stored.
    pub fn clear(&self) {
        let mut state = self.state.lock().expect("cache lock");
        *state = State::empty(state.capacity, state.off_until_ms);
    }

    /// Empties the cache and keeps it off until `OFF_AFTER_RACE_MS` after `now_ms`:
    /// another writer is changing the rows this exporter writes.
    pub fn lost_race(&self, now_ms: i64) {
        let mut state = self.state.lock().expect("cache lock");
        *state = State::empty(state.capacity, now_ms + OFF_AFTER_RACE_MS);
    }
}

/// A row that carries its own key (a message id, a phone).
trait KeyedRow {
    fn key(&self) -> &str;
}

impl KeyedRow for messages::Loaded {
    fn key(&self) -> &str {
        &self.0.message_id
    }
}

impl KeyedRow for sessions::Loaded {
    fn key(&self) -> &str {
        &self.0.phone
    }
}

/// Kept rows by a hash of their key, the least recently kept going first. The row holds
/// its key already: a second copy as the cache's key was a quarter of a kept session's
/// memory. Two keys of one hash are told apart by the key in the row; the later one
/// put evicts the other, which is then read again, as any row not kept.
struct Kept<V, S = RandomState> {
    /// Its table is sized for [`TABLE_ROOM`] times `capacity`, and rows past `capacity`
    /// are evicted here.
    rows: LruCache<u64, V>,
    capacity: NonZeroUsize,
    hasher: S,
}

/// A full cache replaces a row (a removal and an insert) for every new one it keeps. In
/// a table sized for the cache's bound, half full, the slots removals leave behind ran
/// out after some hundred thousand rows, and then the table doubled: a step of 1.1 MiB
/// in the soak's RSS late in its run, with 32,768 sessions rehashed under the lock. At a
/// quarter full the table cleans them up in place.
const TABLE_ROOM: NonZeroUsize = NonZeroUsize::new(2).unwrap();

impl<V: KeyedRow> Kept<V> {
    fn new(capacity: NonZeroUsize) -> Self {
        Self::with_hasher(capacity, RandomState::new())
    }
}

impl<V: KeyedRow, S: BuildHasher> Kept<V, S> {
    fn with_hasher(capacity: NonZeroUsize, hasher: S) -> Self {
        Self {
            rows: LruCache::new(capacity.saturating_mul(TABLE_ROOM)),
            capacity,
            hasher,
        }
    }

    fn slot(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn contains(&self, key: &str) -> bool {
        self.holds(self.slot(key), key)
    }

    fn pop(&mut self, key: &str) -> Option<V> {
        let slot = self.slot(key);
        self.holds(slot, key)
            .then(|| self.rows.pop(&slot))
            .flatten()
    }

    /// Whether the row at `slot` is `key`'s, not another key's of the same hash.
    fn holds(&self, slot: u64, key: &str) -> bool {
        self.rows.peek(&slot).is_some_and(|row| row.key() == key)
    }

    fn put(&mut self, row: V) {
        let slot = self.slot(row.key());
        if self.rows.len() >= self.capacity.get() && !self.rows.contains(&slot) {
            self.rows.pop_lru();
        }
        self.rows.put(slot, row);
    }
}

/// Pops every key (each with the index of its cache, its kind, and what `new` makes a
/// missing one of) if `on` and every one is there or of a kind `presumed_new` takes for
/// new; else pops none, so a batch that must read anyway leaves the kept rows in place.
fn take_all<'k, K, V: KeyedRow>(
    on: bool,
    presumed_new: &ByKind,
    caches: &mut [Kept<V>],
    keys: impl Iterator<Item = (usize, &'k str, RowKind, K)> + Clone,
    new: impl Fn(K) -> V,
) -> Option<Taken<V>> {
    let found = |(c, k, kind, _): (usize, &str, RowKind, K)| {
        caches[c].contains(k) || presumed_new.holds(kind)
    };
    if !on || !keys.clone().all(found) {
        return None;
    }
    let mut taken = Taken {
        rows: Vec::with_capacity(keys.size_hint().0),
        new: Kinds::default(),
    };
    for (c, k, kind, key) in keys {
        let row = caches[c].pop(k).unwrap_or_else(|| {
            taken.new = taken.new.with(kind);
            new(key)
        });
        taken.rows.push(row);
    }
    Some(taken)
}

/// The bytes of a message's text fields.
fn text_bytes(m: &MessageState) -> usize {
    let hook = m.hook.as_ref().map_or(0, |h| h.template.len());
    let error = m.error.as_ref().map_or(0, |e| {
        e.code.len() + e.title.len() + e.message.len() + e.details.len()
    });
    let pricing = m.pricing.as_ref().map_or(0, |p| {
        p.kind.as_ref().map_or(0, String::len) + p.category.as_ref().map_or(0, String::len)
    });
    m.message_id.len()
        + m.phone.as_ref().map_or(0, |p| p.as_str().len())
        + hook
        + error
        + pricing
        + m.labels.as_ref().map_or(0, |l| l.template.len())
        + m.currency.len()
        + m.reservation_id.len()
}

fn provider_slot(provider: Provider) -> usize {
    match provider {
        Provider::Meta => 0,
        Provider::Twilio => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPACITY: usize = 100;

    /// Takes messages as the batch of a later status of each would.
    fn take(
        recent: &Recent,
        keys: &[(Provider, &str, Channel)],
        now_ms: i64,
    ) -> Option<Taken<messages::Loaded>> {
        recent.take_messages(keys, &vec![RowKind::Later; keys.len()], now_ms)
    }

    #[test]
    fn a_message_with_long_text_is_not_kept() {
        use crate::domain::message::MessageError;
        let recent = Recent::new(CAPACITY);
        let with_error = |id: &str, len: usize| {
            let mut m = MessageState::new(Provider::Meta, id.into(), Channel::Whatsapp, 0);
            m.error = Some(MessageError {
                code: "131026".into(),
                title: "Message undeliverable".into(),
                message: String::new(),
                details: "x".repeat(len),
            });
            m
        };
        let (short, long) = (with_error("short", 500), with_error("long", MAX_TEXT_BYTES));
        recent.keep([(short, 1), (long, 1)].into_iter(), std::iter::empty(), 0);
        let key = |id| [(Provider::Meta, id, Channel::Whatsapp)];
        assert!(take(&recent, &key("short"), 0).is_some());
        assert!(
            take(&recent, &key("long"), 0).is_none(),
            "read again instead"
        );
    }

    #[test]
    fn past_its_capacity_the_least_recently_kept_rows_go() {
        let recent = Recent::new(CAPACITY);
        let m = |i: usize| {
            let id = format!("wamid.{i}");
            MessageState::new(Provider::Meta, id, Channel::Whatsapp, 0)
        };
        let n = CAPACITY + 10;
        recent.keep((0..n).map(|i| (m(i), 0)), std::iter::empty(), 0);
        let ids: Vec<String> = (0..n).map(|i| format!("wamid.{i}")).collect();
        let key = |i: usize| [(Provider::Meta, ids[i].as_str(), Channel::Whatsapp)];
        assert!(
            take(&recent, &key(9), 0).is_none(),
            "among the first ten: gone"
        );
        assert!(take(&recent, &key(10), 0).is_some());
        assert!(take(&recent, &key(n - 1), 0).is_some());
        assert!(
            take(&recent, &key(n - 1), 0).is_none(),
            "taken rows are gone"
        );
    }

    #[test]
    fn four_sessions_are_kept_for_each_message() {
        let recent = Recent::new(CAPACITY);
        let n = 4 * CAPACITY + 1;
        let phones: Vec<String> = (0..n).map(|i| format!("+55119{i:08}")).collect();
        let session = |p: &String| (sessions::absent(p).0, 1);
        recent.keep(std::iter::empty(), phones.iter().map(session), 0);
        assert!(
            recent.take_sessions(&[&phones[0]], 0).is_none(),
            "the first went"
        );
        let rest: Vec<&str> = phones[1..].iter().map(String::as_str).collect();
        assert_eq!(
            recent.take_sessions(&rest, 0).unwrap().rows.len(),
            4 * CAPACITY
        );
    }

    #[test]
    fn a_full_cache_keeps_its_memory_while_it_replaces_rows() {
        let capacity = 32_768;
        let mut kept = Kept::new(NonZeroUsize::new(capacity).unwrap());
        let session = |i: usize| (sessions::absent(&format!("+55119{i:08}")).0, Some(1));
        (0..capacity).for_each(|i| kept.put(session(i)));
        // A table sized for the bound alone doubled (+1.1 MiB) after about 300,000. This
        // thread's bytes only: other tests allocate beside it.
        let grown = allocation_counter::measure(|| {
            (capacity..capacity + 400_000).for_each(|i| kept.put(session(i)));
        })
        .bytes_current;
        assert!(grown < 512 * 1024, "{grown} bytes more once full");
        assert_eq!(kept.rows.len(), capacity);
    }

    /// Every key hashes alike.
    #[derive(Default)]
    struct OneHash;

    impl std::hash::Hasher for OneHash {
        fn finish(&self) -> u64 {
            7
        }
        fn write(&mut self, _: &[u8]) {}
    }

    #[test]
    fn keys_of_one_hash_are_told_apart_and_the_later_one_kept() {
        let hasher = std::hash::BuildHasherDefault::<OneHash>::default();
        let mut kept = Kept::with_hasher(NonZeroUsize::new(CAPACITY).unwrap(), hasher);
        kept.put(sessions::absent("+5511900000001"));
        assert!(kept.contains("+5511900000001"));
        kept.put(sessions::absent("+5511900000002"));
        assert!(
            !kept.contains("+5511900000001"),
            "the later key evicts the earlier"
        );
        assert_eq!(kept.pop("+5511900000001"), None);
        assert!(
            kept.contains("+5511900000002"),
            "a pop of another key leaves it"
        );
        assert_eq!(
            kept.pop("+5511900000002").map(|(s, _)| s.phone),
            Some("+5511900000002".to_owned())
        );
        assert!(!kept.contains("+5511900000002"));
    }

    #[test]
    fn a_batch_takes_all_its_rows_or_none_and_a_lost_race_turns_keeping_off() {
        let recent = Recent::new(CAPACITY);
        let m = |id: &str| MessageState::new(Provider::Meta, id.into(), Channel::Whatsapp, 0);
        recent.keep(
            [(m("a"), 3), (m("b"), 0)].into_iter(),
            std::iter::empty(),
            10,
        );
        let key = |id| (Provider::Meta, id, Channel::Whatsapp);
        assert!(take(&recent, &[key("a"), key("c")], 10).is_none());
        let taken = take(&recent, &[key("b"), key("a")], 10).unwrap();
        assert!(taken.new.is_empty());
        let got: Vec<_> = taken
            .rows
            .iter()
            .map(|(m, v)| (m.message_id.as_str(), *v))
            .collect();
        assert_eq!(got, [("b", Some(0)), ("a", Some(3))]);
        assert!(take(&recent, &[key("a")], 10).is_none());
        let twilio = (Provider::Twilio, "a", Channel::Sms);
        recent.keep([(m("a"), 4)].into_iter(), std::iter::empty(), 10);
        assert!(
            take(&recent, &[twilio], 10).is_none(),
            "ids are per provider"
        );

        recent.lost_race(100);
        assert!(take(&recent, &[key("a")], 100).is_none(), "emptied");
        recent.keep([(m("a"), 5)].into_iter(), std::iter::empty(), 100 + 59_999);
        assert!(
            take(&recent, &[key("a")], 100 + 60_000).is_none(),
            "not kept while off"
        );
        recent.keep([(m("a"), 6)].into_iter(), std::iter::empty(), 100 + 60_000);
        let taken = take(&recent, &[key("a")], 100 + 60_000).unwrap();
        assert_eq!(taken.rows[0].1, Some(6));
    }

    #[test]
    fn after_reads_that_found_missing_rows_new_they_are_taken_for_new_until_a_lost_race() {
        use RowKind::{Later, Opening};
        let recent = Recent::new(CAPACITY);
        let m = |id: &str| MessageState::new(Provider::Meta, id.into(), Channel::Whatsapp, 0);
        let key = |id| (Provider::Meta, id, Channel::Whatsapp);
        let keys = [key("kept"), key("new")];
        recent.keep([(m("kept"), 2)].into_iter(), std::iter::empty(), 0);
        for i in 0..8 {
            assert!(recent.take_messages(&keys, &[Later, Opening], 0).is_none());
            let read = [
                (m("kept"), Some(2), Later),
                (m(&format!("new.{i}")), None, Opening),
                (m(&format!("later.{i}")), Some(1), Later),
            ];
            let session = sessions::absent("+5511");
            recent.read_from_database(
                read.iter().map(|(m, v, kind)| (m, *v, *kind)),
                std::iter::once((&session.0, session.1)),
            );
        }
        let taken = recent
            .take_messages(&keys, &[Later, Opening], 0)
            .expect("the missing row is taken for new");
        assert_eq!(taken.new, Kinds::default().with(Opening));
        let got: Vec<_> = taken
            .rows
            .iter()
            .map(|(m, v)| (m.message_id.as_str(), *v))
            .collect();
        assert_eq!(got, [("kept", Some(2)), ("new", None)]);
        assert!(
            recent.take_messages(&[key("late")], &[Later], 0).is_none(),
            "later statuses found stored rows that were not kept"
        );
        let sessions = recent.take_sessions(&["+5511"], 0).unwrap();
        let session_kind = Kinds::default().with(RowKind::Session);
        assert_eq!((sessions.new, sessions.rows[0].1), (session_kind, None));

        recent.keep([(m("kept"), 3)].into_iter(), std::iter::empty(), 0);
        recent.new_rows_refused(taken.new);
        assert!(
            recent.take_messages(&[key("new")], &[Opening], 0).is_none(),
            "read again"
        );
        assert!(
            recent.take_messages(&[key("kept")], &[Later], 0).is_some(),
            "the kept rows stay"
        );
        assert!(
            recent.take_sessions(&["+5522"], 0).is_some(),
            "sessions were not taken for new by the batch that lost"
        );
    }

    #[test]
    fn with_no_capacity_nothing_is_kept() {
        let recent = Recent::new(0);
        let m = MessageState::new(Provider::Meta, "a".into(), Channel::Whatsapp, 0);
        recent.keep([(m, 1)].into_iter(), std::iter::empty(), 0);
        let key = [(Provider::Meta, "a", Channel::Whatsapp)];
        assert!(take(&recent, &key, 0).is_none());
        assert!(
            recent.take_sessions(&[], 0).is_none(),
            "not even for no phones"
        );
    }
}
