//! `tenantry demo`: the first thing a new user runs. Starts the service, signs up three tenants with
//! different plans, models and prompts, uploads documents to each, asks questions over HTTP exactly as a
//! client would, and prints what came back and where to look.

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tenantry_domain::Config;
use tenantry_web::Application;

struct DemoTenant {
    org: &'static str,
    email: &'static str,
    plan: &'static str,
    model: &'static str,
    prompt: &'static str,
    documents: &'static [(&'static str, &'static str, &'static str)],
    questions: &'static [&'static str],
}

const TENANTS: &[DemoTenant] = &[
    DemoTenant {
        org: "Acme Retail",
        email: "admin@acme.example",
        plan: "trial",
        model: "local-small",
        prompt: "You are Acme's friendly support assistant.",
        documents: &[
            ("refund-policy.md", "text/markdown", include_str!("../demo/refund-policy.md")),
            ("shipping.txt", "text/plain", include_str!("../demo/shipping.txt")),
        ],
        questions: &["How long do I have to get a refund?", "How fast is express shipping?"],
    },
    DemoTenant {
        org: "Globex Security",
        email: "ciso@globex.example",
        plan: "starter",
        model: "local-large",
        prompt: "Answer as Globex's security team, precisely and formally.",
        documents: &[("security-whitepaper.md", "text/markdown", include_str!("../demo/security-whitepaper.md"))],
        questions: &["How is customer data encrypted?", "When are customers notified of a breach?"],
    },
    DemoTenant {
        org: "Initech",
        email: "hr@initech.example",
        plan: "starter",
        model: "local-small",
        prompt: "You are Initech's HR helper. Keep answers short.",
        documents: &[("onboarding-guide.md", "text/markdown", include_str!("../demo/onboarding-guide.md"))],
        questions: &["When does health insurance start?", "How do I request time off?"],
    },
];

pub async fn run(config: Config, exit: bool) -> anyhow::Result<()> {
    let data_dir = config.server.data_dir.clone();
    let app = Application::build(config).await?;
    let base = format!("http://{}", app.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stop_rx.await;
    }));

    let client = reqwest::Client::new();
    println!("\nTenantry demo — service at {base}, data in {}\n", data_dir.display());
    let suffix = std::process::id();
    for t in TENANTS {
        seed(&client, &base, t, suffix).await.with_context(|| format!("seeding {}", t.org))?;
    }
    println!("Where to look:");
    println!("  API description   {base}/openapi.json");
    println!("  health            {base}/healthz   {base}/readyz");
    println!("  a tenant          curl -H 'Authorization: Bearer <api key above>' {base}/v1/usage");

    if exit {
        let _ = stop_tx.send(());
    } else {
        println!("\nServing until Ctrl-C.");
        tokio::signal::ctrl_c().await?;
        let _ = stop_tx.send(());
    }
    server.await??;
    Ok(())
}

async fn call(client: &reqwest::Client, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let _ = client;
    let resp = req.send().await?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("HTTP {status}: {body}");
    }
    Ok(body)
}

async fn seed(client: &reqwest::Client, base: &str, t: &DemoTenant, suffix: u32) -> anyhow::Result<()> {
    // A suffix keeps emails unique when the demo runs again on the same data dir.
    let email = t.email.replace('@', &format!("+{suffix}@"));
    let signup = call(
        client,
        client.post(format!("{base}/v1/signup")).json(&json!({"email": email, "organization": t.org, "plan": t.plan})),
    )
    .await?;
    let key = signup["api_key"].as_str().context("signup returned no api_key")?.to_owned();
    let auth = format!("Bearer {key}");
    call(
        client,
        client
            .patch(format!("{base}/v1/tenant/config"))
            .header("Authorization", &auth)
            .json(&json!({"model": t.model, "system_prompt": t.prompt})),
    )
    .await?;
    println!("== {} — plan {}, model {}, state {}", t.org, t.plan, t.model, signup["state"].as_str().unwrap_or("?"));
    println!("   tenant {}  key {key}", signup["tenant_id"].as_str().unwrap_or("?"));
    for (name, content_type, text) in t.documents {
        let part = reqwest::multipart::Part::bytes(text.as_bytes().to_vec()).file_name(*name).mime_str(content_type)?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let doc =
            call(client, client.post(format!("{base}/v1/documents")).header("Authorization", &auth).multipart(form))
                .await?;
        println!("   uploaded {name}: {} chunks, {} bytes", doc["chunks"], doc["bytes"]);
    }
    for q in t.questions {
        let answer = call(
            client,
            client.post(format!("{base}/v1/query")).header("Authorization", &auth).json(&json!({"question": q})),
        )
        .await?;
        println!("   Q: {q}");
        println!("   A: {}", answer["answer"].as_str().unwrap_or(""));
        println!(
            "      model {}, {} tokens, {} micro-dollars, cites {}",
            answer["model"].as_str().unwrap_or("?"),
            answer["usage"]["total_tokens"],
            answer["usage"]["cost_micros"],
            answer["citations"]
                .as_array()
                .map(|c| c.iter().filter_map(|c| c["title"].as_str()).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        );
    }
    let usage = call(client, client.get(format!("{base}/v1/usage")).header("Authorization", &auth)).await?;
    println!("   usage this period: {}\n", usage["totals"]);
    Ok(())
}
