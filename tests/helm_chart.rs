//! The Helm chart (`deploy/helm/lookout-ingester`), rendered by the real helm CLI (`scripts/helm.sh` installs a
//! pinned one with `go install`) with its defaults and with values written the way Armada's lookout-ingester
//! chart is configured, and checked against the program it deploys:
//! - the probes hit paths and a port the service really serves (the crate's HTTP server, started here);
//! - the rendered configuration is accepted by the crate's own config loader, with the same port;
//! - the migrate hook runs a command the built binary really has (`lookout-ingester --config … migrate --help`);
//! - the grace period covers the shutdown timeout; the password comes from the Secret through a file the config
//!   names; the image is the one the Dockerfile builds, run as the user it creates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lookout_ingester::config::{Config, Overrides};
use serde::Deserialize;
use serde_yaml::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("deploy/helm/lookout-ingester")
}

/// The helm CLI, installed by scripts/helm.sh when missing; a clear failure when that is impossible.
fn helm() -> PathBuf {
    let out = Command::new(root().join("scripts/helm.sh"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/helm.sh to get the helm CLI: {e}"));
    assert!(
        out.status.success(),
        "the chart tests need the helm CLI, and scripts/helm.sh could not provide it (it installs helm with `go \
         install` from the Go module proxy; Go >= 1.23 must be on PATH):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).expect("a path").trim())
}

/// `helm template` with a values file; the rendered objects, or helm's error text.
fn render(values: &str) -> Result<Vec<Value>, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, values).expect("write values");
    let out = Command::new(helm())
        .args(["template", "lookout", "--namespace", "armada", "--values"])
        .arg(&file)
        .arg(chart())
        .output()
        .expect("run helm template");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("helm renders valid YAML"))
        .filter(|v| !v.is_null())
        .collect();
    Ok(docs)
}

fn s<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, key| match key.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[key],
    })
}

fn str_of<'a>(v: &'a Value, path: &str) -> &'a str {
    s(v, path).as_str().unwrap_or_else(|| panic!("{path} is not a string in {v:?}"))
}

fn objects<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"].as_str() == Some(kind)).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = objects(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, got {}", found.len());
    found[0]
}

fn is_hook(o: &Value) -> bool {
    o["metadata"]["annotations"]["helm.sh/hook"].as_str().is_some()
}

/// The config file a ConfigMap carries, as the crate loads it (with the container's plain env values).
fn load_config(config_map: &Value, env: &[(String, String)]) -> (Config, tempfile::NamedTempFile) {
    let text = config_map["data"]["application_config.yaml"].as_str().expect("the config file is in the ConfigMap");
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), text).expect("write config");
    let config = Config::load_from(Some(file.path()), &Overrides::default(), env)
        .unwrap_or_else(|e| panic!("the rendered configuration is rejected by the ingester: {e:#}\n{text}"));
    (config, file)
}

