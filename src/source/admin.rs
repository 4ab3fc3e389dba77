//! The Pulsar admin REST API client (one request: a topic's stats, for the watchdog), on `reqwest`.

use std::sync::OnceLock;
use std::time::Duration;

/// How long one admin API request may take.
pub(super) const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest admin API answer read.
const ADMIN_MAX_BODY: usize = 8 << 20;

/// One client per process (it pools connections).
fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client);
    }
    let client = reqwest::Client::builder()
        .timeout(ADMIN_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    Ok(CLIENT.get_or_init(|| client))
}

/// `GET url` on the admin API (`http://` or `https://`), the body parsed as JSON; any answer but 200 is an error.
pub(super) async fn admin_get(url: &str, token: Option<&[u8]>) -> Result<serde_json::Value, String> {
    let mut request = client()?.get(url).header(reqwest::header::ACCEPT, "application/json");
    if let Some(token) = token {
        request = request.bearer_auth(String::from_utf8_lossy(token));
    }
    let mut response = request.send().await.map_err(|e| format!("send: {e}"))?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("read: {e}"))? {
        if body.len() + chunk.len() > ADMIN_MAX_BODY {
            return Err(format!("answer larger than {ADMIN_MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("JSON: {e}"))
}
