//! Rating: a plan's prices and one period's metered usage (the ledger's sums) → invoice lines.
//!
//! The rules (API.md `GET /v1/invoices`):
//! - The base price is billed in advance: the first period's on the signup invoice, each next period's on
//!   the invoice that closes the current one ([`signup_lines`], [`closing_lines`]).
//! - Usage above the plan's included amounts is billed in arrears on the invoice that closes its period,
//!   one line per meter and price tier, `quantity` = units above included.
//! - Graduated tiers count units *above the included amount*; a tier's `up_to` is inclusive, as in
//!   Stripe. The flat `[plans.overage]` price is a single unbounded tier.
//! - Tokens are priced per 1,000 (`token_micros_per_1k`) but billed per token: a partial thousand is
//!   billed pro rata, never rounded up or down to a whole thousand. Line quantities are tokens.
//! - Everything is integers. A line's exact amount (`quantity × unit price`, a fraction of a micro-dollar
//!   for tokens) is rounded to cents once, half away from zero, like `Micros::to_cents_rounded`.
//! - Per-model token prices: included tokens are one allowance shared by all models. The ledger gives
//!   sums, not the order tokens were used in, so the overage is attributed to models in proportion to
//!   their usage (largest remainder, so the parts sum exactly; ties go to the model listed first). Each
//!   model with its own price is rated through its own tiers; all other models share the plan's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tenantry_domain::quota::BillingPeriod;
use tenantry_domain::{Cents, Plan, Timestamp};

use crate::arith::group_digits;
use crate::line::{BillingMeter, InvoiceLine, LineKind};

/// Tokens are priced per 10^3 (config: `token_micros_per_1k`); queries per 10^0.
const TOKEN_PRICE_EXP: u32 = 3;
const QUERY_PRICE_EXP: u32 = 0;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RatingError {
    #[error("invalid price tiers: {0}")]
    InvalidTiers(&'static str),
    #[error("token usage overflows a 64-bit count")]
    UsageOverflow,
    #[error("an amount does not fit in 64-bit cents")]
    AmountOverflow,
}

/// One price tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    /// Inclusive upper bound, counted in units above the included amount; `None` for the last tier.
    pub up_to: Option<u64>,
    /// Price in micro-dollars of one price unit (one query, or 1,000 tokens) within this tier.
    pub unit_micros: i64,
}

/// Graduated tiers, validated: bounds strictly increase, only the last is unbounded, no negative price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Tier>", into = "Vec<Tier>")]
pub struct Tiers(Vec<Tier>);

/// The units of a quantity that fall in one tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierPart {
    /// The tier's position, from 0.
    pub tier: usize,
    /// The first unit (1-based, above included) this tier covers.
    pub from: u64,
    /// The tier's inclusive upper bound, `None` when unbounded.
    pub up_to: Option<u64>,
    pub quantity: u64,
    pub unit_micros: i64,
}

impl Tiers {
    /// One price for every unit: the shape of `[plans.overage]`.
    pub fn flat(unit_micros: i64) -> Result<Self, RatingError> {
        Self::graduated(vec![Tier { up_to: None, unit_micros }])
    }

    pub fn graduated(tiers: Vec<Tier>) -> Result<Self, RatingError> {
        let Some((last, rest)) = tiers.split_last() else {
            return Err(RatingError::InvalidTiers("at least one tier is required"));
        };
        if last.up_to.is_some() {
            return Err(RatingError::InvalidTiers("the last tier must have no upper bound"));
        }
        let mut below = 0;
        for tier in rest {
            match tier.up_to {
                None => return Err(RatingError::InvalidTiers("only the last tier may be unbounded")),
                Some(up_to) if up_to <= below => {
                    return Err(RatingError::InvalidTiers("upper bounds must be positive and increase"))
                }
                Some(up_to) => below = up_to,
            }
        }
        if tiers.iter().any(|t| t.unit_micros < 0) {
            return Err(RatingError::InvalidTiers("prices must not be negative"));
        }
        Ok(Self(tiers))
    }

    pub fn tiers(&self) -> &[Tier] {
        &self.0
    }

