//! A strict reader for the block-style YAML subset the shipped config files use, into
//! `serde_json::Value` (every scalar a string, empty values null). The crate has no YAML
//! dependency; anything outside the subset (anchors, aliases, nested flow collections,
//! tabs, several documents) is an error rather than a guess.

use serde_json::{Map, Value};

#[derive(Clone, Debug)]
struct Line {
    no: usize,
    indent: usize,
    text: String,
    /// The line as written, for block scalars.
    raw: String,
}

pub fn parse(source: &str) -> Result<Value, String> {
    let mut lines = Vec::new();
    for (i, raw) in source.lines().enumerate() {
        if raw.contains('\t') {
            return Err(format!("line {}: tab characters are not supported", i + 1));
        }
        let text = strip_comment(raw).trim_end().to_owned();
        let indent = raw.len() - raw.trim_start().len();
        lines.push(Line {
            no: i + 1,
            indent,
            text: text.trim_start().to_owned(),
            raw: raw.to_owned(),
        });
    }
    let mut p = Parser { lines, i: 0 };
    p.skip_blank();
    if p.i >= p.lines.len() {
        return Ok(Value::Null);
    }
    if p.lines[p.i].text == "---" {
        p.i += 1;
        p.skip_blank();
    }
    let indent = p.lines[p.i].indent;
    let v = p.block(indent)?;
    p.skip_blank();
    if p.i < p.lines.len() {
        let l = &p.lines[p.i];
        return Err(format!("line {}: unexpected content {:?}", l.no, l.text));
    }
    Ok(v)
}

struct Parser {
    lines: Vec<Line>,
    i: usize,
}

impl Parser {
    fn skip_blank(&mut self) {
        while self.i < self.lines.len() && self.lines[self.i].text.is_empty() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<&Line> {
        self.skip_blank();
        self.lines.get(self.i)
    }

    fn block(&mut self, indent: usize) -> Result<Value, String> {
        let line = self.peek().ok_or("unexpected end of file")?;
        if is_seq_item(&line.text) {
            self.seq(indent)
        } else {
            self.map(indent)
        }
    }

    fn map(&mut self, indent: usize) -> Result<Value, String> {
        let mut out = Map::new();
        while let Some(line) = self.peek() {
            if line.indent < indent || is_seq_item(&line.text) {
                break;
            }
            let line = line.clone();
            if line.indent > indent {
                return Err(format!("line {}: unexpected indentation", line.no));
            }
            let (key, rest) = split_key(&line.text).ok_or_else(|| {
                format!(
                    "line {}: expected `key: value`, got {:?}",
                    line.no, line.text
                )
            })?;
            self.i += 1;
            let value = self.value_after_key(indent, &rest, line.no)?;
            if out.insert(key.clone(), value).is_some() {
                return Err(format!("line {}: duplicate key {key:?}", line.no));
            }
        }
        Ok(Value::Object(out))
    }

    fn value_after_key(&mut self, indent: usize, rest: &str, no: usize) -> Result<Value, String> {
        if matches!(rest, "|" | "|-" | ">" | ">-") {
            return Ok(Value::String(self.block_scalar(indent, rest)));
        }
        if !rest.is_empty() {
            return scalar(rest).map_err(|e| format!("line {no}: {e}"));
        }
        match self.peek() {
            Some(next) if next.indent > indent => {
                let ni = next.indent;
                self.block(ni)
            }
            // Compose style: a sequence at the same indentation as its key.
            Some(next) if next.indent == indent && is_seq_item(&next.text) => self.seq(indent),
            _ => Ok(Value::Null),
        }
    }

    fn seq(&mut self, indent: usize) -> Result<Value, String> {
        let mut out = Vec::new();
        while let Some(line) = self.peek() {
            if line.indent != indent || !is_seq_item(&line.text) {
                if line.indent > indent {
                    return Err(format!("line {}: unexpected indentation", line.no));
                }
                break;
            }
            let line = line.clone();
            let rest = line.text[1..].trim_start().to_owned();
            if rest.is_empty() {
                self.i += 1;
                let next = self.peek().ok_or("unexpected end of file")?.clone();
                if next.indent <= indent {
                    out.push(Value::Null);
                    continue;
                }
                out.push(self.block(next.indent)?);
            } else if split_key(&rest).is_some() && !starts_quoted_or_flow(&rest) {
                // `- key: value` opens a mapping whose keys line up with `key`.
                let offset = line.text.len() - rest.len();
                self.lines[self.i].indent = indent + offset;
                self.lines[self.i].text = rest;
                out.push(self.map(indent + offset)?);
            } else {
                self.i += 1;
                out.push(scalar(&rest).map_err(|e| format!("line {}: {e}", line.no))?);
            }
        }
        Ok(Value::Array(out))
    }

    /// `|` keeps newlines, `>` folds them into spaces; `-` drops the final newline.
    fn block_scalar(&mut self, indent: usize, style: &str) -> String {
        let mut body: Vec<String> = Vec::new();
        let mut content_indent = None;
        while self.i < self.lines.len() {
            let l = &self.lines[self.i];
            if l.raw.trim().is_empty() {
                body.push(String::new());
                self.i += 1;
                continue;
            }
            if l.indent <= indent {
                break;
            }
            let ci = *content_indent.get_or_insert(l.indent);
            body.push(l.raw.get(ci.min(l.indent)..).unwrap_or("").to_owned());
            self.i += 1;
        }
        while body.last().is_some_and(|s| s.is_empty()) {
            body.pop();
        }
        let mut text = if style.starts_with('>') {
            body.join(" ")
        } else {
            body.join("\n")
        };
        if !style.ends_with('-') {
            text.push('\n');
        }
        text
    }
}

fn is_seq_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

fn starts_quoted_or_flow(s: &str) -> bool {
    s.starts_with(['"', '\'', '[', '{'])
}

/// Removes a ` #` comment that is outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev.is_whitespace() => return &line[..i],
            None => {}
        }
        prev = c;
    }
    line
}

