//! Hand-computed invoices: every expected amount below is worked out in the comment above it.

use tenantry_billing::rating::{closing_lines, overage_lines, signup_lines};
use tenantry_billing::{BillingMeter, Invoice, InvoiceLine, InvoiceNumber, MeteredUsage, Pricing, Tier, Tiers};
use tenantry_domain::config::Config;
use tenantry_domain::quota::BillingPeriod;
use tenantry_domain::{Cents, Timestamp};

/// The API.md example plan: $499.00, 50,000 queries and 10,000,000 tokens included, 2,000 µ$ a query and
/// 100 µ$ per 1k tokens above.
fn pro() -> Pricing {
    let config = Config::from_toml(
        r#"
        [[models]]
        name = "local"
        provider = "local"

        [[plans]]
        name = "pro"
        price_cents = 49900
        models = ["local"]
        default_model = "local"
        [plans.included]
        queries = 50000
        tokens = 10000000
        [plans.overage]
        query_micros = 2000
        token_micros_per_1k = 100
        "#,
    )
    .expect("valid config");
    let catalog = config.catalog().expect("valid catalogue");
    Pricing::from_plan(catalog.plan("pro").expect("pro exists")).expect("valid prices")
}

fn period(start: &str, end: &str) -> BillingPeriod {
    let ts = |s: &str| Timestamp::parse_rfc3339(s).expect("valid timestamp");
    BillingPeriod { start: ts(start), end: ts(end) }
}

fn february() -> BillingPeriod {
    period("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z")
}

fn march() -> BillingPeriod {
    period("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z")
}

fn amounts(lines: &[InvoiceLine]) -> Vec<i64> {
    lines.iter().map(|l| l.amount_cents.0).collect()
}

#[test]
fn signup_bills_the_first_period_in_advance() {
    let lines = signup_lines(&pro(), february());
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].description, "pro plan, 2026-02-01 to 2026-03-01");
    assert_eq!(lines[0].meter, None);
    assert_eq!((lines[0].quantity, lines[0].amount_cents), (1, Cents(49_900)));
    let free = Pricing { base: Cents(0), ..pro() };
    assert!(signup_lines(&free, february()).is_empty(), "a free plan bills nothing up front");
}

#[test]
fn within_included_only_the_next_base_is_billed() {
    let usage = MeteredUsage::new(50_000).with_tokens("local", 10_000_000);
    let lines = closing_lines(&pro(), &usage, Some((&pro(), march()))).expect("rates");
    assert_eq!(amounts(&lines), vec![49_900]);
    assert_eq!(lines[0].description, "pro plan, 2026-03-01 to 2026-04-01");
    let last = closing_lines(&pro(), &usage, None).expect("rates");
    assert!(last.is_empty(), "a subscription ending with this period gets no next base");
}

#[test]
fn query_and_token_overage_in_arrears() {
    // Queries: 50,123 − 50,000 = 123 over × 2,000 µ$ = 246,000 µ$ = 24.6 ¢ → 25 ¢.
    // Tokens: 10,456,789 − 10,000,000 = 456,789 over × 100 µ$ / 1,000 = 45,678.9 µ$ = 4.56789 ¢ → 5 ¢.
    let usage = MeteredUsage::new(50_123).with_tokens("local", 10_456_789);
    let lines = closing_lines(&pro(), &usage, Some((&pro(), march()))).expect("rates");
    assert_eq!(amounts(&lines), vec![25, 5, 49_900]);

    let queries = &lines[0];
    assert_eq!(queries.meter, Some(BillingMeter::Queries));
    assert_eq!(queries.description, "Queries over the 50,000 included");
    assert_eq!(queries.quantity, 123);
    assert_eq!(queries.unit_amount_decimal, "0.2");
    assert_eq!(queries.unit_amount_cents, Cents(0));

    let tokens = &lines[1];
    assert_eq!(tokens.meter, Some(BillingMeter::Tokens));
    assert_eq!(tokens.description, "Tokens over the 10,000,000 included");
    assert_eq!(tokens.quantity, 456_789, "tokens, not thousands: partial thousands are billed pro rata");
    assert_eq!(tokens.unit_amount_decimal, "0.00001");
    assert_eq!(tokens.model, None);

    let invoice = Invoice::draft(InvoiceNumber::new(123), february(), "usd", lines).expect("valid");
    assert_eq!(invoice.number().to_string(), "INV-000123");
    assert_eq!((invoice.subtotal_cents(), invoice.total_cents()), (Cents(49_930), Cents(49_930)));
}

#[test]
fn graduated_tiers_crossing_boundaries() {
    // Tiers above the 50,000 included: units 1–1,000 at 3,000 µ$, 1,001–10,000 at 2,000 µ$, then 1,000 µ$.
    let tiers = Tiers::graduated(vec![
        Tier { up_to: Some(1_000), unit_micros: 3_000 },
        Tier { up_to: Some(10_000), unit_micros: 2_000 },
        Tier { up_to: None, unit_micros: 1_000 },
    ])
    .expect("valid tiers");
    let pricing = pro().with_query_tiers(tiers);

    // 12,345 over: 1,000 × 3,000 µ$ = 300 ¢; 9,000 × 2,000 µ$ = 1,800 ¢; 2,345 × 1,000 µ$ = 234.5 ¢ → 235 ¢.
    let lines = overage_lines(&pricing, &MeteredUsage::new(62_345)).expect("rates");
    assert_eq!(amounts(&lines), vec![300, 1_800, 235]);
    assert_eq!(lines.iter().map(|l| l.quantity).collect::<Vec<_>>(), vec![1_000, 9_000, 2_345]);
    assert_eq!(lines[0].description, "Queries over the 50,000 included, tier 1: 1 to 1,000");
    assert_eq!(lines[1].description, "Queries over the 50,000 included, tier 2: 1,001 to 10,000");
    assert_eq!(lines[2].description, "Queries over the 50,000 included, tier 3: 10,001 and above");

    // Exactly on a boundary: 1,000 over fills tier 1 and nothing spills into tier 2.
    let lines = overage_lines(&pricing, &MeteredUsage::new(51_000)).expect("rates");
    assert_eq!((amounts(&lines), lines[0].quantity), (vec![300], 1_000));
    // One past it: 1,001 over → 300 ¢ + 1 × 2,000 µ$ = 0.2 ¢ → 0 ¢.
    let lines = overage_lines(&pricing, &MeteredUsage::new(51_001)).expect("rates");
    assert_eq!(amounts(&lines), vec![300, 0]);
    assert_eq!(lines[1].quantity, 1);
}

