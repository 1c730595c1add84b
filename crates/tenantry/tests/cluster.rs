//! Three `tenantry serve` processes on one fresh PostgreSQL database act as one service: a document accepted
//! by any node is cited through every other, a deletion through one is honoured by all, a node started with
//! an empty data directory answers at once, an export made through one downloads through another, an erasure
//! leaves no byte of the tenant on any node's disk, a node killed mid-upload loses no acknowledged document,
//! a quota holds exactly and a rate limit within 10 % across nodes, and a node with another key pepper
//! refuses to start.
//!
//! Needs `TENANTRY_TEST_POSTGRES_URL` (CI sets it, with `TENANTRY_TEST_REQUIRE_POSTGRES=1` so a missing
//! server fails the test instead of skipping it).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const PEPPER: &str = "cluster-test-pepper-shared-by-every-node-0123456789";
const OPERATOR: &str = "cluster-operator-token";

fn config(database_url: &str) -> String {
    format!(
        r#"
[server]
operator_token = "{OPERATOR}"

[database]
url = "{database_url}"

[gateway]
rate_limiter = "shared"

[[plans]]
name = "cluster"
models = ["local-small"]
default_model = "local-small"
[plans.quotas]
queries = 1000000
tokens = 1000000000
documents = 1000
storage_bytes = 100000000
requests_per_minute = 1000000

[[plans]]
name = "tight"
models = ["local-small"]
default_model = "local-small"
[plans.quotas]
queries = 30
tokens = 1000000000
documents = 10
storage_bytes = 100000000
requests_per_minute = 1000000

[[plans]]
name = "limited"
models = ["local-small"]
default_model = "local-small"
[plans.quotas]
queries = 1000000
tokens = 1000000000
documents = 10
storage_bytes = 100000000
requests_per_minute = 60
"#
    )
}

