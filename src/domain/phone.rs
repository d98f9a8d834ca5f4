//! Phone numbers as the providers send them, normalised to digits only.

use std::fmt;

/// A phone number in E.164 form without the `+`: 7 to 15 digits.
///
/// Accepts `+14155550100`, `14155550100` and `whatsapp:+14155550100`; spaces, dashes,
/// dots and parentheses are tolerated because people paste numbers that way.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Phone(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "not a phone number: expected 7 to 15 digits, optionally with a leading + or whatsapp: prefix"
)]
pub struct InvalidPhone;

impl Phone {
    pub fn parse(raw: &str) -> Result<Self, InvalidPhone> {
        let s = raw.trim();
        let s = s.strip_prefix("whatsapp:").unwrap_or(s).trim_start();
        let s = s.strip_prefix('+').unwrap_or(s);
        let mut digits = String::with_capacity(s.len());
        for c in s.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(InvalidPhone),
            }
        }
        if !(7..=15).contains(&digits.len()) || digits.starts_with('0') {
            return Err(InvalidPhone);
        }
        Ok(Self(digits))
    }

    /// Wraps digits already normalised (read back from the database).
    pub fn from_stored(digits: String) -> Self {
        Self(digits)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form that may appear in logs: all but the last four digits masked.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

/// Masks all but the last four characters, for logging anything phone-like.
pub fn mask(value: &str) -> String {
    let n = value.chars().count();
    value
        .chars()
        .enumerate()
        .map(|(i, c)| if i + 4 < n { '*' } else { c })
        .collect()
}

/// Debug never prints the full number, so a stray `?phone` in a log line is safe.
impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.masked())
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_three_documented_forms_and_stores_digits() {
        for raw in ["+14155550100", "14155550100", "whatsapp:+14155550100"] {
            assert_eq!(Phone::parse(raw).unwrap().as_str(), "14155550100");
        }
    }

    #[test]
    fn tolerates_formatting_characters() {
        assert_eq!(
            Phone::parse("+1 (415) 555-0100").unwrap().as_str(),
            "14155550100"
        );
    }

    #[test]
    fn rejects_letters_short_long_and_leading_zero() {
        for raw in [
            "",
            "+",
            "abc",
            "12345",
            "1234567890123456",
            "0123456789",
            "+1415x550100",
        ] {
            assert_eq!(Phone::parse(raw), Err(InvalidPhone), "{raw}");
        }
    }

    #[test]
    fn display_and_debug_mask_all_but_last_four_digits() {
        let p = Phone::parse("919876543210").unwrap();
        assert_eq!(p.to_string(), "********3210");
        assert_eq!(format!("{p:?}"), "Phone(********3210)");
        assert_eq!(mask("123"), "123");
    }
}
