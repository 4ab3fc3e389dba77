//! A private PostgreSQL + Pulsar pair (`scripts/services.sh` with its own state dir and ports) for the tests that
//! stop, kill and restart services, and databases on it.

use std::time::Instant;

use sqlx::{Connection, Executor, PgPool};

use super::broker::Broker;

/// A private PostgreSQL + Pulsar pair run by `scripts/services.sh` with its own state dir and ports, for the tests
/// that stop, kill and restart services (the shared pair is never touched).
pub const PRIVATE: [(&str, &str); 5] = [
    ("LI_STATE_DIR", "/var/tmp/li-test-faults"),
    ("LI_PG_PORT", "55461"),
    ("LI_PULSAR_PORT", "6661"),
    ("LI_PULSAR_WEB_PORT", "8061"),
    ("LI_PULSAR_BOOKIE_PORT", "3161"),
];

pub fn private_broker() -> Broker {
    Broker { url: "pulsar://127.0.0.1:6661".into(), admin: "http://127.0.0.1:8061".into() }
}

/// The private Postgres server's admin URL.
pub fn private_pg_url() -> String {
    "postgres://postgres@127.0.0.1:55461/lookout".into()
}

/// `scripts/services.sh <service> <command>` on the private pair; panics when it fails.
pub async fn private(service: &'static str, command: &'static str) {
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh"))
            .args([service, command])
            .envs(PRIVATE)
            .status()
    })
    .await
    .unwrap()
    .expect("run scripts/services.sh");
    assert!(status.success(), "scripts/services.sh {service} {command} (private pair) failed");
    eprintln!("[faults] private {service} {command}: {:?}", started.elapsed());
}

/// Stops the private pair when dropped (also when the test fails).
pub struct PrivateGuard;

impl Drop for PrivateGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh"))
            .arg("down")
            .envs(PRIVATE)
            .status();
    }
}

/// A migrated database on another server than `DATABASE_URL`'s (dropped at the end unless the test panicked).
pub struct ServerDb {
    pub url: String,
    pub pool: PgPool,
    admin_url: String,
    name: String,
}

impl ServerDb {
    pub async fn create(admin_url: &str) -> ServerDb {
        let name = format!("li_faults_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut admin = sqlx::PgConnection::connect(admin_url).await.expect("connect to the private Postgres");
        admin.execute(format!("CREATE DATABASE \"{name}\"").as_str()).await.expect("create database");
        let _ = admin.close().await;
        let url = super::db::with_database(admin_url, &name);
        let cfg =
            lookout_ingester::config::PostgresConfig { url: Some(url.clone()), pool_size: 4, ..Default::default() };
        let pool = lookout_ingester::db::pool(&cfg).await.expect("pool");
        lookout_ingester::migrate::migrate(&pool).await.expect("migrate");
        ServerDb { url, pool, admin_url: admin_url.to_string(), name }
    }
}

impl Drop for ServerDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept database {}", self.url);
            return;
        }
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = admin.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str()).await;
                }
            });
        })
        .join();
    }
}
