//! Shared harness for the integration tests: a fresh PostgreSQL database per test.
//!
//! Use it from a test file with `mod support;` and `use support::db::TestDb;`.
//!
//! Environment: `DATABASE_URL` must point at a Postgres server with a role that may create and drop databases
//! (a superuser URL such as `postgres://postgres@127.0.0.1:55433/lookout`; the database part is only used to connect
//! for CREATE/DROP DATABASE). Tests panic with a clear message when it is unset.
//!
//! API:
//! - `TestDb::new().await -> TestDb`: a new, empty database named `li_test_<unix seconds>_<random>`.
//! - `TestDb::migrated().await -> TestDb`: the same with every migration of this binary applied
//!   (`lookout_ingester::migrate::migrate`); `new_with(options)` / `migrated_with(options)` add `CREATE DATABASE`
//!   options (e.g. an ICU collation).
//! - `db.pool: PgPool`: a pool on it, with the service's session settings (`lookout_ingester::db::pool`:
//!   `TimeZone=UTC`, `jit=off`).
//! - `db.url: String`, `db.name: String`: its URL and name.
//! - `db.new_pool().await -> PgPool`: another, independent pool (e.g. a second "process").
//! - `db.connect().await -> PgConnection`: one extra connection.
//! - `db.admin().await -> PgConnection`: a connection to the `DATABASE_URL` database.
//!
//! Clean-up: dropping a `TestDb` drops its database (`DROP DATABASE … WITH (FORCE)`, from a helper thread, because
//! `Drop` cannot await). A database whose test panicked is kept for inspection (its URL is printed), as are all of
//! them when `LI_TEST_KEEP=1`. The first `TestDb` a test process creates also drops `li_test_<seconds>_*` databases
//! older than one hour, so kept or leaked databases do not pile up.
#![allow(dead_code)]

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lookout_ingester::config::PostgresConfig;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection, PgPool};

const PREFIX: &str = "li_test_";
const STALE_AFTER: Duration = Duration::from_secs(3600);
static STALE_CLEANED: AtomicBool = AtomicBool::new(false);

pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    pub name: String,
    admin_url: String,
}

/// `DATABASE_URL`, or a panic that says what to set.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set: the integration tests need a Postgres server and a role that can create \
             databases, e.g. DATABASE_URL=postgres://postgres@127.0.0.1:55433/lookout (scripts/services.sh up starts \
             one)"
        )
    })
}

/// The same URL with another database name (keeps user, password, host, port and query parameters).
pub fn with_database(url: &str, name: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((m, q)) => (m, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_start = main.find("://").map_or(0, |i| i + 3);
    let base = match main[authority_start..].find('/') {
        Some(i) => &main[..authority_start + i],
        None => main,
    };
    format!("{base}/{name}{query}")
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

async fn connect(url: &str) -> PgConnection {
    let opts = PgConnectOptions::from_str(url).unwrap_or_else(|e| panic!("bad Postgres URL {url}: {e}"));
    opts.log_statements(tracing::log::LevelFilter::Off)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

/// Drops `li_test_<seconds>_*` databases created more than an hour ago (once per test process).
async fn drop_stale(admin: &mut PgConnection) {
    if STALE_CLEANED.swap(true, Ordering::SeqCst) {
        return;
    }
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE 'li\\_test\\_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    let cutoff = unix_now().saturating_sub(STALE_AFTER.as_secs());
    for name in names {
        let created = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .and_then(|(secs, _)| secs.parse::<u64>().ok());
        if created.is_some_and(|t| t < cutoff) {
            let _ = admin.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str()).await;
        }
    }
}

impl TestDb {
    /// A new, empty database.
    pub async fn new() -> TestDb {
        TestDb::new_with("").await
    }

    /// A new, empty database created with these `CREATE DATABASE` options (e.g. another collation).
    pub async fn new_with(options: &str) -> TestDb {
        let admin_url = admin_url();
        let mut admin = connect(&admin_url).await;
        drop_stale(&mut admin).await;
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{PREFIX}{}_{}", unix_now(), &suffix[..12]);
        admin
            .execute(format!("CREATE DATABASE \"{name}\" {options}").as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        let pool = pool_for(&url).await;
        TestDb { pool, url, name, admin_url }
    }

    /// A new database with every migration applied.
    pub async fn migrated() -> TestDb {
        TestDb::migrated_with("").await
    }

    /// [`TestDb::new_with`], with every migration applied.
    pub async fn migrated_with(options: &str) -> TestDb {
        let db = TestDb::new_with(options).await;
        if let Err(e) = lookout_ingester::migrate::migrate(&db.pool).await {
            panic!("migrating test database {}: {e}", db.name);
        }
        db
    }

    /// Another pool on the same database.
    pub async fn new_pool(&self) -> PgPool {
        pool_for(&self.url).await
    }

    /// One extra connection to the database.
    pub async fn connect(&self) -> PgConnection {
        connect(&self.url).await
    }

    /// A connection to the `DATABASE_URL` database (for CREATE/DROP DATABASE and the like).
    pub async fn admin(&self) -> PgConnection {
        connect(&self.admin_url).await
    }
}

async fn pool_for(url: &str) -> PgPool {
    let cfg = PostgresConfig { url: Some(url.to_string()), pool_size: 5, ..Default::default() };
    lookout_ingester::db::pool(&cfg).await.unwrap_or_else(|e| panic!("cannot open a pool on {url}: {e:#}"))
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var("LI_TEST_KEEP").is_ok_and(|v| v == "1") {
            eprintln!("kept test database: {}", self.url);
            return;
        }
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop cannot await, and the test's runtime may be single-threaded: use a thread with its own runtime.
        // WITH (FORCE) ends this database's sessions (the pool's connections) first.
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                let mut admin = connect(&admin_url).await;
                if let Err(e) = admin.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str()).await
                {
                    eprintln!("could not drop test database {name}: {e} (it will be dropped after an hour)");
                }
                let _ = admin.close().await;
            });
        });
        let _ = handle.join();
    }
}
