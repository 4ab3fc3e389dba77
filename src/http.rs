//! HTTP: `/metrics` (Prometheus text), `/healthz` (the process is up) and `/readyz` (it can do its job).
//!
//! `/readyz` answers 200 only when the consumer is subscribed, Postgres answers `SELECT 1`, and the schema is
//! current; otherwise 503 with a short plain-text reason. Each database check is bounded by [`CHECK_TIMEOUT`], so a
//! probe never hangs on an unreachable database.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::source::Subscription;

/// Longest a readiness check waits for Postgres.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    pub metrics: PrometheusHandle,
    pub pool: PgPool,
    pub status: Subscription,
}

/// Binds `bind:port` (port 0 picks a free port; see the returned listener's `local_addr`).
pub async fn bind(bind: &str, port: u16) -> anyhow::Result<TcpListener> {
    TcpListener::bind((bind, port)).await.with_context(|| format!("cannot listen on {bind}:{port}"))
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves until `cancel` fires, then finishes the requests in flight.
pub async fn serve(listener: TcpListener, state: AppState, cancel: CancellationToken) -> anyhow::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "HTTP: /metrics /healthz /readyz");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
        .context("HTTP server failed")
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    match readiness(&state).await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

/// `Err` carries the first reason the service is not ready.
async fn readiness(state: &AppState) -> Result<(), String> {
    if !state.status.is_subscribed() {
        return Err("pulsar: consumer not subscribed".into());
    }
    match tokio::time::timeout(CHECK_TIMEOUT, sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("postgres: {e}")),
        Err(_) => return Err(format!("postgres: no answer within {CHECK_TIMEOUT:?}")),
    }
    match tokio::time::timeout(CHECK_TIMEOUT, crate::migrate::schema_current(&state.pool)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => Err(format!("schema: {reason}")),
        Err(_) => Err(format!("schema: check took longer than {CHECK_TIMEOUT:?}")),
    }
}