    /// Splits `quantity` units over the tiers, lowest first, leaving out empty tiers. The parts' quantities
    /// sum to `quantity`.
    pub fn split(&self, quantity: u64) -> Vec<TierPart> {
        let mut parts = Vec::new();
        let mut below = 0;
        for (i, tier) in self.0.iter().enumerate() {
            if below >= quantity {
                break;
            }
            let top = tier.up_to.map_or(quantity, |up_to| up_to.min(quantity));
            parts.push(TierPart {
                tier: i,
                from: below + 1,
                up_to: tier.up_to,
                quantity: top - below,
                unit_micros: tier.unit_micros,
            });
            below = top;
        }
        parts
    }
}

impl TryFrom<Vec<Tier>> for Tiers {
    type Error = RatingError;
    fn try_from(tiers: Vec<Tier>) -> Result<Self, Self::Error> {
        Self::graduated(tiers)
    }
}

impl From<Tiers> for Vec<Tier> {
    fn from(tiers: Tiers) -> Self {
        tiers.0
    }
}

/// What a plan charges: the base price per period, the included amounts, and overage prices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pricing {
    pub plan: String,
    pub base: Cents,
    pub included_queries: u64,
    pub included_tokens: u64,
    /// Per query.
    pub query_tiers: Tiers,
    /// Per 1,000 tokens, for every model without its own price.
    pub token_tiers: Tiers,
    /// Per 1,000 tokens, for the models named.
    pub model_token_tiers: BTreeMap<String, Tiers>,
}

impl Pricing {
    /// The plan's prices as configured: flat overage prices, no per-model prices.
    /// The plan's prices: flat overage prices, or its graduated tiers and per-model token prices when the
    /// configuration gives them (validated here: a bad tier list is a configuration error at start).
    pub fn from_plan(plan: &Plan) -> Result<Self, RatingError> {
        let tiers = |tiers: &[tenantry_domain::config::PriceTier], flat: i64| {
            if tiers.is_empty() {
                Tiers::flat(flat)
            } else {
                Tiers::graduated(tiers.iter().map(|t| Tier { up_to: t.up_to, unit_micros: t.unit_micros }).collect())
            }
        };
        let mut model_token_tiers = BTreeMap::new();
        for (model, price) in &plan.overage.model_token_micros_per_1k {
            model_token_tiers.insert(model.clone(), Tiers::flat(*price)?);
        }
        Ok(Self {
            plan: plan.name.clone(),
            base: plan.price,
            included_queries: plan.included.queries,
            included_tokens: plan.included.tokens,
            query_tiers: tiers(&plan.overage.query_tiers, plan.overage.query_micros)?,
            token_tiers: tiers(&plan.overage.token_tiers, plan.overage.token_micros_per_1k)?,
            model_token_tiers,
        })
    }

    pub fn with_query_tiers(mut self, tiers: Tiers) -> Self {
        self.query_tiers = tiers;
        self
    }

    pub fn with_token_tiers(mut self, tiers: Tiers) -> Self {
        self.token_tiers = tiers;
        self
    }

    pub fn with_model_token_tiers(mut self, model: impl Into<String>, tiers: Tiers) -> Self {
        self.model_token_tiers.insert(model.into(), tiers);
        self
    }
}

/// One period's metered usage: the ledger's sums.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeteredUsage {
    pub queries: u64,
    /// Prompt plus completion tokens, by the model that ran. The model only matters for per-model prices.
    pub tokens_by_model: BTreeMap<String, u64>,
}

impl MeteredUsage {
    pub fn new(queries: u64) -> Self {
        Self { queries, tokens_by_model: BTreeMap::new() }
    }

    /// Adds `tokens` used by `model`.
    pub fn with_tokens(mut self, model: impl Into<String>, tokens: u64) -> Self {
        let entry = self.tokens_by_model.entry(model.into()).or_default();
        *entry = entry.saturating_add(tokens);
        self
    }

    /// All tokens, every model.
    pub fn tokens(&self) -> Result<u64, RatingError> {
        self.tokens_by_model.values().try_fold(0u64, |sum, &n| sum.checked_add(n)).ok_or(RatingError::UsageOverflow)
    }
}

