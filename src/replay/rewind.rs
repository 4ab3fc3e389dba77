//! `lookout-ingester rewind --to TIME|MESSAGE_ID`: moves the live subscription back so that the service ingests a
//! window again, and clears what the stored positions would otherwise make it skip.
//!
//! Per partition the target is a message: the first published at or after the time, or the id given. Then:
//!
//! 1. **No consumer may be connected** to the subscription (every replica stopped). A running replica would lose the
//!    window: its source drops redeliveries of what it already forwarded, and its batches in flight, beyond the
//!    window, would commit positions past the window (and acknowledge past it) right after they were cleared.
//!    Stopping a replica (SIGTERM) commits and acknowledges its batch in flight first, so nothing is lost.
//! 2. In **one transaction** that holds the subscription's position rows locked (`FOR UPDATE`, as every batch of
//!    the service takes them first), the cursor of each partition is reset to the target (admin API), the consumers
//!    are checked again (one that connected meanwhile aborts the rewind: run it again once it is stopped), and each
//!    stored position is set back to just before the target (never forward). A replica started during the
//!    transaction waits on the lock, then reads from the reset cursor with the cleared positions.
//! 3. After the commit, the positions are read again after a short settling time: one that moved past the target
//!    means something still wrote (a replica unreachable from Pulsar but not from Postgres); the rewind is then
//!    reported as failed, to be run again once every replica is stopped.
//!
//! Re-ingesting is safe because every write is idempotent and ordered by the precedence rules (docs/precedence.md):
//! events applied a second time leave the rows as they were.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::bail;
use sqlx::{Acquire, PgPool};

use super::plan::{Landing, resolve};
use super::target::{Target, show_time};
use crate::message::MessageId;
use crate::source::admin::Admin;
use crate::store::position;

/// One partition to move back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub partition: String,
    /// The first message to ingest again.
    pub to: MessageId,
}

impl Move {
    /// The stored position that makes the service apply `to` and everything after it: just before it.
    pub fn position(&self) -> MessageId {
        MessageId { batch_index: self.to.batch_index - 1, ..self.to }
    }
}

/// What a rewind would do, or did.
#[derive(Debug, Clone)]
pub struct Plan {
    pub topic: String,
    pub subscription: String,
    pub moves: Vec<Move>,
    /// Partitions left as they are, and why.
    pub untouched: Vec<(String, String)>,
}

/// A moved partition's stored position before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub partition: String,
    pub before: Option<MessageId>,
    pub after: MessageId,
}

/// Works out the moves: the subscription must exist on the topic; partitions where it does not, or with no message
/// at or after the time, are left alone.
pub async fn plan(admin: &Admin, topic: &str, subscription: &str, target: &Target) -> anyhow::Result<Plan> {
    let partitions = admin.partitions(topic).await?;
    let landings = resolve(admin, &partitions, target).await?;
    let mut plan = Plan { topic: topic.into(), subscription: subscription.into(), moves: vec![], untouched: vec![] };
    for p in &partitions {
        let has_subscription = admin.subscriptions(p).await?.iter().any(|s| s == subscription);
        match (landings.get(p), has_subscription) {
            (_, false) => plan.untouched.push((p.clone(), format!("no subscription {subscription} here"))),
            (None, true) => plan.untouched.push((p.clone(), "no message id given for it".into())),
            (Some(Landing::NothingAfter), true) => plan.untouched.push((p.clone(), "no message that late".into())),
            (Some(Landing::At(to)), true) => plan.moves.push(Move { partition: p.clone(), to: *to }),
        }
    }
    if plan.untouched.len() == partitions.len() && plan.untouched.iter().all(|(_, why)| why.starts_with("no subscr")) {
        bail!("subscription {subscription} does not exist on {topic}");
    }
    Ok(plan)
}

/// An error naming the connected consumers, if any.
pub async fn check_no_consumers(admin: &Admin, partitions: &[String], subscription: &str) -> anyhow::Result<()> {
    let mut connected = Vec::new();
    for p in partitions {
        for name in admin.consumers(p, subscription).await? {
            connected.push(format!("{name} on {p}"));
        }
    }
    if !connected.is_empty() {
        bail!(
            "consumers are connected to subscription {subscription}: {}. Stop every replica of the service first \
             (SIGTERM: each commits and acknowledges its batch in flight), rewind, then start them again",
            connected.join(", ")
        );
    }
    Ok(())
}

