//! Just enough of PromQL's lexical structure to list the vector selectors of an
//! expression (metric name and matchers), skipping strings, ranges, Grafana variables,
//! function names, keywords and the label lists of `by (...)`, `on (...)` and the like.

/// One vector selector: `metric{matchers}` (matchers as written, without the braces).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    pub metric: String,
    pub matchers: String,
}

impl Selector {
    /// Whether the matchers contain `m` as written (e.g. `job="messaging-exporter"`).
    pub fn has(&self, m: &str) -> bool {
        self.matchers.contains(m)
    }
}

const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Operators, and aggregations (which may be followed by `by (...)` rather than `(`).
const KEYWORDS: [&str; 20] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The index just past the bracket that closes the one at `open`, strings skipped.
fn close(chars: &[char], open: usize) -> usize {
    let (o, c) = (
        chars[open],
        match chars[open] {
            '(' => ')',
            '[' => ']',
            _ => '}',
        },
    );
    let mut depth = 0;
    let mut i = open;
    while i < chars.len() {
        match chars[i] {
            q @ ('"' | '\'' | '`') => {
                i = skip_string(chars, i, q);
                continue;
            }
            x if x == o => depth += 1,
            x if x == c => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    chars.len()
}

fn skip_string(chars: &[char], start: usize, quote: char) -> usize {
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 1,
            c if c == quote => return i + 1,
            _ => {}
        }
        i += 1;
    }
    chars.len()
}

fn next_non_space(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

pub fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i, c);
        } else if c == '[' {
            i = close(&chars, i);
        } else if c == '$' {
            // A Grafana variable: $name or ${name}.
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = close(&chars, i);
            } else {
                while i < chars.len() && is_name(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers and durations (1e3, 0.01, 1w).
            while i < chars.len() && (is_name(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c == '{' {
            let end = close(&chars, i);
            out.push(Selector {
                metric: String::new(),
                matchers: chars[i + 1..end - 1].iter().collect(),
            });
            i = end;
        } else if is_name(c) {
            let start = i;
            while i < chars.len() && is_name(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let j = next_non_space(&chars, i);
            match chars.get(j) {
                Some('(') if LABEL_LISTS.contains(&word.as_str()) => i = close(&chars, j),
                Some('(') => {}
                _ if LABEL_LISTS.contains(&word.as_str()) || KEYWORDS.contains(&word.as_str()) => {}
                Some('{') => {
                    let end = close(&chars, j);
                    out.push(Selector {
                        metric: word,
                        matchers: chars[j + 1..end - 1].iter().collect(),
                    });
                    i = end;
                }
                _ => out.push(Selector {
                    metric: word,
                    matchers: String::new(),
                }),
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The metric names an expression reads, each once, in order.
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for s in selectors(expr) {
        if !s.metric.is_empty() && !names.contains(&s.metric) {
            names.push(s.metric);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_metric_names_but_not_labels_or_strings() {
        let e = r#"sum by (provider) (rate(messaging_a_total{status="x:y"}[5m])) / a:b:c or up{job="j"}"#;
        assert_eq!(metric_names(e), vec!["messaging_a_total", "a:b:c", "up"]);
    }

    #[test]
    fn lists_selectors_past_functions_keywords_variables_and_label_lists() {
        let e = r#"histogram_quantile(0.95, sum by (job, le) (rate(x_bucket{job=~"$job", a="}"}[$__rate_interval])))
            > on (job) group_left (currency) 0.1 * b:c:d offset 1w and ignoring(x) y unless absent(up{j="k"}) or vector(1)"#;
        let got: Vec<(String, String)> = selectors(e)
            .into_iter()
            .map(|s| (s.metric, s.matchers))
            .collect();
        assert_eq!(
            got,
            vec![
                ("x_bucket".into(), r#"job=~"$job", a="}""#.into()),
                ("b:c:d".into(), String::new()),
                ("y".into(), String::new()),
                ("up".into(), r#"j="k""#.into()),
            ]
        );
    }
}
