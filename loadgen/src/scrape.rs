//! Parsing the exporter's `/metrics` (OpenMetrics text) into samples, and summing them.

use std::collections::BTreeMap;

pub type Labels = BTreeMap<String, String>;

/// One parsed exposition: every sample line.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub samples: Vec<(String, Labels, f64)>,
}

impl Scrape {
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|line| {
                let (name_labels, value) = line.rsplit_once(' ')?;
                let (name, labels) = match name_labels.split_once('{') {
                    Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
                    None => (name_labels, Labels::new()),
                };
                Some((name.to_owned(), labels, value.parse::<f64>().ok()?))
            })
            .collect();
        Self { samples }
    }

    /// Sum of every sample of `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .sum()
    }

    /// Number of sample lines (what Prometheus stores as series), and of them those of
    /// `messaging_outbound_messages_total`.
    pub fn series(&self) -> usize {
        self.samples.len()
    }

    pub fn series_of(&self, name: &str) -> usize {
        self.samples.iter().filter(|(n, _, _)| n == name).count()
    }
}

fn parse_labels(s: &str) -> Labels {
    let mut out = Labels::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(k.trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_samples_matching_a_label_subset() {
        let s = Scrape::parse(
            "# TYPE messaging_outbound_messages counter\n\
             messaging_outbound_messages_total{provider=\"meta\",status=\"sent\",template=\"a\"} 3\n\
             messaging_outbound_messages_total{provider=\"meta\",status=\"sent\",template=\"b\\\"q\"} 4\n\
             messaging_outbound_messages_total{provider=\"meta\",status=\"read\",template=\"a\"} 1\n\
             # EOF\n",
        );
        assert_eq!(
            s.sum("messaging_outbound_messages_total", &[("status", "sent")]),
            7.0
        );
        assert_eq!(
            s.sum("messaging_outbound_messages_total", &[("template", "b\"q")]),
            4.0
        );
        assert_eq!(s.series(), 3);
    }
}