fn plain_env(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_sequence()
        .map(|list| {
            list.iter()
                .filter_map(|e| Some((e["name"].as_str()?.to_string(), e["value"].as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Mount path of a volume in a container, by volume name.
fn mount_of<'a>(container: &'a Value, volume: &str) -> Option<&'a Value> {
    container["volumeMounts"].as_sequence()?.iter().find(|m| m["name"].as_str() == Some(volume))
}

fn volume_of<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    pod["volumes"].as_sequence()?.iter().find(|v| v["name"].as_str() == Some(name))
}

/// The file a container sees at `path`, resolved through its mounts to (volume, key in that volume).
fn config_map_of<'a>(docs: &'a [Value], pod: &Value, container: &Value) -> &'a Value {
    let mount = container["volumeMounts"]
        .as_sequence()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"].as_str() == Some("/config/application_config.yaml"))
        .expect("the config file is mounted where --config points");
    let key = str_of(mount, "subPath");
    let volume = volume_of(pod, str_of(mount, "name")).expect("the mounted volume exists");
    let name = str_of(volume, "configMap.name");
    let cm = objects(docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("ConfigMap {name} is rendered"));
    assert!(cm["data"][key].is_string(), "ConfigMap {name} has {key}");
    cm
}

fn args(container: &Value) -> Vec<&str> {
    container["args"].as_sequence().expect("args").iter().map(|a| a.as_str().expect("string arg")).collect()
}

/// GET `path` on the crate's own HTTP server; the status code.
async fn status_of(port: u16, path: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.expect("read");
    reply.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("a status line")
}

/// Starts the crate's HTTP server (what `run` serves on `metrics_port`) on a free port.
async fn serve() -> (u16, tokio_util::sync::CancellationToken) {
    use lookout_ingester::http::{AppState, bind, serve};
    let listener = bind("127.0.0.1", 0).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let state = AppState {
        metrics: metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle(),
        pool: sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(200))
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("lazy pool"),
        status: Default::default(),
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(serve(listener, state, cancel.clone()));
    (port, cancel)
}

/// Everything a rendering must satisfy, whatever the values.
async fn check_rendering(docs: &[Value]) -> Config {
    let deployment = one(docs, "Deployment");
    let pod = s(deployment, "spec.template.spec");
    let containers = pod["containers"].as_sequence().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // The command: the image's entrypoint (the binary), `--config <mounted file> run`.
    assert!(c["command"].is_null(), "the image's ENTRYPOINT is the binary; the chart only gives args");
    assert_eq!(args(c), ["--config", "/config/application_config.yaml", "run"]);

    // Configuration: accepted by the crate's loader; its port is the container's, the Service's and the probes'.
    let cm = config_map_of(docs, pod, c);
    assert!(!is_hook(cm), "the Deployment's config is a regular object");
    let (config, _file) = load_config(cm, &plain_env(c));
    let port = u64::from(config.metrics_port);
    let ports = c["ports"].as_sequence().expect("ports");
    let metrics = ports.iter().find(|p| p["name"].as_str() == Some("metrics")).expect("a metrics port");
    assert_eq!(metrics["containerPort"].as_u64(), Some(port), "container port = config metrics_port");
    let service = one(docs, "Service");
    let sp = &service["spec"]["ports"][0];
    assert_eq!(sp["port"].as_u64(), Some(port));
    assert_eq!(sp["targetPort"].as_str(), Some("metrics"));
    assert_eq!(service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"]);
    assert_eq!(config.metrics_bind, "0.0.0.0", "probes come from the kubelet, not from localhost");

    // Probes: the paths the service answers on, at the metrics port.
    let (server_port, cancel) = serve().await;
    for (probe, want_path, want_status) in [("readinessProbe", "/readyz", 503), ("livenessProbe", "/healthz", 200)] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(want_path), "{probe}");
        assert_eq!(get["port"].as_str(), Some("metrics"), "{probe} targets the named metrics port");
        // Not subscribed, so not ready (503), but served: an unknown path is 404.
        assert_eq!(status_of(server_port, want_path).await, want_status, "{want_path} on the crate's HTTP server");
    }
    assert_eq!(status_of(server_port, "/nope").await, 404, "the check tells a served path from an unserved one");
    cancel.cancel();

    // Shutdown: Kubernetes waits longer than the ingester may take to store its last batch.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().expect("grace period");
    assert!(
        Duration::from_secs(grace) >= config.shutdown_timeout + Duration::from_secs(5),
        "terminationGracePeriodSeconds {grace} < shutdown_timeout {:?} + 5s",
        config.shutdown_timeout
    );

    // Password: when the config names a password file, it is the mounted Secret key.
    if let Some(file) = &config.postgres.password_file {
        let (dir, key) = (file.parent().expect("dir"), file.file_name().expect("name").to_str().expect("utf-8"));
        let mount = c["volumeMounts"]
            .as_sequence()
            .expect("mounts")
            .iter()
            .find(|m| m["mountPath"].as_str().map(Path::new) == Some(dir))
            .expect("the password file's directory is mounted");
        let volume = volume_of(pod, str_of(mount, "name")).expect("volume");
        let items = volume["secret"]["items"].as_sequence().expect("a Secret volume with items");
        assert!(items.iter().any(|i| i["path"].as_str() == Some(key)), "the Secret key lands at {file:?}");
    }

    // The PodDisruptionBudget covers these pods.
    let pdb = one(docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"]);

    // Image: what the Dockerfile builds, as the user it creates.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let entrypoint = dockerfile.lines().find_map(|l| l.strip_prefix("ENTRYPOINT ")).expect("ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(entrypoint).expect("exec-form ENTRYPOINT");
    assert_eq!(entrypoint, ["/usr/local/bin/lookout-ingester"]);
    assert!(dockerfile.contains("COPY --from=build /usr/local/bin/lookout-ingester /usr/local/bin/lookout-ingester"));
    assert!(dockerfile.contains("cargo build --release --locked --bin lookout-ingester"));
    let uid = s(pod, "securityContext.runAsUser").as_u64().expect("runAsUser");
    assert!(dockerfile.contains(&format!("--uid {uid} ")), "the Dockerfile creates user {uid}");
    config
}

/// The migrate hook: runs before install and upgrade, with a config of its own that the binary accepts, and a
/// `migrate` command the binary has.
fn check_migrate_hook(docs: &[Value], config: &Config) {
    let jobs: Vec<&Value> = objects(docs, "Job");
    assert_eq!(jobs.len(), 1, "one migrate Job");
    let job = jobs[0];
    let hooks = job["metadata"]["annotations"]["helm.sh/hook"].as_str().expect("a hook");
    assert!(hooks.contains("pre-install") && hooks.contains("pre-upgrade"), "{hooks}");
    let pod = s(job, "spec.template.spec");
    assert_eq!(pod["restartPolicy"].as_str(), Some("Never"));
    let c = &pod["containers"][0];
    assert_eq!(args(c), ["--config", "/config/application_config.yaml", "migrate"]);
    let cm = config_map_of(docs, pod, c);
    assert!(is_hook(cm), "hooks run before regular objects exist: the Job's config must be a hook too");
    let weight = |o: &Value| -> i64 {
        o["metadata"]["annotations"]["helm.sh/hook-weight"].as_str().unwrap_or("0").parse().expect("weight")
    };
    assert!(weight(cm) < weight(job), "the config hook is created before the Job");
    let (hook_config, file) = load_config(cm, &plain_env(c));
    assert_eq!(&hook_config, config, "the Job migrates the database the Deployment uses");
    assert!(pod["serviceAccountName"].is_null() || pod["serviceAccountName"].as_str().is_some());

    // The built binary has the command, with this config file.
    let out = Command::new(env!("CARGO_BIN_EXE_lookout-ingester"))
        .arg("--config")
        .arg(file.path())
        .args(["migrate", "--help"])
        .output()
        .expect("run lookout-ingester");
    assert!(out.status.success(), "lookout-ingester migrate --help: {}", String::from_utf8_lossy(&out.stderr));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.to_lowercase().contains("migration"), "{help}");
}

