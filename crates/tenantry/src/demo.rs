//! `tenantry demo`: the first thing a new user runs. Starts the service, signs up three tenants with
//! different plans, models and prompts, uploads documents to each, asks questions over HTTP exactly as a
//! client would, and prints what came back and where to look.

use std::collections::BTreeMap;
use std::path::Path;

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
    let keys_file = data_dir.join(KEYS_FILE);
    let mut keys = read_keys(&keys_file)?;
    for t in TENANTS {
        let key = seed(&client, &base, t, keys.get(t.email).map(String::as_str))
            .await
            .with_context(|| format!("seeding {}", t.org))?;
        keys.insert(t.email.to_owned(), key);
        write_keys(&keys_file, &keys)?;
    }
    println!("Where to look:");
    println!("  portal            {base}/portal    (sign in with a key above)");
    println!("  console           {base}/console   (the operator token, server.operator_token)");
    println!("  API description   {base}/openapi.json");
    println!("  health            {base}/healthz   {base}/readyz");
    println!("  a tenant          curl -H 'Authorization: Bearer <api key above>' {base}/v1/usage");
    println!("  the keys again    {}", keys_file.display());

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

/// The demo tenants' API keys by email, kept in the data directory (readable by its owner only) so that a
/// second run on the same directory signs in to the tenants of the first instead of creating new ones.
const KEYS_FILE: &str = "demo-keys.json";

fn read_keys(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_keys(path: &Path, keys: &BTreeMap<String, String>) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("writing {}", path.display()))?;
    file.write_all(&serde_json::to_vec_pretty(keys)?)?;
    Ok(())
}

async fn call(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    checked(req.send().await?).await
}

/// The response's JSON body, or an error naming its status and problem.
async fn checked(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("HTTP {status}: {body}");
    }
    Ok(body)
}

/// Signs the tenant up, or signs in with the key a previous run kept, sets its model and prompt, uploads its
/// documents (an identical upload answers the stored document), asks its questions and prints what came back.
/// Returns the tenant's key.
async fn seed(client: &reqwest::Client, base: &str, t: &DemoTenant, kept: Option<&str>) -> anyhow::Result<String> {
    let existing = match kept {
        Some(key) => {
            let tenant = client.get(format!("{base}/v1/tenant")).bearer_auth(key).send().await?;
            if tenant.status().is_success() {
                Some((key.to_owned(), tenant.json::<Value>().await?))
            } else {
                None
            }
        }
        None => None,
    };
    let (key, tenant) = match existing {
        Some(found) => found,
        None => {
            let signup = client
                .post(format!("{base}/v1/signup"))
                .json(&json!({"email": t.email, "organization": t.org, "plan": t.plan}))
                .send()
                .await?;
            if signup.status() == reqwest::StatusCode::CONFLICT {
                bail!(
                    "{} is signed up in this data directory but its key is not in {KEYS_FILE}; \
                     run the demo with a fresh --data-dir",
                    t.email
                );
            }
            let signup = checked(signup).await?;
            let key = signup["api_key"].as_str().context("signup returned no api_key")?.to_owned();
            (key, signup)
        }
    };
    let auth = format!("Bearer {key}");
    call(
        client
            .patch(format!("{base}/v1/tenant/config"))
            .header("Authorization", &auth)
            .json(&json!({"model": t.model, "system_prompt": t.prompt})),
    )
    .await?;
    let again = if kept.is_some_and(|k| k == key) { " (from the previous run)" } else { "" };
    println!(
        "== {} — plan {}, model {}, state {}{again}",
        t.org,
        t.plan,
        t.model,
        tenant["state"].as_str().unwrap_or("?")
    );
    println!("   tenant {}  key {key}", tenant["tenant_id"].as_str().unwrap_or("?"));
    for (name, content_type, text) in t.documents {
        let part = reqwest::multipart::Part::bytes(text.as_bytes().to_vec()).file_name(*name).mime_str(content_type)?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let doc =
            call(client.post(format!("{base}/v1/documents")).header("Authorization", &auth).multipart(form)).await?;
        println!("   uploaded {name}: {} chunks, {} bytes", doc["chunks"], doc["bytes"]);
    }
    for q in t.questions {
        let answer =
            call(client.post(format!("{base}/v1/query")).header("Authorization", &auth).json(&json!({"question": q})))
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
    let usage = call(client.get(format!("{base}/v1/usage")).header("Authorization", &auth)).await?;
    println!("   usage this period: {}\n", usage["totals"]);
    Ok(key)
}
