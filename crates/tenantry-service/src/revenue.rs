//! Revenue over time for the console (`GET /admin/revenue`), from the invoices themselves, by calendar month
//! (UTC) of the invoice's making. A tenant's MRR in a month is what its invoices of that month bill as base
//! price (in advance, so the month it covers), after base discounts and the base parts of plan changes;
//! prorations, usage and credit are not recurring. The movement from one month to the next is sorted per
//! tenant: new (from nothing), expansion, contraction, churn (to nothing). Overage is the usage billed; failed
//! payments are counted from the audit trail. Void invoices count for nothing.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use tenantry_billing::{InvoiceLine, LineKind};
use tenantry_domain::{InvoiceStatus, Timestamp};
use time::{Date, Month, OffsetDateTime, Time};
use utoipa::ToSchema;

use crate::{ServiceError, ServiceResult, Services};

/// The most months one request reports.
pub const MAX_MONTHS: u32 = 36;

#[derive(Debug, Serialize, ToSchema)]
pub struct RevenueHistory {
    pub currency: String,
    /// Oldest first, ending with the current month.
    pub months: Vec<RevenueMonth>,
}

#[derive(Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct RevenueMonth {
    /// `2026-12`.
    pub month: String,
    /// Monthly recurring revenue: the base prices billed for the month, in cents.
    pub mrr_cents: i64,
    /// Tenants with MRR in the month.
    pub paying_tenants: i64,
    /// MRR of tenants that had none the month before.
    pub new_cents: i64,
    /// MRR added by tenants that paid more than the month before.
    pub expansion_cents: i64,
    /// MRR lost by tenants that paid less, but something (a positive number).
    pub contraction_cents: i64,
    /// MRR lost by tenants that paid nothing this month (a positive number).
    pub churn_cents: i64,
    /// Usage billed above what plans include.
    pub overage_cents: i64,
    /// Everything invoiced in the month (invoice totals).
    pub billed_cents: i64,
    /// Payment attempts that failed.
    pub failed_payments: i64,
}

/// The first instant of the calendar month `offset` months after the one holding `t` (negative: before).
fn month_start(t: Timestamp, offset: i32) -> ServiceResult<Timestamp> {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.0) * 1_000_000)
        .map_err(|e| ServiceError::internal(format!("time out of range: {e}")))?;
    let index = at.year() * 12 + i32::from(u8::from(at.month())) - 1 + offset;
    let (year, month) = (index.div_euclid(12), index.rem_euclid(12) + 1);
    let month = u8::try_from(month).ok().and_then(|m| Month::try_from(m).ok());
    let date = month
        .and_then(|m| Date::from_calendar_date(year, m, 1).ok())
        .ok_or_else(|| ServiceError::internal("month out of range"))?;
    let ms = date.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp() * 1_000;
    Ok(Timestamp(ms))
}

fn label(start: Timestamp) -> String {
    start.to_rfc3339().chars().take(7).collect()
}

impl Services {
    /// The last `months` calendar months of revenue, this one included.
    pub async fn revenue_history(&self, months: u32) -> ServiceResult<RevenueHistory> {
        if !(1..=MAX_MONTHS).contains(&months) {
            return Err(ServiceError::validation(format!("months must be 1 to {MAX_MONTHS}")));
        }
        let now = self.clock().now();
        let span = i32::try_from(months).unwrap_or(1);
        // One month more than shown: the first month's movement is measured against it.
        let starts = (-span..=1).map(|k| month_start(now, k)).collect::<ServiceResult<Vec<_>>>()?;
        let (from, to) = (starts[0], starts[starts.len() - 1]);
        let month_of = |t: Timestamp| starts.windows(2).position(|w| w[0] <= t && t < w[1]);

        let buckets = starts.len() - 1;
        let mut mrr: Vec<HashMap<String, i64>> = vec![HashMap::new(); buckets];
        let mut rows: Vec<RevenueMonth> =
            starts[..buckets].iter().map(|s| RevenueMonth { month: label(*s), ..RevenueMonth::default() }).collect();
        for invoice in self.store().invoices_made_between(from, to).await? {
            let Some(i) = month_of(invoice.created_at) else { continue };
            if invoice.status == InvoiceStatus::Void {
                continue;
            }
            let lines: Vec<InvoiceLine> = serde_json::from_str(&invoice.lines).map_err(ServiceError::internal)?;
            let sum = |kinds: &[LineKind]| -> i64 {
                lines.iter().filter(|l| kinds.contains(&l.kind())).map(|l| l.amount_cents.0).sum()
            };
            *mrr[i].entry(invoice.tenant_id.clone()).or_default() += sum(&[LineKind::Base, LineKind::Discount]);
            rows[i].overage_cents += sum(&[LineKind::Usage]);
            rows[i].billed_cents += invoice.total_cents;
        }
        // Every payment outcome, reported by the operator or Stripe, is audited with it.
        for (at, detail) in self.store().audit_details("invoice.payment_reported", from, to).await? {
            let failed = serde_json::from_str::<serde_json::Value>(&detail).is_ok_and(|d| d["outcome"] == "failed");
            if let (true, Some(i)) = (failed, month_of(at)) {
                rows[i].failed_payments += 1;
            }
        }
        for i in 0..buckets {
            let current: BTreeMap<&String, i64> =
                mrr[i].iter().filter(|(_, c)| **c > 0).map(|(t, c)| (t, *c)).collect();
            rows[i].mrr_cents = current.values().sum();
            rows[i].paying_tenants = i64::try_from(current.len()).unwrap_or(i64::MAX);
            if i == 0 {
                continue;
            }
            let before = &mrr[i - 1];
            for (tenant, now_cents) in &current {
                match before.get(*tenant).copied().filter(|c| *c > 0) {
                    None => rows[i].new_cents += now_cents,
                    Some(was) if *now_cents > was => rows[i].expansion_cents += now_cents - was,
                    Some(was) => rows[i].contraction_cents += was - now_cents,
                }
            }
            for (tenant, was) in before.iter().filter(|(_, c)| **c > 0) {
                if !current.contains_key(tenant) {
                    rows[i].churn_cents += was;
                }
            }
        }
        rows.remove(0);
        Ok(RevenueHistory { currency: self.config().billing.currency.clone(), months: rows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_step_across_years_from_any_instant() {
        // 2026-12-07T18:00:00Z
        let t = Timestamp(1_796_666_400_000);
        assert_eq!(label(month_start(t, 0).expect("month")), "2026-12");
        assert_eq!(month_start(t, 0).expect("month").to_rfc3339(), "2026-12-01T00:00:00Z");
        assert_eq!(label(month_start(t, 1).expect("month")), "2027-01");
        assert_eq!(label(month_start(t, -12).expect("month")), "2025-12");
        assert_eq!(label(month_start(t, -13).expect("month")), "2025-11");
    }
}
