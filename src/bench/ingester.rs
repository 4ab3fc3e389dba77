//! The ingesters under test, as child processes: ours (`lookout-ingester run`) and Armada's Go `lookoutingester`
//! (given by path; it reads `./config/lookoutingester/config.yaml` from its working directory, which the benchmark
//! writes with Armada's defaults and loopback addresses). Armada's `lookout --migrateDatabase` prepares the
//! reference's database when its binary is there.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sqlx::postgres::PgConnectOptions;
use tokio::process::{Child, Command};

use super::sys;

/// Which ingester.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Ours,
    Reference,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Reference => "reference",
        }
    }
}

/// Where one ingester consumes from and writes to.
pub struct Target<'a> {
    pub db: &'a PgConnectOptions,
    pub db_url: &'a str,
    pub pulsar_url: &'a str,
    pub topic: &'a str,
    pub subscription: &'a str,
    pub metrics_port: u16,
    /// Working directory (logs, the reference's configuration).
    pub dir: &'a Path,
}

pub struct Running {
    child: Child,
    pub pid: u32,
    pub log: PathBuf,
}

/// The `postgres.connection` block of an Armada configuration for `db`.
fn connection_yaml(db: &PgConnectOptions) -> String {
    format!(
        "postgres:\n  connection:\n    host: {}\n    port: {}\n    user: {}\n    dbname: {}\n    sslmode: disable\n",
        db.get_host(),
        db.get_port(),
        db.get_username(),
        db.get_database().unwrap_or("postgres")
    )
}

/// Writes `./config/<component>/config.yaml` and the `./config/logging.yaml` Armada's binaries also require
/// (console, text, INFO; no log file).
fn write_config(dir: &Path, component: &str, yaml: &str) -> Result<()> {
    let d = dir.join("config").join(component);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join("config.yaml"), yaml)?;
    std::fs::write(
        dir.join("config").join("logging.yaml"),
        "console:\n  level: INFO\n  format: text\nfile:\n  enabled: false\n  level: INFO\n  format: json\n  logfile: app.log\n",
    )?;
    Ok(())
}

/// Migrates the reference's database with Armada's `lookout --migrateDatabase`.
pub async fn migrate_reference(lookout: &Path, db: &PgConnectOptions, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    write_config(dir, "lookout", &connection_yaml(db))?;
    let out = Command::new(lookout).arg("--migrateDatabase").current_dir(dir).output().await?;
    if !out.status.success() {
        bail!("{} --migrateDatabase failed: {}", lookout.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Starts an ingester.
pub async fn start(kind: Kind, binary: &Path, t: &Target<'_>) -> Result<Running> {
    std::fs::create_dir_all(t.dir)?;
    let log = t.dir.join(format!("{}.log", kind.name()));
    let out = std::fs::File::create(&log)?;
    let mut cmd = Command::new(binary);
    match kind {
        Kind::Ours => {
            cmd.args(["run", "--topic", t.topic, "--subscription", t.subscription, "--metrics-port"])
                .arg(t.metrics_port.to_string())
                .env("DATABASE_URL", t.db_url)
                .env("PULSAR_URL", t.pulsar_url)
                .env_remove("LOOKOUT_INGESTER_CONFIG");
        }
        Kind::Reference => {
            // Armada's defaults (config/lookoutingester/config.yaml at the reference commit), on loopback.
            let yaml = format!(
                "{}metricsPort: {}\npulsar:\n  URL: \"{}\"\n  jobsetEventsTopic: \"{}\"\n  backoffTime: 1s\n  \
                 receiverQueueSize: 100\n  delayMonitor:\n    enabled: false\n    interval: 30s\nsubscriptionName: \"{}\"\n\
                 batchSize: 10000\nbatchDuration: 500ms\nminJobSpecCompressionSize: 1024\n\
                 userAnnotationPrefix: \"armadaproject.io/\"\nmaxBackoff: 60\n",
                connection_yaml(t.db),
                t.metrics_port,
                t.pulsar_url,
                t.topic,
                t.subscription
            );
            write_config(t.dir, "lookoutingester", &yaml)?;
            cmd.current_dir(t.dir);
        }
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = child.id().context("the ingester exited at once")?;
    Ok(Running { child, pid, log })
}

impl Running {
    /// (CPU seconds, peak RSS MiB) so far.
    pub fn usage(&self) -> (Option<f64>, Option<f64>) {
        (sys::cpu_seconds(self.pid), sys::peak_rss_mib(self.pid))
    }

    /// Fails when the process has exited (with the end of its log).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
            bail!("the ingester exited ({status}); log {}:\n{}", self.log.display(), tail.join("\n"));
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after 30 s.
    pub async fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status().await;
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.is_err() {
            self.child.kill().await?;
        }
        Ok(())
    }
}