#[tokio::test]
async fn default_values_render_a_working_deployment() {
    let docs = render("{}").expect("helm template with the defaults");
    let config = check_rendering(&docs).await;
    check_migrate_hook(&docs, &config);
    assert_eq!(config.metrics_port, 9000, "Armada's chart default port, so Services and monitors keep working");
    assert!(config.postgres.password_file.is_none());
    assert!(objects(&docs, "ServiceMonitor").is_empty(), "prometheus.enabled defaults to false");
    let kinds: BTreeMap<&str, usize> = docs.iter().fold(BTreeMap::new(), |mut m, d| {
        *m.entry(d["kind"].as_str().unwrap_or("?")).or_default() += 1;
        m
    });
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("ConfigMap", 2),
            ("Deployment", 1),
            ("Job", 1),
            ("PodDisruptionBudget", 1),
            ("Service", 1),
            ("ServiceAccount", 1)
        ])
    );
}

/// Values as an Armada installation has them for its lookout-ingester chart (its config keys, camelCase), plus the
/// password from a Secret.
const ARMADA_STYLE: &str = r#"
image:
  repository: registry.example/lookout-ingester
  tag: "1.2.3"
replicas: 2
terminationGracePeriodSeconds: 45
shutdownTimeoutSeconds: 30
tolerations:
  - key: armada
    operator: Exists
    effect: NoSchedule
additionalLabels:
  team: platform
additionalVolumes:
  - name: pg-ca
    secret:
      secretName: postgres-ca
additionalVolumeMounts:
  - name: pg-ca
    mountPath: /certs/postgres
    readOnly: true
env:
  - name: RUST_LOG
    value: info
