//! The real binary as a child process (`lookout-ingester run`), with its log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::http::{eventually, http};

/// How to run one `lookout-ingester run` child.
#[derive(Clone, Debug)]
pub struct ChildSpec {
    pub name: String,
    pub database_url: String,
    pub pulsar_url: String,
    pub topic: String,
    pub subscription: String,
    /// YAML appended to the configuration file (top-level keys; a `pulsar:` block given in full by the caller).
    pub yaml: String,
    /// `log.level` (a `tracing` filter).
    pub log_level: String,
}

/// A running `lookout-ingester run` process. Killed (SIGKILL) when dropped; its log (JSON lines) is printed when the
/// test fails, and kept whole in `$LI_TEST_CHILD_LOGS` when that is set.
pub struct Child {
    pub name: String,
    process: tokio::process::Child,
    pub pid: u32,
    pub http: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Child {
    /// Starts the binary and waits until it has logged its HTTP address (it has checked Postgres and the schema).
    pub async fn spawn(spec: &ChildSpec) -> Child {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.yaml");
        let yaml = format!(
            "metrics_bind: 127.0.0.1\nmetrics_port: 0\nlog:\n  format: json\n  level: \"{}\"\n{}",
            spec.log_level, spec.yaml
        );
        std::fs::write(&config, yaml).expect("write config");
        let log = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let process = tokio::process::Command::new(env!("CARGO_BIN_EXE_lookout-ingester"))
            .arg("--config")
            .arg(&config)
            .args(["run", "--topic", &spec.topic, "--subscription", &spec.subscription])
            .env("DATABASE_URL", &spec.database_url)
            .env("PULSAR_URL", &spec.pulsar_url)
            .env_remove("RUST_LOG")
            .env_remove("LOOKOUT_INGESTER_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn lookout-ingester");
        let pid = process.id().expect("pid");
        let mut child =
            Child { name: spec.name.clone(), process, pid, http: "0.0.0.0:0".parse().unwrap(), log, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(addr) = child.logged_http_addr() {
                child.http = addr;
                return child;
            }
            if let Ok(Some(status)) = child.process.try_wait() {
                panic!("{} exited at start ({status}):\n{}", child.name, child.log_tail(40));
            }
            assert!(Instant::now() < deadline, "{} did not start:\n{}", child.name, child.log_tail(40));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logged_http_addr(&self) -> Option<SocketAddr> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"] == "lookout-ingester started")
            .and_then(|v| v["http"].as_str().and_then(|a| a.parse().ok()))
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Log lines whose message contains `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().filter(|l| l.contains(needle)).count()
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http("GET", &format!("http://{}{path}", self.http), None).await
    }

    pub async fn metrics(&self) -> String {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, 200, "{} /metrics", self.name);
        text
    }

    pub async fn wait_ready(&self, timeout: Duration) {
        eventually(&format!("{} /readyz 200", self.name), timeout, || async {
            (self.get("/readyz").await.0 == 200).then_some(())
        })
        .await;
    }

    /// SIGKILL, and reaps it.
    pub async fn kill9(&mut self) {
        self.process.start_kill().expect("SIGKILL");
        let status = self.process.wait().await.expect("wait");
        assert!(!status.success(), "{} exited by itself before the kill ({status})", self.name);
    }

    /// SIGTERM (the process is not waited for).
    pub fn sigterm(&self) {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM {}", self.pid);
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.process.wait()).await {
            Ok(status) => status.expect("wait"),
            Err(_) => panic!("{} did not exit within {timeout:?}:\n{}", self.name, self.log_tail(40)),
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- log of {} (pid {}), last lines ----\n{}\n----", self.name, self.pid, self.log_tail(60));
        }
        // LI_TEST_CHILD_LOGS=<dir>: keep every child's whole log there (`<name>.log`), failed or not.
        if let Some(dir) = std::env::var_os("LI_TEST_CHILD_LOGS") {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::copy(&self.log, std::path::Path::new(&dir).join(format!("{}.log", self.name)));
        }
        let _ = self.process.start_kill();
    }
}
