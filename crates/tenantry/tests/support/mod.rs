//! What the process tests share: a free port, and `tenantry serve` started on a data directory and waited for.
#![allow(dead_code)] // each test binary uses its own part

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Waits up to a minute until something listens on `port`.
pub fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start listening on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `tenantry serve` process, killed when dropped.
pub struct Served {
    pub child: Child,
    pub port: u16,
}

impl Served {
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tenantry serve --data-dir DATA_DIR` on a free loopback port with `env` added and its output discarded,
/// once it listens.
pub fn serve(data_dir: &Path, env: &[(&str, &str)]) -> Served {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tenantry serve starts");
    wait_listening(port);
    Served { child, port }
}
