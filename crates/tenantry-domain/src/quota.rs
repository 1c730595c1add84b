//! Quota arithmetic and billing periods. Pure functions; the store applies them atomically.

use serde::{Deserialize, Serialize};
use time::{Date, Duration, Month, OffsetDateTime};

use crate::clock::Timestamp;

/// What the ledger counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Meter {
    Queries,
    PromptTokens,
    CompletionTokens,
    Documents,
    StorageBytes,
}

impl Meter {
    pub const ALL: [Meter; 5] =
        [Self::Queries, Self::PromptTokens, Self::CompletionTokens, Self::Documents, Self::StorageBytes];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queries => "queries",
            Self::PromptTokens => "prompt_tokens",
            Self::CompletionTokens => "completion_tokens",
            Self::Documents => "documents",
            Self::StorageBytes => "storage_bytes",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == raw)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    Month,
    Day,
}

impl PeriodKind {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "month" => Some(Self::Month),
            "day" => Some(Self::Day),
            _ => None,
        }
    }
}

/// A half-open billing period `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BillingPeriod {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl BillingPeriod {
    /// The period containing `now` for a tenant whose billing is anchored at `anchor` (its start date).
    /// Monthly periods keep the anchor's day of month, clamped to the month's length (Jan 31 → Feb 28).
    pub fn containing(anchor: Timestamp, now: Timestamp, kind: PeriodKind) -> Self {
        match kind {
            PeriodKind::Day => {
                let day = 86_400_000;
                let n = (now.0 - anchor.0).div_euclid(day);
                let start = anchor.0 + n * day;
                Self { start: Timestamp(start), end: Timestamp(start + day) }
            }
            PeriodKind::Month => {
                let a = anchor.to_datetime();
                let n = now.to_datetime();
                let mut k = (n.year() - a.year()) * 12 + (n.month() as i32 - a.month() as i32);
                // Step back when `now` is before this month's anchor instant; forward never happens by
                // more than one.
                while k > 0 && add_months(a, k) > n {
                    k -= 1;
                }
                while add_months(a, k + 1) <= n {
                    k += 1;
                }
                Self {
                    start: Timestamp::from_datetime(add_months(a, k)),
                    end: Timestamp::from_datetime(add_months(a, k + 1)),
                }
            }
        }
    }

    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }
}

fn add_months(t: OffsetDateTime, months: i32) -> OffsetDateTime {
    let total = t.year() * 12 + (t.month() as i32 - 1) + months;
    let (year, month0) = (total.div_euclid(12), total.rem_euclid(12));
    let month = Month::try_from(month0 as u8 + 1).unwrap_or(Month::January);
    let last_day = month.length(year);
    let day = t.day().min(last_day);
    match Date::from_calendar_date(year, month, day) {
        Ok(date) => t.replace_date(date),
        Err(_) => t + Duration::days(30 * i64::from(months)),
    }
}

/// Would reserving `n` more keep `used + reserved` within `limit`? The one rule every store applies
/// atomically.
pub fn fits(limit: u64, used: u64, reserved: u64, n: u64) -> bool {
    used.checked_add(reserved).and_then(|x| x.checked_add(n)).is_some_and(|total| total <= limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).expect("valid timestamp")
    }

    #[test]
    fn monthly_periods_follow_the_anchor_day() {
        let anchor = ts("2026-01-31T10:00:00Z");
        let p = BillingPeriod::containing(anchor, ts("2026-02-15T00:00:00Z"), PeriodKind::Month);
        assert_eq!(p.start, ts("2026-01-31T10:00:00Z"));
        assert_eq!(p.end, ts("2026-02-28T10:00:00Z"));
        let p = BillingPeriod::containing(anchor, ts("2026-03-30T11:00:00Z"), PeriodKind::Month);
        assert_eq!(p.start, ts("2026-02-28T10:00:00Z"));
        assert_eq!(p.end, ts("2026-03-31T10:00:00Z"));
        let first = BillingPeriod::containing(anchor, anchor, PeriodKind::Month);
        assert_eq!(first.start, anchor);
    }

    #[test]
    fn daily_periods_tile_time() {
        let anchor = ts("2026-01-01T12:00:00Z");
        let p = BillingPeriod::containing(anchor, ts("2026-01-03T11:59:59Z"), PeriodKind::Day);
        assert_eq!(p.start, ts("2026-01-02T12:00:00Z"));
        assert_eq!(p.end, ts("2026-01-03T12:00:00Z"));
    }

    #[test]
    fn fits_never_overflows() {
        assert!(fits(10, 5, 4, 1));
        assert!(!fits(10, 5, 5, 1));
        assert!(!fits(u64::MAX, u64::MAX, 1, 1));
    }
}