#[test]
fn half_a_cent_rounds_away_from_zero_once_per_line() {
    let pricing =
        pro().with_query_tiers(Tiers::flat(5_000).expect("valid")).with_token_tiers(Tiers::flat(500).expect("valid"));
    // 1 query over at 5,000 µ$ = 0.5 ¢ → 1 ¢; 3 over = 1.5 ¢ → 2 ¢.
    assert_eq!(amounts(&overage_lines(&pricing, &MeteredUsage::new(50_001)).expect("rates")), vec![1]);
    assert_eq!(amounts(&overage_lines(&pricing, &MeteredUsage::new(50_003)).expect("rates")), vec![2]);
    // 10,000 tokens over at 500 µ$ / 1k = 5,000 µ$ = 0.5 ¢ → 1 ¢.
    let usage = MeteredUsage::new(0).with_tokens("local", 10_010_000);
    assert_eq!(amounts(&overage_lines(&pricing, &usage).expect("rates")), vec![1]);
    // 9,999 over = 4,999.5 µ$ = 0.49995 ¢ → 0 ¢. (Rounding to whole micros first would make it 5,000 µ$
    // and then 1 ¢: the line is rounded once, straight to cents.)
    let usage = MeteredUsage::new(0).with_tokens("local", 10_009_999);
    assert_eq!(amounts(&overage_lines(&pricing, &usage).expect("rates")), vec![0]);
    // Each line is rounded on its own: two half cents make 2 ¢, not 1 ¢.
    let usage = MeteredUsage::new(50_001).with_tokens("local", 10_010_000);
    assert_eq!(amounts(&overage_lines(&pricing, &usage).expect("rates")), vec![1, 1]);
}

#[test]
fn per_model_token_prices() {
    // gpt-4 costs 3,000 µ$ per 1k; every other model the plan's 100 µ$.
    let pricing = Pricing { included_tokens: 1_000_000, ..pro() }
        .with_model_token_tiers("gpt-4", Tiers::flat(3_000).expect("valid"));
    // 1,200,000 tokens against 1,000,000 included: 200,000 over, attributed by usage. gpt-4 used 900,000
    // of 1,200,000 → 150,000 over × 3,000 µ$ / 1k = 450,000 µ$ = 45 ¢. The rest (gpt-3.5-turbo 250,000 and
    // local 50,000) → 50,000 over × 100 µ$ / 1k = 5,000 µ$ = 0.5 ¢ → 1 ¢.
    let usage = MeteredUsage::new(0)
        .with_tokens("gpt-4", 900_000)
        .with_tokens("gpt-3.5-turbo", 250_000)
        .with_tokens("local", 50_000);
    let lines = overage_lines(&pricing, &usage).expect("rates");
    assert_eq!(amounts(&lines), vec![45, 1]);
    assert_eq!((lines[0].quantity, lines[0].model.as_deref()), (150_000, Some("gpt-4")));
    assert_eq!(lines[0].description, "Tokens over the 1,000,000 included (gpt-4)");
    assert_eq!(lines[0].unit_amount_decimal, "0.0003");
    assert_eq!((lines[1].quantity, lines[1].model.as_deref()), (50_000, None));
    assert_eq!(lines[1].description, "Tokens over the 1,000,000 included (other models)");

    // 10 over split 1:1:1 → 4, 3, 3 (largest remainder; the tie goes to the model listed first, gpt-4).
    let pricing = Pricing { included_tokens: 20, ..pro() }
        .with_model_token_tiers("gpt-4", Tiers::flat(3_000).expect("valid"))
        .with_model_token_tiers("gpt-4o", Tiers::flat(2_000).expect("valid"));
    let usage = MeteredUsage::new(0).with_tokens("gpt-4", 10).with_tokens("gpt-4o", 10).with_tokens("local", 10);
    let lines = overage_lines(&pricing, &usage).expect("rates");
    assert_eq!(lines.iter().map(|l| l.quantity).collect::<Vec<_>>(), vec![4, 3, 3]);
}

#[test]
fn a_plan_change_bills_the_old_plans_usage_and_the_new_plans_base() {
    let team = Pricing { plan: "team".into(), base: Cents(99_900), ..pro() }
        .with_query_tiers(Tiers::flat(1_000).expect("valid"));
    // The closing period ran on pro: 10 over × 2,000 µ$ = 2 ¢. March is billed at team's price.
    let lines = closing_lines(&pro(), &MeteredUsage::new(50_010), Some((&team, march()))).expect("rates");
    assert_eq!(amounts(&lines), vec![2, 99_900]);
    assert_eq!(lines[1].description, "team plan, 2026-03-01 to 2026-04-01");
}
