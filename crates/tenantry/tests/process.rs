//! How the `tenantry` process sets itself up on the machine, checked on a running server.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The server opts out of transparent huge pages (`disable_transparent_huge_pages`): Linux reports it in the
/// process's status.
#[cfg(target_os = "linux")]
#[test]
fn the_server_runs_without_transparent_huge_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    let mut server = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    // Listening means `main` is well past its first line.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
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