/// The signup invoice: the first period's base price, in advance. Empty for a free plan.
pub fn signup_lines(pricing: &Pricing, first: BillingPeriod) -> Vec<InvoiceLine> {
    base_line(pricing, first).into_iter().collect()
}

/// The invoice that closes a period: its usage above included (in arrears, at the prices of the plan it
/// ran under), then the next period's base price (in advance, at the next period's plan), unless the
/// subscription ends with this period (`next` = `None`).
pub fn closing_lines(
    closing: &Pricing,
    usage: &MeteredUsage,
    next: Option<(&Pricing, BillingPeriod)>,
) -> Result<Vec<InvoiceLine>, RatingError> {
    let mut lines = overage_lines(closing, usage)?;
    if let Some((pricing, period)) = next {
        lines.extend(base_line(pricing, period));
    }
    Ok(lines)
}

/// The usage a period's invoice did not yet bill: `full` is the period's overage rated at its end, `billed` the
/// usage lines of the invoice that closed it early. Each line of `full` is matched to the billed line of the
/// same meter, model and unit price, and only the difference (quantity and amount) is returned, so the two
/// invoices together bill exactly what `full` says. Lines without a meter in `billed` (base price) are ignored.
pub fn true_up_lines(billed: &[InvoiceLine], full: &[InvoiceLine]) -> Vec<InvoiceLine> {
    let key = |l: &InvoiceLine| (l.meter, l.model.clone(), l.unit_amount_decimal.clone());
    let mut already: BTreeMap<_, (u64, i64)> = BTreeMap::new();
    for l in billed.iter().filter(|l| l.meter.is_some()) {
        let e = already.entry(key(l)).or_default();
        e.0 += l.quantity;
        e.1 += l.amount_cents.0;
    }
    full.iter()
        .filter(|l| l.meter.is_some())
        .filter_map(|l| {
            let (quantity, amount) = already.get(&key(l)).copied().unwrap_or_default();
            let more = l.quantity.saturating_sub(quantity);
            (more > 0).then(|| InvoiceLine {
                description: format!("{} (usage after the period was invoiced)", l.description),
                quantity: more,
                amount_cents: Cents(l.amount_cents.0 - amount),
                ..l.clone()
            })
        })
        .collect()
}

/// The base price for `period`; none for a free plan (a zero line says nothing).
pub fn base_line(pricing: &Pricing, period: BillingPeriod) -> Option<InvoiceLine> {
    (pricing.base != Cents(0)).then(|| {
        let description = format!("{} plan, {} to {}", pricing.plan, date(period.start), date(period.end));
        InvoiceLine::fixed(LineKind::Base, description, pricing.base)
    })
}

/// The base price for what is left of `period` from `from` on, prorated as a plan change is
/// (`proration::prorate`): a trial that ends inside a period owes the rest of it. None for a free plan or
/// when nothing is left.
pub fn remainder_line(
    pricing: &Pricing,
    period: BillingPeriod,
    from: Timestamp,
) -> Result<Option<InvoiceLine>, crate::ProrationError> {
    let owed = crate::proration::remaining_part(pricing.base, period, from)?;
    Ok((owed != Cents(0)).then(|| {
        let description = format!("{} plan, {} to {} (after the trial)", pricing.plan, date(from), date(period.end));
        InvoiceLine::fixed(LineKind::Proration, description, owed)
    }))
}

/// Usage above included, one line per meter, model price and tier that has units. None when within.
pub fn overage_lines(pricing: &Pricing, usage: &MeteredUsage) -> Result<Vec<InvoiceLine>, RatingError> {
    let mut lines = Vec::new();
    let queries = usage.queries.saturating_sub(pricing.included_queries);
    let query_price = GroupPrice { included: pricing.included_queries, label: None, model: None };
    rate(&mut lines, BillingMeter::Queries, query_price, queries, &pricing.query_tiers)?;

    let tokens_over = usage.tokens()?.saturating_sub(pricing.included_tokens);
    if tokens_over == 0 {
        return Ok(lines);
    }
    let groups = token_groups(pricing, usage);
    let weights: Vec<u64> = groups.iter().map(|g| g.used).collect();
    for (group, quantity) in groups.iter().zip(split_proportionally(tokens_over, &weights)) {
        let label = match (group.model, pricing.model_token_tiers.is_empty()) {
            (Some(model), _) => Some(model),
            (None, false) => Some("other models"),
            (None, true) => None,
        };
        let group_price = GroupPrice { included: pricing.included_tokens, label, model: group.model };
        rate(&mut lines, BillingMeter::Tokens, group_price, quantity, group.tiers)?;
    }
    Ok(lines)
}

