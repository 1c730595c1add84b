//! `tenantry bench pages`: the server time of what the portal and the console load, at scale — many tenants
//! for the console's list and overview, and one tenant with a year of hourly usage for the portal's history.
//!
//! The tenants sign up in-process (the service's own signup), `paying` of them on a priced plan whose signup
//! invoice is paid; the busy tenant asks one question every hour of a year under the test clock, over HTTP,
//! and the clock's advance runs every job due, so the ledger, invoices (the paying tenants' monthly closes) and
//! jobs are what a year of use leaves. Each endpoint is then requested `samples` times in turn; p50/p99/max of
//! the time to the last byte are reported. The portal's tenant page is also read through a session cookie.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tenantry_domain::config::{Included, PlanConfig, Quotas};
use tenantry_domain::Config;
use tenantry_service::tenants::SignupRequest;

use crate::bench::{percentile_ms, InProcess};

pub struct PagesBench {
    pub tenants: usize,
    pub hours: usize,
    pub paying: usize,
    pub samples: usize,
}

const OPERATOR: &str = "bench-operator";
const PLAN: &str = "bench";
const PAID_PLAN: &str = "bench-paid";
/// In the list of pages: sign in with the session cookie instead of a bearer token.
const COOKIE: &str = "cookie";

pub async fn pages(opts: PagesBench) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("tenantry-bench-pages-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut config = Config::builtin();
    config.server.bind = "127.0.0.1:0".into();
    config.server.data_dir = dir.clone();
    config.server.operator_token = OPERATOR.into();
    config.server.clock = "test".into();
    let template = config.plans.first().context("a built-in plan")?.clone();
    config.plans.push(PlanConfig {
        name: PLAN.into(),
        price_cents: 0,
        trial_days: 0,
        quotas: Quotas {
            queries: 1_000_000,
            tokens: 1_000_000_000,
            requests_per_minute: 1_000_000,
            ..Quotas::default()
        },
        included: Included { queries: 1_000_000, tokens: 1_000_000_000 },
        ..template
    });
    let free = config.plans.last().context("the bench plan")?.clone();
    config.plans.push(PlanConfig { name: PAID_PLAN.into(), price_cents: 2_900, ..free });
    let service = InProcess::start(config).await?;
    let client = reqwest::Client::new();
    let base = service.base.clone();
    println!(
        "tenantry bench pages: {} tenants ({} paying), one with {} hours of hourly questions, {} samples per page, \
         embedded SQLite",
        opts.tenants, opts.paying, opts.hours, opts.samples
    );

    let started = Instant::now();
    for i in 0..opts.tenants.saturating_sub(1) {
        let paying = i < opts.paying;
        let request = SignupRequest {
            email: format!("tenant{i}@bench-pages.test"),
            organization: format!("Bench Org {i}"),
            plan: if paying { PAID_PLAN } else { PLAN }.into(),
        };
        let signed_up = service.services.signup(request).await.map_err(|e| anyhow::anyhow!("signup {i}: {e:?}"))?;
        if paying {
            let detail = service.services.admin_tenant(signed_up.tenant_id.as_str()).await;
            let detail = detail.map_err(|e| anyhow::anyhow!("tenant {i}: {e:?}"))?;
            let invoice = detail.invoices.first().context("a signup invoice")?;
            let paid = service.services.report_payment(&invoice.invoice_id, "succeeded").await;
            paid.map_err(|e| anyhow::anyhow!("paying {i}: {e:?}"))?;
        }
    }
    println!("  {} tenants signed up in {:.1} s", opts.tenants.saturating_sub(1), started.elapsed().as_secs_f64());

    let started = Instant::now();
    let body = json!({"email": "busy@bench-pages.test", "organization": "Busy Org", "plan": PLAN});
    let signup: Value = client.post(format!("{base}/v1/signup")).json(&body).send().await?.json().await?;
    let key = signup["api_key"].as_str().context("api key")?.to_owned();
    let tenant = signup["tenant_id"].as_str().context("tenant id")?.to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t: Value = client.get(format!("{base}/v1/tenant")).bearer_auth(&key).send().await?.json().await?;
        if t["state"] == "active" {
            break;
        }
        if Instant::now() > deadline {
            bail!("the busy tenant is still {} after a minute", t["state"]);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let doc = json!({"title": "Handbook", "text": "Refunds are issued within 14 days of purchase. Laptops are replaced every three years."});
    let r = client.post(format!("{base}/v1/documents")).bearer_auth(&key).json(&doc).send().await?;
    if !r.status().is_success() {
        bail!("upload: {}", r.status());
    }
    let year_start = service.services.clock().now();
    for hour in 0..opts.hours {
        let question = json!({"question": format!("How long do refunds take? ({hour})")});
        let r = client.post(format!("{base}/v1/query")).bearer_auth(&key).json(&question).send().await?;
        if !r.status().is_success() {
            bail!("query in hour {hour}: {} {}", r.status(), r.text().await.unwrap_or_default());
        }
        service.services.advance_clock(3600).await.map_err(|e| anyhow::anyhow!("hour {hour}: {e:?}"))?;
    }
    let now = service.services.clock().now();
    println!(
        "  {} hourly questions (and every job they made due) in {:.1} s",
        opts.hours,
        started.elapsed().as_secs_f64()
    );
    let cookie_request = client.post(format!("{base}/v1/session")).json(&json!({"api_key": key})).send().await?;
    let cookie = cookie_request
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .context("a session cookie")?
        .to_owned();

    let (from, to) = (year_start.to_rfc3339(), now.to_rfc3339());
    let middle = opts.tenants / 2;
    let pages: Vec<(&str, String, &str)> = vec![
        ("console: tenants, first page", "/admin/tenants?limit=25".into(), OPERATOR),
        ("console: tenants, search", "/admin/tenants?q=org%201234&limit=25".into(), OPERATOR),
        (
            "console: tenants by name, middle page",
            format!("/admin/tenants?sort=organization&limit=25&offset={middle}"),
            OPERATOR,
        ),
        ("console: overview", "/admin/overview".into(), OPERATOR),
        ("console: busy tenant", format!("/admin/tenants/{tenant}"), OPERATOR),
        (
            "console: busy tenant, 30 days daily",
            format!(
                "/admin/tenants/{tenant}/usage/timeseries?granularity=day&from={}&to={to}",
                now.plus_seconds(-30 * 86_400).to_rfc3339()
            ),
            OPERATOR,
        ),
        ("console: busy tenant, audit (timeline)", format!("/admin/audit?tenant_id={tenant}&limit=1000"), OPERATOR),
        ("console: revenue, 12 months", "/admin/revenue?months=12".into(), OPERATOR),
        ("portal: tenant", "/v1/tenant".into(), &key),
        ("portal: quotas", "/v1/quotas".into(), &key),
        ("portal: usage this period", "/v1/usage".into(), &key),
        ("portal: a year hourly", format!("/v1/usage/timeseries?granularity=hour&from={from}&to={to}"), &key),
        ("portal: a year daily", format!("/v1/usage/timeseries?granularity=day&from={from}&to={to}"), &key),
        ("portal: invoices", "/v1/invoices".into(), &key),
        ("portal: next invoice so far", "/v1/invoices/upcoming".into(), &key),
        ("portal: tenant, by session cookie", "/v1/tenant".into(), COOKIE),
        ("portal: documents", "/v1/documents".into(), &key),
        ("portal: page (HTML)", "/portal".into(), ""),
    ];
    println!("{:<40} {:>10} {:>10} {:>10} {:>10}", "page", "p50 ms", "p99 ms", "max ms", "bytes");
    for (name, path, token) in &pages {
        let url = format!("{base}{}", path.replace('+', "%2B"));
        let mut times = Vec::with_capacity(opts.samples);
        let mut size = 0;
        for _ in 0..opts.samples {
            let request = client.get(&url);
            let request = match *token {
                "" => request,
                COOKIE => request.header("cookie", &cookie),
                bearer => request.bearer_auth(bearer),
            };
            let t = Instant::now();
            let r = request.send().await?;
            let status = r.status();
            let body = r.bytes().await?;
            times.push(t.elapsed());
            if !status.is_success() {
                bail!("{name}: {status} {}", String::from_utf8_lossy(&body));
            }
            size = body.len();
        }
        times.sort();
        let (p50, p99, max) = (percentile_ms(&times, 0.50), percentile_ms(&times, 0.99), percentile_ms(&times, 1.0));
        println!("{name:<40} {p50:>10.2} {p99:>10.2} {max:>10.2} {size:>10}");
    }
    let _ = service.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
