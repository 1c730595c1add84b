//! The README's walk through the API with curl, run as written (every command must succeed, `curl -f`)
//! against a fresh `tenantry serve`, with the fixture PDF as the reader's `handbook.pdf`.

mod support;

use std::path::Path;
use std::process::Command;

/// The shell block under the README's "A walk through the API with curl" heading.
fn walkthrough(readme: &str) -> String {
    let section = readme.split("## A walk through the API with curl").nth(1).expect("the walkthrough heading");
    let block = section.split("```sh\n").nth(1).expect("a sh block");
    block.split("\n```").next().expect("the block's end").to_owned()
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let script = walkthrough(&readme);
    assert!(script.contains("curl"), "{script}");

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(root.join("crates/tenantry-ingest/tests/fixtures/sample.pdf"), dir.path().join("handbook.pdf"))
        .expect("handbook.pdf");
    let server = support::serve(&dir.path().join("data"), &[]);

    // The README's address is the default bind; this server listens on a free port instead.
    let script = script.replace("localhost:8080", &format!("127.0.0.1:{}", server.port));
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .output()
        .expect("bash runs");
    drop(server);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the walkthrough failed:\n{stdout}\n{stderr}");
    // What each step is there to show came back.
    for expected in [
        "\"api_key\":\"tk_",
        "\"chunks\":",
        "Refunds are issued within 14 days",
        "event: done",
        "\"retrieval_mode\":\"advanced\"",
        "\"queries\":",
        "\"scopes\":[\"query\"]",
    ] {
        assert!(stdout.contains(expected), "{expected} in the output:\n{stdout}");
    }
}