/// A set of models priced alike: one with its own price (`model` = its name), or every other model.
struct TokenGroup<'a> {
    model: Option<&'a str>,
    used: u64,
    tiers: &'a Tiers,
}

/// Models with their own price first (by name), then everyone else pooled at the plan's token price.
fn token_groups<'a>(pricing: &'a Pricing, usage: &MeteredUsage) -> Vec<TokenGroup<'a>> {
    let mut groups: Vec<TokenGroup<'a>> = pricing
        .model_token_tiers
        .iter()
        .map(|(model, tiers)| TokenGroup {
            model: Some(model.as_str()),
            used: usage.tokens_by_model.get(model).copied().unwrap_or(0),
            tiers,
        })
        .collect();
    let pooled = usage
        .tokens_by_model
        .iter()
        .filter(|(model, _)| !pricing.model_token_tiers.contains_key(*model))
        .map(|(_, &n)| n)
        .sum();
    groups.push(TokenGroup { model: None, used: pooled, tiers: &pricing.token_tiers });
    groups
}

/// Splits `total` (≤ the weights' sum) in proportion to `weights` by largest remainder: the parts sum to
/// `total` exactly and no part exceeds its weight.
pub(crate) fn split_proportionally(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let mut parts = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (i, &w) in weights.iter().enumerate() {
        let exact = u128::from(w) * u128::from(total);
        // exact / sum ≤ w because total ≤ sum, so it fits in u64.
        parts.push(u64::try_from(exact / sum).unwrap_or(w));
        remainders.push((exact % sum, i));
    }
    let assigned: u64 = parts.iter().sum();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in remainders.iter().take(usize::try_from(total - assigned).unwrap_or(usize::MAX)) {
        parts[i] += 1;
    }
    parts
}

/// What a usage line's description and `model` say about the units it bills.
struct GroupPrice<'a> {
    included: u64,
    label: Option<&'a str>,
    model: Option<&'a str>,
}

/// Pushes one line per tier that `quantity` reaches.
fn rate(
    lines: &mut Vec<InvoiceLine>,
    meter: BillingMeter,
    group: GroupPrice<'_>,
    quantity: u64,
    tiers: &Tiers,
) -> Result<(), RatingError> {
    let included = group.included;
    let exp = match meter {
        BillingMeter::Queries => QUERY_PRICE_EXP,
        BillingMeter::Tokens => TOKEN_PRICE_EXP,
    };
    let graduated = tiers.tiers().len() > 1;
    for part in tiers.split(quantity) {
        let mut description = match meter {
            BillingMeter::Queries => format!("Queries over the {} included", group_digits(included)),
            BillingMeter::Tokens => format!("Tokens over the {} included", group_digits(included)),
        };
        if let Some(label) = group.label {
            description.push_str(&format!(" ({label})"));
        }
        if graduated {
            let range = match part.up_to {
                Some(up_to) => format!("{} to {}", group_digits(part.from), group_digits(up_to)),
                None => format!("{} and above", group_digits(part.from)),
            };
            description.push_str(&format!(", tier {}: {range}", part.tier + 1));
        }
        let model = group.model.map(str::to_owned);
        lines.push(InvoiceLine::metered(description, meter, model, part.quantity, part.unit_micros, exp)?);
    }
    Ok(())
}

