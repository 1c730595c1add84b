//! `tenantry bench signup`: paid signups end to end over HTTP — `POST /v1/signup` on a paid plan, the
//! operator's payment report (what a Stripe webhook does), then polling `GET /v1/tenant` until the
//! provisioning job has made the tenant `active`. Reports the time from the payment being confirmed to the
//! tenant being active, p50/p99/max over all signups.

use std::time::{Duration, Instant};

use crate::bench::{percentile_ms, InProcess};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use tenantry_domain::Config;

pub struct SignupBench {
    pub signups: usize,
}

const OPERATOR: &str = "bench-operator";

pub async fn signup(opts: SignupBench) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("tenantry-bench-signup-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut config = Config::builtin();
    config.server.bind = "127.0.0.1:0".into();
    config.server.data_dir = dir.clone();
    config.server.operator_token = OPERATOR.into();
    let paid =
        config.plans.iter().find(|p| p.trial_days == 0 && p.price_cents > 0).context("a paid plan")?.name.clone();
    let service = InProcess::start(config).await?;
    let base = service.base.clone();
    let client = reqwest::Client::new();

    println!("tenantry bench signup: {} paid signups ({paid}), manual provider, embedded SQLite", opts.signups);
    let mut latencies = Vec::with_capacity(opts.signups);
    for i in 0..opts.signups {
        let body =
            json!({"email": format!("bench{i}@signup.test"), "organization": format!("Bench {i}"), "plan": paid});
        let signup: Value = client.post(format!("{base}/v1/signup")).json(&body).send().await?.json().await?;
        let (tenant, key) = (
            signup["tenant_id"].as_str().context("tenant id")?.to_owned(),
            signup["api_key"].as_str().context("api key")?.to_owned(),
        );
        let detail: Value =
            client.get(format!("{base}/admin/tenants/{tenant}")).bearer_auth(OPERATOR).send().await?.json().await?;
        let invoice = detail["invoices"][0]["invoice_id"].as_str().context("signup invoice")?.to_owned();
        let confirmed = Instant::now();
        let paid = client
            .post(format!("{base}/admin/invoices/{invoice}/payment"))
            .bearer_auth(OPERATOR)
            .json(&json!({"outcome": "succeeded"}))
            .send()
            .await?;
        if !paid.status().is_success() {
            bail!("payment report failed: {}", paid.status());
        }
        loop {
            let t: Value = client.get(format!("{base}/v1/tenant")).bearer_auth(&key).send().await?.json().await?;
            if t["state"] == "active" {
                break;
            }
            if confirmed.elapsed() > Duration::from_secs(60) {
                bail!("tenant {tenant} not active a minute after payment");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(confirmed.elapsed());
    }
    latencies.sort();
    println!(
        "payment confirmed → active: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 0.99),
        percentile_ms(&latencies, 1.0)
    );
    let _ = service.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