struct Node {
    name: &'static str,
    base: String,
    data: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(name: &'static str, dir: &Path, pepper: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
        let data = dir.join(format!("data-{name}"));
        let child = spawn(dir, &data, port, pepper, name).spawn().expect("binary starts");
        Self { name, base: format!("http://127.0.0.1:{port}"), data, child: Some(child) }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(dir: &Path, data: &Path, port: u16, pepper: &str, name: &str) -> Command {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_tenantry"));
    command
        .args(["serve", "--config"])
        .arg(dir.join("tenantry.toml"))
        .arg("--data-dir")
        .arg(data)
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .env("TENANTRY_KEY_PEPPER", pepper)
        .env("RUST_LOG", "info,sqlx=warn,tantivy=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    command
}

async fn wait_ready(client: &reqwest::Client, node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(node.url("/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node {} did not become ready", node.name);
}

async fn signup(client: &reqwest::Client, node: &Node, email: &str, plan: &str) -> (String, String) {
    let r = client
        .post(node.url("/v1/signup"))
        .json(&json!({"email": email, "organization": "Cluster", "plan": plan}))
        .send()
        .await
        .expect("signup");
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["state"], "active", "{body}");
    (body["tenant_id"].as_str().expect("id").to_owned(), body["api_key"].as_str().expect("key").to_owned())
}

/// Uploads a text document; its id, or `None` if the node did not acknowledge it.
async fn upload(client: &reqwest::Client, node: &Node, key: &str, name: &str, text: &str) -> Option<String> {
    let part = reqwest::multipart::Part::bytes(text.as_bytes().to_vec()).file_name(name.to_owned());
    let form = reqwest::multipart::Form::new().part("file", part.mime_str("text/plain").expect("mime"));
    let r = client.post(node.url("/v1/documents")).bearer_auth(key).multipart(form).send().await.ok()?;
    if r.status() != 201 {
        return None;
    }
    let body: Value = r.json().await.ok()?;
    body["document_id"].as_str().map(str::to_owned)
}

/// The documents a question through `node` cites.
async fn cited(client: &reqwest::Client, node: &Node, key: &str, question: &str) -> Vec<String> {
    let r = client
        .post(node.url("/v1/query"))
        .bearer_auth(key)
        .json(&json!({"question": question, "top_k": 10}))
        .send()
        .await
        .expect("query");
    assert_eq!(r.status(), 200, "query through {}", node.name);
    let body: Value = r.json().await.expect("json");
    body["citations"]
        .as_array()
        .expect("citations")
        .iter()
        .filter_map(|c| c["document_id"].as_str().map(str::to_owned))
        .collect()
}

/// How long until a question through `node` cites `document` (panics past `bound`).
async fn time_until_cited(
    client: &reqwest::Client,
    node: &Node,
    key: &str,
    question: &str,
    document: &str,
    since: Instant,
    bound: Duration,
) -> Duration {
    loop {
        if cited(client, node, key, question).await.iter().any(|d| d == document) {
            return since.elapsed();
        }
        assert!(since.elapsed() < bound, "{document} not cited through {} within {bound:?}", node.name);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every file under `dir` whose path or bytes contain `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.to_string_lossy().as_bytes().windows(needle.len()).any(|w| w == needle) {
            found.push(path.clone());
        }
        if path.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_database_act_as_one_service() {
    let required = std::env::var("TENANTRY_TEST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    let Some(admin_url) = std::env::var("TENANTRY_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty()) else {
        assert!(!required, "TENANTRY_TEST_REQUIRE_POSTGRES=1 but TENANTRY_TEST_POSTGRES_URL is not set");
        eprintln!("TENANTRY_TEST_POSTGRES_URL not set: the cluster story is skipped");
        return;
    };
    let database = tenantry_store::Store::create_test_database(&admin_url).await.expect("postgres reachable");
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("tenantry.toml"), config(&database)).expect("config");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");

    // A first, alone, so the database is migrated once; then B.
    let a = Node::start("a", dir.path(), PEPPER);
    wait_ready(&client, &a).await;
    let mut b = Node::start("b", dir.path(), PEPPER);
    wait_ready(&client, &b).await;

    let (tenant, key) = signup(&client, &a, "cluster@test.example", "cluster").await;

    // Uploaded through A: cited through A at once, through B within the bound.
    let uploaded = Instant::now();
    let doc = upload(&client, &a, &key, "tides.txt", "The zephyrine tide tables are published every Tuesday.")
        .await
        .expect("upload through A");
    assert!(cited(&client, &a, &key, "zephyrine tide tables").await.contains(&doc), "at once through A");
    let lag = time_until_cited(&client, &b, &key, "zephyrine tide", &doc, uploaded, Duration::from_secs(2)).await;
    eprintln!("cited through B {lag:?} after the upload began");

    // Deleted through B: never cited through A once the DELETE has returned.
    let second = upload(&client, &a, &key, "kelp.txt", "Quillwort kelp harvests close in October.")
        .await
        .expect("second upload");
    assert!(cited(&client, &b, &key, "quillwort kelp").await.contains(&second));
    let r = client.delete(b.url(&format!("/v1/documents/{second}"))).bearer_auth(&key).send().await.expect("delete");
    assert_eq!(r.status(), 204);
    assert!(!cited(&client, &a, &key, "quillwort kelp").await.contains(&second), "A honours B's delete");

    // C starts last with an empty data directory and answers at once.
    let c = Node::start("c", dir.path(), PEPPER);
    wait_ready(&client, &c).await;
    assert!(cited(&client, &c, &key, "zephyrine tide tables").await.contains(&doc), "C answers at once");
    assert!(!cited(&client, &c, &key, "quillwort kelp").await.contains(&second));

    // An export requested through A downloads through C.
    let r = client.post(a.url("/v1/export")).bearer_auth(&key).send().await.expect("export");
    assert_eq!(r.status(), 202);
    let export_id = r.json::<Value>().await.expect("json")["export_id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let archive = loop {
        let r = client.get(c.url(&format!("/v1/export/{export_id}"))).bearer_auth(&key).send().await.expect("get");
        let is_archive = r.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/gzip"));
        if r.status() == 200 && is_archive {
            break r.bytes().await.expect("bytes");
        }
        assert!(Instant::now() < deadline, "export not ready through C");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&archive[..]));
    let mut originals = Vec::new();
    for entry in tar.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        if path.ends_with("/original") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).expect("original");
            originals.push(text);
        }
    }
    assert_eq!(originals, ["The zephyrine tide tables are published every Tuesday."]);

    // B is killed while uploads run through it; every upload it acknowledged is cited through A and C.
    let uploads: Vec<_> = (0..24)
        .map(|i| {
            let (client, key, node_url) = (client.clone(), key.clone(), b.url("/v1/documents"));
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(15 * i)).await;
                let text = format!("Marker vortigern{i:02} notes the ledger of batch number {i}.");
                let part = reqwest::multipart::Part::bytes(text.into_bytes()).file_name(format!("b{i}.txt"));
                let form = reqwest::multipart::Form::new().part("file", part.mime_str("text/plain").expect("mime"));
                let r = client.post(node_url).bearer_auth(&key).multipart(form).send().await.ok()?;
                (r.status() == 201).then_some(())?;
                let body: Value = r.json().await.ok()?;
                Some((i, body["document_id"].as_str()?.to_owned()))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    b.kill();
    let mut acknowledged = Vec::new();
    for u in uploads {
        if let Some(done) = u.await.expect("task") {
            acknowledged.push(done);
        }
    }
    eprintln!("{} of 24 uploads acknowledged before B died", acknowledged.len());
    for (i, id) in &acknowledged {
        for node in [&a, &c] {
            let hits = cited(&client, node, &key, &format!("vortigern{i:02}")).await;
            assert!(hits.contains(id), "acknowledged upload {i} cited through {}", node.name);
        }
    }
    let listed: Value =
        client.get(a.url("/v1/documents")).bearer_auth(&key).send().await.expect("list").json().await.expect("json");
    let stored = listed["documents"].as_array().expect("documents").len();
    assert!(stored > acknowledged.len(), "the first document and every acknowledged one: {stored}");

    // B restarts on its old data directory and catches up.
    let b_data = b.data.clone();
    let port = b.base.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).expect("port");
    b.child = Some(spawn(dir.path(), &b_data, port, PEPPER, "b2").spawn().expect("restarts"));
    wait_ready(&client, &b).await;
    if let Some((i, id)) = acknowledged.last() {
        assert!(cited(&client, &b, &key, &format!("vortigern{i:02}")).await.contains(id), "B caught up");
    }

    // A quota holds exactly across the three nodes: 30 queries, 45 asked at once, round robin.
    let (_, tight) = signup(&client, &c, "tight@test.example", "tight").await;
    let asks: Vec<_> = (0..45)
        .map(|i| {
            let node = [&a, &b, &c][i % 3].url("/v1/query");
            let (client, key) = (client.clone(), tight.clone());
            tokio::spawn(async move {
                let r = client.post(node).bearer_auth(&key).json(&json!({"question": "anything"})).send().await;
                r.map(|r| r.status().as_u16()).unwrap_or(0)
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for ask in asks {
        statuses.push(ask.await.expect("task"));
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 30, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 15, "{statuses:?}");

    // The rate limit holds for the tenant across the nodes: a minute's burst of 60, whichever node is asked.
    let (_, limited) = signup(&client, &a, "limited@test.example", "limited").await;
    let started = Instant::now();
    let asks: Vec<_> = (0..120)
        .map(|i| {
            let node = [&a, &b, &c][i % 3].url("/v1/quotas");
            let (client, key) = (client.clone(), limited.clone());
            tokio::spawn(async move {
                let r = client.get(node).bearer_auth(&key).send().await;
                r.map(|r| r.status().as_u16()).unwrap_or(0)
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for ask in asks {
        statuses.push(ask.await.expect("task"));
    }
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    // The bucket refills one request a second while the burst runs.
    let refill = started.elapsed().as_secs() as usize + 1;
    eprintln!("{admitted} of 120 admitted across three nodes in {:?}", started.elapsed());
    assert!((60..=66 + refill).contains(&admitted), "within 10 % of 60 (+{refill} refilled): {admitted}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 120 - admitted, "{statuses:?}");

    // Erased through B: within seconds no node's data directory holds the tenant's directory or its words.
    let r = client.delete(b.url("/v1/tenant")).bearer_auth(&key).send().await.expect("erase");
    assert_eq!(r.status(), 202);
    let erasure = r.json::<Value>().await.expect("json")["erasure_id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client.get(a.url(&format!("/admin/erasures/{erasure}"))).bearer_auth(OPERATOR).send().await;
        let status = match r {
            Ok(r) => r.json::<Value>().await.expect("json")["status"].as_str().unwrap_or_default().to_owned(),
            Err(_) => String::new(),
        };
        let leftovers: Vec<PathBuf> = [&a, &b, &c]
            .iter()
            .flat_map(|n| {
                let mut found = files_holding(&n.data, tenant.as_bytes());
                found.extend(files_holding(&n.data, b"zephyrine"));
                found.extend(files_holding(&n.data, b"vortigern"));
                found
            })
            .collect();
        if status == "completed" && leftovers.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "erasure {status:?}; still on disk: {leftovers:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And no row of the shared database holds the tenant's content: the certificate, read through C, says so.
    let r = client.get(c.url(&format!("/admin/erasures/{erasure}"))).bearer_auth(OPERATOR).send().await.expect("get");
    let certificate = r.json::<Value>().await.expect("json")["certificate"].clone();
    assert_eq!(certificate["verified"]["all_zero"], true, "{certificate}");
    assert_eq!(certificate["verified"]["database"]["chunks"], 0, "{certificate}");
    assert_eq!(certificate["verified"]["database"]["file_parts"], 0, "{certificate}");

    // A node whose key pepper differs refuses to start, saying why.
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    let out = spawn(dir.path(), &dir.path().join("data-d"), port, "another-pepper-entirely-0123456789abcdef", "d")
        .output()
        .expect("runs");
    assert!(!out.status.success(), "a node with another pepper must not start");
    let log = std::fs::read_to_string(dir.path().join("d.log")).expect("log");
    assert!(log.contains("key pepper"), "{log}");
}
