//! The few Pulsar admin REST calls the load generator and the benchmark make (create a partitioned topic, read
//! its subscription cursors, delete it), over a minimal HTTP/1.0 client: plain HTTP to the broker's admin port, one
//! request per connection, the body read to the end (HTTP/1.0 answers are never chunked).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A topic named either `name` or `persistent://tenant/namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    pub tenant: String,
    pub namespace: String,
    pub name: String,
}

impl Topic {
    pub fn parse(s: &str) -> Result<Topic> {
        let rest = s.strip_prefix("persistent://").unwrap_or(s);
        let parts: Vec<&str> = rest.split('/').collect();
        match parts[..] {
            [name] if !name.is_empty() => {
                Ok(Topic { tenant: "public".into(), namespace: "default".into(), name: name.into() })
            }
            [tenant, namespace, name] if !name.is_empty() => {
                Ok(Topic { tenant: tenant.into(), namespace: namespace.into(), name: name.into() })
            }
            _ => bail!("not a topic name: {s:?} (NAME or persistent://TENANT/NAMESPACE/NAME)"),
        }
    }

    pub fn full(&self) -> String {
        format!("persistent://{}/{}/{}", self.tenant, self.namespace, self.name)
    }

    /// The full name of partition `i`.
    pub fn partition(&self, i: u32) -> String {
        format!("{}-partition-{i}", self.full())
    }

    fn path(&self) -> String {
        format!("/admin/v2/persistent/{}/{}/{}", self.tenant, self.namespace, self.name)
    }
}

/// One HTTP request to the admin API at `base` (`http://host:port`); the status and the body.
pub async fn http(base: &str, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
    let authority = base.strip_prefix("http://").context("the Pulsar admin URL must start with http://")?;
    let authority = authority.trim_end_matches('/');
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Type: application/json\r\nAccept: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .with_context(|| format!("{method} {base}{path}: no answer in 30 s"))?
        .with_context(|| format!("{method} {base}{path}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_ref(), ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Creates `topic` with `partitions` partitions (an existing topic with as many partitions is accepted).
pub async fn create_partitioned(admin: &str, topic: &Topic, partitions: u32) -> Result<()> {
    let path = format!("{}/partitions", topic.path());
    let (status, body) = http(admin, "PUT", &path, Some(&partitions.to_string())).await?;
    match status {
        200..=299 => Ok(()),
        409 => {
            let (_, existing) = http(admin, "GET", &path, None).await?;
            let n: serde_json::Value = serde_json::from_str(&existing).unwrap_or_default();
            if n["partitions"].as_u64() == Some(partitions as u64) {
                Ok(())
            } else {
                bail!("topic {} exists with another partition count: {existing}", topic.full())
            }
        }
        _ => bail!("creating {} with {partitions} partitions: HTTP {status} {body}", topic.full()),
    }
}

/// How many partitions `topic` has (0: not partitioned, or not created yet).
pub async fn partitions(admin: &str, topic: &Topic) -> Result<u32> {
    let (status, body) = http(admin, "GET", &format!("{}/partitions", topic.path()), None).await?;
    if status != 200 {
        bail!("partitions of {}: HTTP {status} {body}", topic.full());
    }
    let v: serde_json::Value = serde_json::from_str(&body).context("partition metadata: not JSON")?;
    Ok(v["partitions"].as_u64().unwrap_or(0) as u32)
}

/// Deletes a partitioned topic and its subscriptions.
pub async fn delete_partitioned(admin: &str, topic: &Topic) -> Result<()> {
    let (status, body) = http(admin, "DELETE", &format!("{}/partitions?force=true", topic.path()), None).await?;
    if (200..300).contains(&status) || status == 404 {
        Ok(())
    } else {
        bail!("deleting {}: HTTP {status} {body}", topic.full())
    }
}

/// The mark-delete position (ledger, entry) of `subscription` on each partition; `None` for a partition where the
/// subscription does not exist yet.
pub async fn mark_deletes(
    admin: &str,
    topic: &Topic,
    partitions: u32,
    subscription: &str,
) -> Result<Vec<Option<(i64, i64)>>> {
    let mut out = Vec::with_capacity(partitions as usize);
    for i in 0..partitions {
        let t = Topic { name: format!("{}-partition-{i}", topic.name), ..topic.clone() };
        let (status, body) = http(admin, "GET", &format!("{}/internalStats", t.path()), None).await?;
        if status != 200 {
            bail!("internal stats of {}: HTTP {status} {body}", t.full());
        }
        let v: serde_json::Value = serde_json::from_str(&body).context("internal stats: not JSON")?;
        let position = v["cursors"][subscription]["markDeletePosition"].as_str().and_then(|p| {
            let (l, e) = p.split_once(':')?;
            Some((l.parse().ok()?, e.parse().ok()?))
        });
        out.push(position);
    }
    Ok(out)
}

/// Creates `subscription` on every partition of `topic`, at its end (before anything is published: its start).
pub async fn create_subscription(admin: &str, topic: &Topic, subscription: &str) -> Result<()> {
    let (status, body) = http(admin, "PUT", &format!("{}/subscription/{subscription}", topic.path()), None).await?;
    if (200..300).contains(&status) || status == 409 {
        Ok(())
    } else {
        bail!("creating subscription {subscription} on {}: HTTP {status} {body}", topic.full())
    }
}
