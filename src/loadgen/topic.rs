//! Topic names as the load generator and the benchmark take them (`NAME` or `persistent://TENANT/NAMESPACE/NAME`).

use anyhow::{Result, bail};

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
}