postgresPassword:
  secretName: lookout-postgres
  secretKey: pgpass
prometheus:
  enabled: true
  labels:
    release: kube-prometheus
applicationConfig:
  metricsPort: 9003
  postgres:
    connection:
      host: postgres.armada.svc
      port: 5432
      user: lookout
      dbname: lookout
      sslmode: verify-full
      sslrootcert: /certs/postgres/ca.crt
  pulsar:
    URL: pulsar+ssl://pulsar.armada.svc:6651
    jobsetEventsTopic: events
    authenticationEnabled: true
    authenticationType: JWT
    jwtTokenPath: /pulsar/tokens/pulsar-token
    authenticationSecret: armada-pulsar-token
    tlsEnabled: true
    TLSTrustCertsFilePath: /pulsar/ca/ca.crt
    cacert: armada-pulsar-ca
    receiverQueueSize: 100
  subscriptionName: lookout-ingester-v2
  batchSize: 10000
  batchDuration: 500ms
  minJobSpecCompressionSize: 1024
  userAnnotationPrefix: armadaproject.io/
  maxBackoff: 60
  profiling:
    port: 1338
"#;

#[tokio::test]
async fn armada_style_values_render_a_working_deployment() {
    let docs = render(ARMADA_STYLE).expect("helm template with Armada-style values");
    let config = check_rendering(&docs).await;
    check_migrate_hook(&docs, &config);
    assert_eq!(config.metrics_port, 9003);
    assert_eq!(config.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(config.subscription_name, "lookout-ingester-v2");
    assert_eq!(config.pulsar.jobset_events_topic, "events");
    assert_eq!(config.postgres.connection.host.as_deref(), Some("postgres.armada.svc"));
    assert_eq!(config.postgres.password_file.as_deref(), Some(Path::new("/secrets/postgres/pgpass")));

    let deployment = one(&docs, "Deployment");
    let pod = s(deployment, "spec.template.spec");
    let c = &pod["containers"][0];
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(2));
    assert_eq!(c["image"].as_str(), Some("registry.example/lookout-ingester:1.2.3"));
    assert_eq!(pod["tolerations"][0]["key"].as_str(), Some("armada"));
    assert_eq!(deployment["metadata"]["labels"]["team"].as_str(), Some("platform"));
    assert_eq!(
        str_of(volume_of(pod, "postgres-password").expect("secret volume"), "secret.secretName"),
        "lookout-postgres"
    );
    assert_eq!(str_of(volume_of(pod, "pulsar-token").expect("token"), "secret.secretName"), "armada-pulsar-token");
    assert_eq!(str_of(volume_of(pod, "pulsar-ca").expect("ca"), "secret.secretName"), "armada-pulsar-ca");
    assert!(mount_of(c, "pg-ca").is_some() && volume_of(pod, "pg-ca").is_some(), "extra volumes and mounts");
    let token = str_of(mount_of(c, "pulsar-token").expect("token mount"), "mountPath");
    assert_eq!(config.pulsar.jwt_token_path.as_deref(), Some(Path::new(&format!("{token}/pulsar-token"))));

    let monitor = one(&docs, "ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"].as_str(), Some("metrics"));
    assert_eq!(monitor["spec"]["endpoints"][0]["path"].as_str(), Some("/metrics"));
    assert_eq!(monitor["metadata"]["labels"]["release"].as_str(), Some("kube-prometheus"));
    assert_eq!(monitor["spec"]["selector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"]);
}

#[test]
fn a_grace_period_shorter_than_the_shutdown_timeout_is_refused() {
    let err = render("terminationGracePeriodSeconds: 20\nshutdownTimeoutSeconds: 25\n").expect_err("must not render");
    assert!(err.contains("terminationGracePeriodSeconds"), "{err}");
    let err = render("applicationConfig:\n  shutdownTimeout: 90s\n").expect_err("must not render");
    assert!(err.contains("shutdownTimeoutSeconds"), "{err}");
}

#[test]
fn the_migrate_hook_can_be_switched_off() {
    let docs = render("migrate:\n  enabled: false\n").expect("renders");
    assert!(objects(&docs, "Job").is_empty());
    assert_eq!(objects(&docs, "ConfigMap").len(), 1);
}
