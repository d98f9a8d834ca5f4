//! Query-string parameters shared by the read APIs: pagination and time bounds.
//! Parsed from raw strings by hand so that every rejection is a 422 naming the field.

use chrono::{DateTime, NaiveDate};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, Result};

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// `page` (from 1) and `limit` (1 to [`MAX_LIMIT`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    pub page: i64,
    pub limit: i64,
}

impl Paging {
    pub fn parse(page: Option<&str>, limit: Option<&str>) -> Result<Self> {
        let page = match page {
            None => 1,
            Some(raw) => raw
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|p| (1..=1_000_000).contains(p))
                .ok_or_else(|| ApiError::invalid("page", "must be a whole number from 1"))?,
        };
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(raw) => raw
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|l| (1..=MAX_LIMIT).contains(l))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "limit",
                        format!("must be a whole number from 1 to {MAX_LIMIT}"),
                    )
                })?,
        };
        Ok(Self { page, limit })
    }

    pub fn offset(self) -> i64 {
        (self.page - 1) * self.limit
    }

    /// The `pagination` object of a reply, given how many items there are in all.
    pub fn describe(self, total: i64) -> Pagination {
        let pages = (total + self.limit - 1) / self.limit;
        Pagination {
            page: self.page,
            limit: self.limit,
            total,
            pages,
            has_more: self.page < pages,
        }
    }
}

/// Where a page sits in the whole list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Pagination {
    pub page: i64,
    pub limit: i64,
    /// Items in the whole list.
    pub total: i64,
    pub pages: i64,
    /// True when a later page has items.
    pub has_more: bool,
}

/// Which end of a range a bound is: a bare date starts its day as a lower bound and
/// ends it (exclusively, at the next midnight UTC) as an upper bound, so
/// `from=2026-11-01&to=2026-11-30` covers all of November 1 to 30.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    From,
    To,
}

/// An RFC 3339 time or a `YYYY-MM-DD` date (UTC) as unix milliseconds.
pub fn parse_bound(field: &str, raw: &str, end: End) -> Result<i64> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.timestamp_millis());
    }
    // An unencoded `+02:00` offset arrives as ` 02:00` (a form-encoded space).
    if let Some((time, offset)) = raw.rsplit_once(' ') {
        if let Ok(t) = DateTime::parse_from_rfc3339(&format!("{time}+{offset}")) {
            return Ok(t.timestamp_millis());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        let day = match end {
            End::From => d,
            End::To => d
                .succ_opt()
                .ok_or_else(|| ApiError::invalid(field, "is out of range"))?,
        };
        let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
        return Ok(midnight.and_utc().timestamp_millis());
    }
    Err(ApiError::invalid(
        field,
        "must be an RFC 3339 time (2026-11-20T10:00:00Z) or a date (2026-11-20)",
    ))
}

/// `[from, to)` in milliseconds from optional bounds; by default the 30 days up to `now`.
pub fn parse_range(from: Option<&str>, to: Option<&str>, now_ms: i64) -> Result<(i64, i64)> {
    // `to` as written (a date's start), for telling whether the range runs backwards:
    // `from=2025-11-21&to=2025-11-20` does, though the 20th ends when the 21st starts.
    let (to_ms, to_as_written) = match to {
        Some(raw) => (
            parse_bound("to", raw, End::To)?,
            parse_bound("to", raw, End::From)?,
        ),
        None => (now_ms, now_ms),
    };
    let from_ms = match from {
        Some(raw) => parse_bound("from", raw, End::From)?,
        None => to_ms - 30 * 86_400_000,
    };
    if from_ms > to_as_written {
        return Err(ApiError::invalid("from", "must not be after to"));
    }
    Ok((from_ms, to_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: ApiError) -> String {
        match e {
            ApiError::Invalid { field, .. } => field,
            other => panic!("expected 422, got {other:?}"),
        }
    }

    #[test]
    fn paging_defaults_and_bounds() {
        assert_eq!(
            Paging::parse(None, None).unwrap(),
            Paging { page: 1, limit: 50 }
        );
        assert_eq!(
            Paging::parse(Some("3"), Some("500")).unwrap().offset(),
            1000
        );
        assert_eq!(
            field_of(Paging::parse(None, Some("501")).unwrap_err()),
            "limit"
        );
        assert_eq!(
            field_of(Paging::parse(None, Some("0")).unwrap_err()),
            "limit"
        );
        assert_eq!(
            field_of(Paging::parse(Some("0"), None).unwrap_err()),
            "page"
        );
        assert_eq!(
            field_of(Paging::parse(Some("x"), None).unwrap_err()),
            "page"
        );
    }

    #[test]
    fn pagination_counts_pages_and_says_whether_more_follow() {
        let p = Paging { page: 2, limit: 2 };
        assert_eq!(
            p.describe(5),
            Pagination {
                page: 2,
                limit: 2,
                total: 5,
                pages: 3,
                has_more: true
            }
        );
        assert!(!Paging { page: 3, limit: 2 }.describe(5).has_more);
        assert_eq!(Paging { page: 1, limit: 2 }.describe(0).pages, 0);
        assert!(!Paging { page: 1, limit: 2 }.describe(2).has_more);
    }

    #[test]
    fn dates_cover_whole_days_and_times_are_exact() {
        let day = 1_763_596_800_000; // 2025-11-20T00:00:00Z
        assert_eq!(parse_bound("from", "2025-11-20", End::From).unwrap(), day);
        assert_eq!(
            parse_bound("to", "2025-11-20", End::To).unwrap(),
            day + 86_400_000
        );
        assert_eq!(
            parse_bound("to", "2025-11-20T01:00:00+01:00", End::To).unwrap(),
            day
        );
        assert_eq!(
            parse_bound("to", "2025-11-20T01:00:00 01:00", End::To).unwrap(),
            day,
            "a + that the query string turned into a space"
        );
        assert_eq!(
            field_of(parse_bound("to", "2025-13-01", End::To).unwrap_err()),
            "to"
        );
        assert_eq!(
            field_of(parse_bound("from", "yesterday", End::From).unwrap_err()),
            "from"
        );
    }

    #[test]
    fn a_range_must_not_run_backwards_and_defaults_to_thirty_days() {
        assert_eq!(
            field_of(parse_range(Some("2025-11-21"), Some("2025-11-20"), 0).unwrap_err()),
            "from"
        );
        assert_eq!(
            parse_range(None, None, 100 * 86_400_000).unwrap(),
            (70 * 86_400_000, 100 * 86_400_000)
        );
        // The same day as both bounds is that whole day.
        let (f, t) = parse_range(Some("2025-11-20"), Some("2025-11-20"), 0).unwrap();
        assert_eq!(t - f, 86_400_000);
    }
}
