//! Properties of rating, tiers and proration over random plans, usage and instants.

use proptest::prelude::*;
use tenantry_billing::rating::{closing_lines, overage_lines};
use tenantry_billing::{prorate, BillingMeter, Invoice, InvoiceNumber, MeteredUsage, Pricing, Tier, Tiers};
use tenantry_domain::quota::BillingPeriod;
use tenantry_domain::{Cents, Timestamp};

/// 1 to 4 tiers with increasing bounds and prices up to $10 a unit.
fn tiers() -> impl Strategy<Value = Tiers> {
    (prop::collection::vec((1u64..100_000, 0i64..10_000_000), 0..4), 0i64..10_000_000).prop_map(|(steps, last)| {
        let mut bound = 0;
        let mut tiers: Vec<Tier> = steps
            .into_iter()
            .map(|(width, unit_micros)| {
                bound += width;
                Tier { up_to: Some(bound), unit_micros }
            })
            .collect();
        tiers.push(Tier { up_to: None, unit_micros: last });
        Tiers::graduated(tiers).expect("generated tiers are valid")
    })
}

const MODELS: [&str; 3] = ["gpt-4", "gpt-3.5-turbo", "local"];

fn pricing() -> impl Strategy<Value = Pricing> {
    (
        0i64..1_000_000,
        0u64..1_000_000,
        0u64..100_000_000,
        tiers(),
        tiers(),
        prop::collection::btree_map(prop::sample::select(&MODELS[..]), tiers(), 0..3),
    )
        .prop_map(|(base, included_queries, included_tokens, query_tiers, token_tiers, per_model)| Pricing {
            plan: "p".into(),
            base: Cents(base),
            included_queries,
            included_tokens,
            query_tiers,
            token_tiers,
            model_token_tiers: per_model.into_iter().map(|(m, t)| (m.to_owned(), t)).collect(),
        })
}

fn usage() -> impl Strategy<Value = MeteredUsage> {
    (0u64..2_000_000, prop::collection::btree_map(prop::sample::select(&MODELS[..]), 0u64..200_000_000, 0..4)).prop_map(
        |(queries, tokens)| MeteredUsage {
            queries,
            tokens_by_model: tokens.into_iter().map(|(m, n)| (m.to_owned(), n)).collect(),
        },
    )
}

fn billed(lines: &[tenantry_billing::InvoiceLine], meter: BillingMeter) -> u64 {
    lines.iter().filter(|l| l.meter == Some(meter)).map(|l| l.quantity).sum()
}

const MONTH_MS: i64 = 31 * 86_400_000;