/// Resets the cursors and sets the positions back, in one transaction holding the position rows (see the module
/// documentation). Returns the positions before and after.
pub async fn apply(admin: &Admin, pool: &PgPool, plan: &Plan) -> anyhow::Result<Vec<Moved>> {
    let partitions: Vec<String> = plan.moves.iter().map(|m| m.partition.clone()).collect();
    let sub = plan.subscription.as_str();
    check_no_consumers(admin, &partitions, sub).await?;
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let before = position::lock(&mut tx, sub, &partitions).await?;
    for m in &plan.moves {
        admin.reset_cursor(&m.partition, sub, m.to).await?;
        tracing::info!(partition = %m.partition, subscription = sub, ledger = m.to.ledger, entry = m.to.entry, "cursor reset");
    }
    if let Err(e) = check_no_consumers(admin, &partitions, sub).await {
        tx.rollback().await?;
        bail!(
            "a consumer connected while the cursors were being reset; the stored positions were left as they were. \
             {e:#}, and run rewind again"
        );
    }
    let back: HashMap<String, MessageId> = plan.moves.iter().map(|m| (m.partition.clone(), m.position())).collect();
    position::move_back(&mut tx, sub, &back).await?;
    let after = position::read(&mut tx, sub, &partitions).await?;
    tx.commit().await?;
    Ok(plan
        .moves
        .iter()
        .map(|m| Moved {
            partition: m.partition.clone(),
            // A row the lock created (-1, -1, -1) means nothing was stored.
            before: before.get(&m.partition).copied().filter(|k| k.ledger >= 0),
            after: after.get(&m.partition).copied().unwrap_or(m.position()),
        })
        .collect())
}

/// Waits `settle`, then checks that no stored position moved past its target since the rewind (a writer that was
/// still running committed a batch).
pub async fn verify(pool: &PgPool, plan: &Plan, settle: Duration) -> anyhow::Result<()> {
    tokio::time::sleep(settle).await;
    let partitions: Vec<String> = plan.moves.iter().map(|m| m.partition.clone()).collect();
    let mut conn = pool.acquire().await?;
    let now = position::read(&mut conn, &plan.subscription, &partitions).await?;
    let moved: Vec<String> = plan
        .moves
        .iter()
        .filter_map(|m| {
            let stored = now.get(&m.partition)?;
            (*stored > m.position()).then(|| format!("{} is at {stored}", m.partition))
        })
        .collect();
    if !moved.is_empty() {
        bail!(
            "after the rewind a writer committed past the rewind point ({}): a replica of the service is still \
             running (perhaps cut off from Pulsar). The window may be skipped: stop every replica and run rewind again",
            moved.join("; ")
        );
    }
    Ok(())
}

/// The plan (and outcome) for people.
pub fn render(plan: &Plan, target: &Target, moved: Option<&[Moved]>) -> String {
    let what = match target {
        Target::Time(ms) => format!("the first message published at or after {}", show_time(*ms)),
        Target::Ids(_) => "the message ids given".to_string(),
    };
    let mut s = format!("rewind of subscription {} on {} to {what}:\n", plan.subscription, plan.topic);
    for m in &plan.moves {
        let done = moved.and_then(|all| all.iter().find(|d| d.partition == m.partition));
        let positions = match done {
            Some(d) => {
                let before = d.before.map_or_else(|| "none".to_string(), |b| b.to_string());
                format!(" (stored position {before} → {})", d.after)
            }
            None => String::new(),
        };
        s.push_str(&format!("  {}: from {}{positions}\n", m.partition, m.to));
    }
    for (p, why) in &plan.untouched {
        s.push_str(&format!("  {p}: left as it is ({why})\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_position_lies_just_before_the_target() {
        let m = Move { partition: "p".into(), to: MessageId::new(5, 7, 0) };
        assert_eq!(m.position(), MessageId::new(5, 7, -1));
        assert!(m.position() < MessageId::new(5, 7, 0) && m.position() > MessageId::new(5, 6, 99));
        let m = Move { partition: "p".into(), to: MessageId::new(5, 7, 3) };
        assert!(m.position() < MessageId::new(5, 7, 3) && m.position() >= MessageId::new(5, 7, 2));
    }
}