/// `key: rest` (rest may be empty) when the line is a mapping entry.
fn split_key(text: &str) -> Option<(String, String)> {
    if starts_quoted_or_flow(text) {
        return None;
    }
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' ') {
            let key = text[..i].trim();
            if key.is_empty() || key.contains(' ') && !key.starts_with('"') {
                return None;
            }
            return Some((key.to_owned(), text[i + 1..].trim().to_owned()));
        }
    }
    None
}

fn scalar(s: &str) -> Result<Value, String> {
    let s = s.trim();
    if s.is_empty() || s == "~" || s == "null" {
        return Ok(Value::Null);
    }
    if s.starts_with(['&', '*', '!']) {
        return Err(format!(
            "anchors, aliases and tags are not supported: {s:?}"
        ));
    }
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| format!("unterminated flow sequence {s:?}"))?;
        return flow_items(inner)?
            .iter()
            .map(|item| scalar(item))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if s == "{}" {
        return Ok(Value::Object(Map::new()));
    }
    if s.starts_with('{') {
        return Err(format!("flow mappings are not supported: {s:?}"));
    }
    if s.starts_with('"') {
        return double_quoted(s).map(Value::String);
    }
    if let Some(inner) = s.strip_prefix('\'') {
        let inner = inner
            .strip_suffix('\'')
            .ok_or_else(|| format!("unterminated string {s:?}"))?;
        return Ok(Value::String(inner.replace("''", "'")));
    }
    Ok(Value::String(s.to_owned()))
}

fn double_quoted(s: &str) -> Result<String, String> {
    let inner = s
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .ok_or_else(|| format!("unterminated string {s:?}"))?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(c @ ('"' | '\\' | '/')) => out.push(c),
            other => return Err(format!("unsupported escape \\{other:?} in {s:?}")),
        }
    }
    Ok(out)
}

/// Splits the inside of `[...]` at commas outside quotes.
fn flow_items(inner: &str) -> Result<Vec<String>, String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    let mut escaped = false;
    for c in inner.chars() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '[' || c == '{' => {
                return Err("nested flow collections are not supported".into())
            }
            None if c == ',' => {
                items.push(std::mem::take(&mut cur));
                continue;
            }
            None => {}
        }
        cur.push(c);
    }
    if quote.is_some() {
        return Err(format!("unterminated string in [{inner}]"));
    }
    items.push(cur);
    let items: Vec<String> = items.into_iter().map(|s| s.trim().to_owned()).collect();
    if items.len() == 1 && items[0].is_empty() {
        return Ok(Vec::new());
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::parse;
    use serde_json::json;

    #[test]
    fn reads_the_subset_the_shipped_files_use() {
        let doc = r#"
# comment
name: stack   # trailing comment
services:
  web:
    ports:
      - "9469:9469"
    command: ["a", 'b c', "x \"y\""]
    env:
    - A=1
    - B
  list:
    - key: one
      other: 'it''s'
    -
      nested: yes
expr: |
  sum(x)
  / 2
folded: >-
  a
  b
empty:
none: []
"#;
        let v = parse(doc).unwrap();
        assert_eq!(
            v,
            json!({
                "name": "stack",
                "services": {
                    "web": {"ports": ["9469:9469"], "command": ["a", "b c", "x \"y\""],
                            "env": ["A=1", "B"]},
                    "list": [{"key": "one", "other": "it's"}, {"nested": "yes"}]
                },
                "expr": "sum(x)\n/ 2\n",
                "folded": "a b",
                "empty": null,
                "none": []
            })
        );
    }

    #[test]
    fn rejects_what_it_does_not_understand() {
        assert!(parse("a: &x 1\nb: *x\n").is_err());
        assert!(parse("a:\n\tb: 1\n").is_err());
        assert!(parse("a: [1, [2]]\n").is_err());
        assert!(parse("a: 1\na: 2\n").is_err());
        assert!(parse("a:\n  b: 1\n   c: 2\n").is_err());
    }
}
