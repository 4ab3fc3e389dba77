//! The service in-process (`startup::App`) on a fresh database and a fresh topic of the shared broker.

use std::time::Duration;

use lookout_ingester::config::{Config, InitialPosition, LogFormat};
use lookout_ingester::startup::App;

use super::broker::{Broker, shared_broker};
use super::db::TestDb;

/// `LI_TEST_LOG=debug` shows the service's logs.
pub fn init_logs() {
    if let Ok(level) = std::env::var("LI_TEST_LOG") {
        lookout_ingester::telemetry::init(LogFormat::Text, &level);
    }
}

/// A test configuration: the database, the broker, the topic and subscription, an ephemeral HTTP port, short
/// batches and backoffs, and Armada's default annotation prefix.
pub fn config(db: &TestDb, b: &Broker, topic: &str, subscription: &str) -> Config {
    let mut c = Config::default();
    c.postgres.url = Some(db.url.clone());
    c.pulsar.url = b.url.clone();
    c.pulsar.jobset_events_topic = topic.to_string();
    c.pulsar.consumer_name = Some(format!("test-{subscription}"));
    c.subscription_name = subscription.to_string();
    c.initial_position = InitialPosition::Earliest;
    c.metrics_bind = "127.0.0.1".into();
    c.metrics_port = 0;
    c.batch_duration = Duration::from_millis(100);
    c.shutdown_timeout = Duration::from_secs(10);
    c.zombie_check_interval = Duration::from_secs(1);
    c.max_backoff = 2;
    // As Armada's default lookout-ingester configuration has it.
    c.annotations.user_annotation_prefix = Some("armadaproject.io/".into());
    c
}

/// Starts the service (within a minute).
pub async fn start(config: Config) -> App {
    tokio::time::timeout(Duration::from_secs(60), App::build(config)).await.expect("start in time").expect("start")
}

/// Stops the service and waits for a clean drain (within a minute).
pub async fn stop(app: App) {
    app.shutdown();
    tokio::time::timeout(Duration::from_secs(60), app.wait()).await.expect("stops in time").expect("clean stop");
}

/// A running service and what it runs on.
pub struct TestApp {
    pub app: App,
    pub db: TestDb,
    pub broker: Broker,
    /// Full topic name.
    pub topic: String,
    pub subscription: String,
    pub config: Config,
}

/// Starts the service on a fresh migrated database and a fresh topic (`partitions` 0: not partitioned) of the
/// shared broker; `adjust` changes the configuration first.
pub async fn spawn_app(name: &str, partitions: u32, adjust: impl FnOnce(&mut Config)) -> TestApp {
    init_logs();
    let db = TestDb::migrated().await;
    let broker = shared_broker();
    let unique = format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let topic = match partitions {
        0 => broker.create_topic(&unique).await,
        n => broker.create_partitioned_topic(&unique, n).await,
    };
    let subscription = format!("sub-{unique}");
    let mut config = config(&db, &broker, &topic, &subscription);
    adjust(&mut config);
    let app = start(config.clone()).await;
    TestApp { app, db, broker, topic, subscription, config }
}