fn date(t: Timestamp) -> String {
    let text = t.to_rfc3339();
    text.get(..10).map_or_else(|| text.clone(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proportional_split_is_exact() {
        assert_eq!(split_proportionally(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(split_proportionally(0, &[5, 0]), vec![0, 0]);
        assert_eq!(split_proportionally(2, &[1, 1]), vec![1, 1]);
        assert_eq!(split_proportionally(7, &[0, 10]), vec![0, 7]);
        assert_eq!(split_proportionally(u64::MAX, &[u64::MAX]), vec![u64::MAX]);
    }

    #[test]
    fn tiers_are_validated() {
        let t = |up_to, unit_micros| Tier { up_to, unit_micros };
        assert!(Tiers::graduated(vec![]).is_err());
        assert!(Tiers::graduated(vec![t(Some(10), 1)]).is_err());
        assert!(Tiers::graduated(vec![t(Some(10), 1), t(Some(10), 1), t(None, 1)]).is_err());
        assert!(Tiers::graduated(vec![t(Some(0), 1), t(None, 1)]).is_err());
        assert!(Tiers::graduated(vec![t(None, 1), t(None, 1)]).is_err());
        assert!(Tiers::flat(-1).is_err());
        assert!(Tiers::graduated(vec![t(Some(10), 3), t(Some(20), 2), t(None, 1)]).is_ok());
        let parsed: Result<Tiers, _> = serde_json::from_str(r#"[{"up_to": 5, "unit_micros": 1}]"#);
        assert!(parsed.is_err(), "deserialising validates too");
    }

    fn pricing() -> Pricing {
        let t = |up_to, unit_micros| Tier { up_to, unit_micros };
        Pricing {
            plan: "metered".into(),
            base: Cents(1_000),
            included_queries: 2,
            included_tokens: 0,
            query_tiers: Tiers::graduated(vec![t(Some(4), 2_000), t(None, 30_000)]).expect("tiers"),
            token_tiers: Tiers::flat(100).expect("flat"),
            model_token_tiers: BTreeMap::new(),
        }
    }

    #[test]
    fn the_rest_of_a_period_after_a_trial_is_prorated() {
        const DAY: i64 = 86_400_000;
        let p = pricing();
        let period = BillingPeriod { start: Timestamp(0), end: Timestamp(30 * DAY) };
        let rest = |day: i64| remainder_line(&p, period, Timestamp(day * DAY)).expect("inside");
        assert_eq!(rest(0).map(|l| l.amount_cents), Some(Cents(1_000)), "a trial of nothing owes the period");
        assert_eq!(rest(14).map(|l| l.amount_cents), Some(Cents(533)), "16 of 30 days: 533.33 rounds to 533");
        assert_eq!(rest(20).map(|l| l.amount_cents), Some(Cents(333)));
        assert_eq!(rest(30), None, "a trial to the period's end owes nothing of it");
        assert!(rest(14).expect("line").meter.is_none(), "a base price line, not usage");
        assert!(remainder_line(&p, period, Timestamp(31 * DAY)).is_err(), "outside the period");
        let free = Pricing { base: Cents(0), ..pricing() };
        assert_eq!(remainder_line(&free, period, Timestamp(14 * DAY)).expect("inside"), None);
    }

    #[test]
    fn true_up_bills_only_what_the_early_invoice_missed() {
        let p = pricing();
        // Early close: 5 queries (3 over: 0.6 cent in tier one). Period end: 9 queries (4 in tier one = 0.8
        // cent, 3 in tier two at 3 cents = 9 cents).
        let early = overage_lines(&p, &MeteredUsage::new(5)).expect("rate");
        let full = overage_lines(&p, &MeteredUsage::new(9)).expect("rate");
        let more = true_up_lines(&early, &full);
        let total = |ls: &[InvoiceLine]| ls.iter().map(|l| l.amount_cents.0).sum::<i64>();
        let qty = |ls: &[InvoiceLine]| ls.iter().map(|l| l.quantity).sum::<u64>();
        assert_eq!(total(&early) + total(&more), total(&full), "the two invoices bill exactly the full period");
        assert_eq!(qty(&early) + qty(&more), qty(&full));
        assert_eq!(qty(&more), 4);
        assert!(more.iter().all(|l| l.meter == Some(BillingMeter::Queries)));

        // Nothing new since the early close: nothing to true up; base lines never count.
        let mut with_base = early.clone();
        with_base.extend(base_line(&p, BillingPeriod { start: Timestamp(0), end: Timestamp(1) }));
        assert!(true_up_lines(&with_base, &early).is_empty());
    }
}