proptest! {
    #[test]
    fn invoice_total_is_the_sum_of_its_lines(pricing in pricing(), usage in usage(), seq in 0u64..10_000_000) {
        let period = BillingPeriod { start: Timestamp(0), end: Timestamp(MONTH_MS) };
        let lines = closing_lines(&pricing, &usage, Some((&pricing, period))).expect("rates");
        let sum: i64 = lines.iter().map(|l| l.amount_cents.0).sum();
        let invoice = Invoice::draft(InvoiceNumber::new(seq), period, "usd", lines).expect("valid");
        prop_assert_eq!(invoice.subtotal_cents(), Cents(sum));
        prop_assert_eq!(invoice.total_cents(), Cents(sum));
    }

    #[test]
    fn billed_overage_is_usage_above_included(pricing in pricing(), usage in usage()) {
        let lines = overage_lines(&pricing, &usage).expect("rates");
        let tokens = usage.tokens().expect("no overflow");
        prop_assert_eq!(billed(&lines, BillingMeter::Queries), usage.queries.saturating_sub(pricing.included_queries));
        prop_assert_eq!(billed(&lines, BillingMeter::Tokens), tokens.saturating_sub(pricing.included_tokens));
        prop_assert!(lines.iter().all(|l| l.quantity > 0 && l.amount_cents.0 >= 0));
        // No model is billed more tokens than it used.
        for (model, used) in &usage.tokens_by_model {
            let on_model: u64 = lines.iter().filter(|l| l.model.as_deref() == Some(model.as_str())).map(|l| l.quantity).sum();
            prop_assert!(on_model <= *used, "{model}: {on_model} > {used}");
        }
    }

    #[test]
    fn an_early_close_and_its_true_up_bill_exactly_the_full_period(
        pricing in pricing(),
        usage in usage(),
        percents in prop::collection::vec(0u64..=100, 8),
    ) {
        // The usage at the early close: any share of the period's final usage, independently per meter and
        // model (usage after the close may all be on one model).
        let early = MeteredUsage {
            queries: usage.queries * percents[0] / 100,
            tokens_by_model: usage
                .tokens_by_model
                .iter()
                .enumerate()
                .map(|(i, (m, n))| (m.clone(), n * percents[1 + i % 7] / 100))
                .collect(),
        };
        let billed_early = overage_lines(&pricing, &early).expect("rates");
        let full = overage_lines(&pricing, &usage).expect("rates");
        let more = tenantry_billing::rating::true_up_lines(&billed_early, &full);
        let amount = |ls: &[tenantry_billing::InvoiceLine]| ls.iter().map(|l| l.amount_cents.0).sum::<i64>();
        prop_assert_eq!(amount(&billed_early) + amount(&more), amount(&full));
        for meter in [BillingMeter::Queries, BillingMeter::Tokens] {
            prop_assert_eq!(billed(&billed_early, meter) + billed(&more, meter), billed(&full, meter));
        }
    }

    #[test]
    fn tier_parts_sum_to_the_quantity(tiers in tiers(), quantity in 0u64..10_000_000) {
        let parts = tiers.split(quantity);
        prop_assert_eq!(parts.iter().map(|p| p.quantity).sum::<u64>(), quantity);
        // Contiguous, inside their bounds, lowest tier first.
        let mut next = 1;
        for part in &parts {
            prop_assert_eq!(part.from, next);
            prop_assert!(part.up_to.is_none_or(|up_to| part.from + part.quantity - 1 <= up_to));
            next = part.from + part.quantity;
        }
    }

    #[test]
    fn a_line_is_its_exact_amount_rounded_once(quantity in 0u64..1_000_000_000, unit in 0i64..100_000_000) {
        let pricing = Pricing { included_queries: 0, ..base_pricing() }.with_query_tiers(Tiers::flat(unit).expect("valid"));
        let lines = overage_lines(&pricing, &MeteredUsage::new(quantity)).expect("rates");
        let exact = i128::from(quantity) * i128::from(unit); // micros
        let cents = lines.first().map_or(0, |l| l.amount_cents.0);
        prop_assert!((i128::from(cents) * 10_000 - exact).abs() <= 5_000);
    }

    #[test]
    fn proration_is_bounded_and_monotone(
        old in 0i64..10_000_000,
        new in 0i64..10_000_000,
        length in 1_000i64..(62 * 86_400_000),
        a in 0.0f64..=1.0,
        b in 0.0f64..=1.0,
    ) {
        let period = BillingPeriod { start: Timestamp(1_700_000_000_000), end: Timestamp(1_700_000_000_000 + length) };
        let at = |f: f64| Timestamp(period.start.0 + (length as f64 * f) as i64);
        let (early, late) = if a <= b { (at(a), at(b)) } else { (at(b), at(a)) };
        let p1 = prorate(Cents(old), Cents(new), period, early, "usd").expect("inside");
        let p2 = prorate(Cents(old), Cents(new), period, late, "usd").expect("inside");
        prop_assert!(Cents(0) <= p1.credit_cents && p1.credit_cents <= Cents(old));
        prop_assert!(Cents(0) <= p1.charge_cents && p1.charge_cents <= Cents(new));
        prop_assert!(p2.credit_cents <= p1.credit_cents, "credit never grows later in the period");
        prop_assert!(p2.charge_cents <= p1.charge_cents);
        let start = prorate(Cents(old), Cents(new), period, period.start, "usd").expect("inside");
        prop_assert_eq!((start.credit_cents, start.charge_cents), (Cents(old), Cents(new)));
        let end = prorate(Cents(old), Cents(new), period, period.end, "usd").expect("at end");
        prop_assert_eq!((end.credit_cents, end.charge_cents), (Cents(0), Cents(0)));
    }
}

fn base_pricing() -> Pricing {
    Pricing {
        plan: "p".into(),
        base: Cents(0),
        included_queries: 0,
        included_tokens: 0,
        query_tiers: Tiers::flat(0).expect("valid"),
        token_tiers: Tiers::flat(0).expect("valid"),
        model_token_tiers: Default::default(),
    }
}
