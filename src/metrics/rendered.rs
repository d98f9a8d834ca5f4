//! Counter families labelled by template. With the label limit raised they hold up to
//! 100k series, nearly all of a scrape. prometheus-client writes each sample as some 35
//! writes through `dyn Write`; a series of these keeps its name and labels as one escaped
//! string, made when the series is, so a scrape appends that string, the value and a
//! newline (100k series: 4.4 ms against 34 ms, `cargo bench --bench exposition`).

use std::hash::Hash;
use std::sync::atomic::AtomicU64;
use std::sync::{RwLock, RwLockReadGuard};

use indexmap::IndexMap;
use prometheus_client::metrics::counter::Counter;

use super::cap::{Capped, SeriesCap};

/// A key of a family: its label names and values, in exposition order.
pub trait LabelSet: Hash + Eq {
    fn each(&self, label: &mut dyn FnMut(&'static str, &str));
}

/// A counter as the exposition writes its value (prometheus-client's number formats).
pub trait Sample: Default {
    fn write(&self, out: &mut String);
}

impl Sample for Counter {
    fn write(&self, out: &mut String) {
        out.push_str(itoa::Buffer::new().format(self.get()));
    }
}

impl Sample for Counter<f64, AtomicU64> {
    fn write(&self, out: &mut String) {
        out.push_str(dtoa::Buffer::new().format(self.get()));
    }
}

struct Series<C> {
    /// `name_total{label="value",…} `
    head: Box<str>,
    counter: C,
}

/// In the order the series were made: a scrape reads the entries and their strings
/// (allocated in that order too) front to back, not in hash order across 100k of them.
pub struct RenderedCounters<K, C> {
    name: &'static str,
    help: &'static str,
    cap: SeriesCap,
    series: RwLock<IndexMap<K, Series<C>>>,
}

impl<K: LabelSet + Capped, C: Sample> RenderedCounters<K, C> {
    pub fn new(name: &'static str, help: &'static str, cap: SeriesCap) -> Self {
        Self {
            name,
            help,
            cap,
            series: RwLock::new(IndexMap::new()),
        }
    }

    /// Applies `f` to the counter of `key`, made (at zero) if new, or of its overflowed
    /// labels when the family is full. Counting takes the read lock, shared with scrapes;
    /// only a new series waits for one to end.
    pub fn with(&self, key: K, f: impl FnOnce(&C)) {
        if let Some(s) = self.read().get(&key) {
            return f(&s.counter);
        }
        let mut all = self.series.write().unwrap_or_else(|p| p.into_inner());
        let key = if all.contains_key(&key) {
            key
        } else {
            self.cap.place(key, all.len())
        };
        let series = all.entry(key).or_insert_with_key(|key| Series {
            head: head(self.name, key),
            counter: C::default(),
        });
        f(&series.counter);
    }

    /// Appends the family in the OpenMetrics text format, as prometheus-client's
    /// registry would (help, type, then one line per series).
    pub fn encode(&self, out: &mut String) {
        let (name, help) = (self.name, self.help);
        out.push_str(&format!("# HELP {name} {help}.\n# TYPE {name} counter\n"));
        for s in self.read().values() {
            out.push_str(&s.head);
            s.counter.write(out);
            out.push('\n');
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, IndexMap<K, Series<C>>> {
        self.series.read().unwrap_or_else(|p| p.into_inner())
    }

    /// What a scrape holds while it encodes the family.
    #[cfg(test)]
    pub(super) fn hold_read_lock(&self) -> impl Drop + '_ {
        self.read()
    }
}

fn head(name: &str, key: &impl LabelSet) -> Box<str> {
    let mut out = format!("{name}_total{{");
    let mut first = true;
    key.each(&mut |label, value| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(label);
        out.push_str("=\"");
        push_escaped(&mut out, value);
        out.push('"');
    });
    out.push_str("} ");
    out.into_boxed_str()
}

/// A label value as OpenMetrics writes it: backslash, double quote and line feed
/// escaped, so that free text (a template or model name) cannot break the exposition.
pub fn push_escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::registry::Registry;

    use super::*;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Pair {
        kind: &'static str,
        name: String,
    }

    impl LabelSet for Pair {
        fn each(&self, label: &mut dyn FnMut(&'static str, &str)) {
            label("kind", self.kind);
            label("name", &self.name);
        }
    }

    impl Capped for Pair {
        fn overflowed(&self) -> Self {
            Self {
                kind: self.kind,
                name: "other".to_owned(),
            }
        }
    }

    fn uncapped() -> SeriesCap {
        SeriesCap::new(usize::MAX, Counter::default())
    }

    fn lines(text: &str) -> Vec<&str> {
        let mut lines: Vec<&str> = text.lines().filter(|l| *l != "# EOF").collect();
        lines.sort_unstable();
        lines
    }

    /// The same series and values through prometheus-client's own family and registry.
    fn as_prometheus_client_writes_it<C>(keys: &[(Pair, u32)], add: fn(&C, u32)) -> String
    where
        C: Sample + prometheus_client::encoding::EncodeMetric + Clone + 'static,
        C: prometheus_client::metrics::TypedMetric,
        C: std::fmt::Debug + Send + Sync,
    {
        let family = Family::<Pair, C>::default();
        for (key, n) in keys {
            add(&family.get_or_create(key), *n);
        }
        let mut registry = Registry::default();
        registry.register("things", "Things by kind", family);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    fn ours<C: Sample>(keys: &[(Pair, u32)], add: fn(&C, u32)) -> String {
        let family = RenderedCounters::<Pair, C>::new("things", "Things by kind", uncapped());
        for (key, n) in keys {
            family.with(key.clone(), |c| add(c, *n));
        }
        let mut text = String::new();
        family.encode(&mut text);
        text
    }

    fn keys() -> Vec<(Pair, u32)> {
        (0..50u32)
            .map(|i| {
                let kind = ["a", "b", "c"][i as usize % 3];
                let name = format!("tpl_{}", i % 17);
                (Pair { kind, name }, i)
            })
            .collect()
    }

    #[test]
    fn integer_counters_are_written_as_prometheus_client_writes_them() {
        let add: fn(&Counter, u32) = |c, n| {
            c.inc_by(u64::from(n) * 1_000_003);
        };
        let (ours, theirs) = (
            ours(&keys(), add),
            as_prometheus_client_writes_it(&keys(), add),
        );
        assert_eq!(lines(&ours), lines(&theirs));
        assert!(ours.starts_with("# HELP things Things by kind.\n# TYPE things counter\n"));
    }

    #[test]
    fn float_counters_are_written_as_prometheus_client_writes_them() {
        let add: fn(&Counter<f64, AtomicU64>, u32) = |c, n| {
            c.inc_by(f64::from(n) * 0.0125 + 1e-9);
        };
        let (ours, theirs) = (
            ours(&keys(), add),
            as_prometheus_client_writes_it(&keys(), add),
        );
        assert_eq!(lines(&ours), lines(&theirs));
    }

    #[test]
    fn a_series_is_counted_on_after_it_is_made() {
        let family = RenderedCounters::<Pair, Counter>::new("things", "Things", uncapped());
        let key = || Pair {
            kind: "a",
            name: "x".into(),
        };
        for _ in 0..3 {
            family.with(key(), |c| {
                c.inc();
            });
        }
        let mut text = String::new();
        family.encode(&mut text);
        assert!(
            text.ends_with("counter\nthings_total{kind=\"a\",name=\"x\"} 3\n"),
            "{text}"
        );
    }

    #[test]
    fn quotes_backslashes_and_line_feeds_in_values_are_escaped() {
        let family = RenderedCounters::<Pair, Counter>::new("things", "Things", uncapped());
        let name = "say \"hi\"\\\nbye".to_owned();
        family.with(Pair { kind: "a", name }, |c| {
            c.inc();
        });
        let mut text = String::new();
        family.encode(&mut text);
        let sample = text.lines().nth(2).unwrap();
        assert_eq!(
            sample,
            r#"things_total{kind="a",name="say \"hi\"\\\nbye"} 1"#
        );
    }

    #[test]
    fn a_full_family_writes_a_new_series_under_its_overflowed_labels() {
        let overflow = Counter::default();
        let cap = SeriesCap::new(1, overflow.clone());
        let family = RenderedCounters::<Pair, Counter>::new("things", "Things", cap);
        for name in ["x", "y", "z", "x"] {
            let key = Pair {
                kind: "a",
                name: name.to_owned(),
            };
            family.with(key, |c| {
                c.inc();
            });
        }
        let mut text = String::new();
        family.encode(&mut text);
        assert_eq!(
            lines(&text)[2..],
            [
                r#"things_total{kind="a",name="other"} 2"#,
                r#"things_total{kind="a",name="x"} 2"#,
            ]
        );
        assert_eq!(overflow.get(), 2);
    }
}
