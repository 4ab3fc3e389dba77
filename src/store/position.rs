//! All SQL for `lookout_ingester.consumer_position`: the last committed position of each topic partition.
//!
//! A batch locks the rows of the partitions it holds at the start of its transaction (so two replicas that briefly
//! both hold a partition during a failover take turns), skips messages at or before the stored position, and
//! advances the position in the same transaction as the rows it writes. `rewind` sets positions back
//! ([`move_back`]) under the same lock.

use std::collections::HashMap;

use sqlx::PgConnection;

use crate::message::MessageId;

/// Creates missing rows (they are locked by the insert itself) and locks and returns the existing ones.
const LOCK: &str = "
WITH missing AS (
    INSERT INTO lookout_ingester.consumer_position (subscription, topic, ledger_id, entry_id, batch_index)
    SELECT $1, t, -1, -1, -1 FROM unnest($2::text[]) AS t
    ON CONFLICT (subscription, topic) DO NOTHING
)
SELECT topic, ledger_id, entry_id, batch_index
FROM lookout_ingester.consumer_position
WHERE subscription = $1 AND topic = ANY($2::text[])
ORDER BY topic
FOR UPDATE";

/// Moves each position forward (never back).
const SAVE: &str = "
UPDATE lookout_ingester.consumer_position p
SET ledger_id = t.ledger_id, entry_id = t.entry_id, batch_index = t.batch_index, updated_at = now()
FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::int[]) AS t(topic, ledger_id, entry_id, batch_index)
WHERE p.subscription = $1 AND p.topic = t.topic
  AND (t.ledger_id, t.entry_id, t.batch_index) > (p.ledger_id, p.entry_id, p.batch_index)";

/// Moves each position back (never forward): `rewind` clears what the service would otherwise skip.
const MOVE_BACK: &str = "
UPDATE lookout_ingester.consumer_position p
SET ledger_id = t.ledger_id, entry_id = t.entry_id, batch_index = t.batch_index, updated_at = now()
FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::int[]) AS t(topic, ledger_id, entry_id, batch_index)
WHERE p.subscription = $1 AND p.topic = t.topic
  AND (t.ledger_id, t.entry_id, t.batch_index) < (p.ledger_id, p.entry_id, p.batch_index)";

/// The stored positions, without locking them.
const READ: &str = "
SELECT topic, ledger_id, entry_id, batch_index
FROM lookout_ingester.consumer_position
WHERE subscription = $1 AND topic = ANY($2::text[])
ORDER BY topic";

/// The position per topic partition.
pub type Positions = HashMap<String, MessageId>;

/// A position row as selected: topic, ledger, entry, batch index.
type Row = (String, i64, i64, i32);

fn positions(rows: Vec<Row>) -> Positions {
    rows.into_iter().map(|(t, l, e, b)| (t, MessageId::new(l, e, b))).collect()
}

pub async fn lock(conn: &mut PgConnection, subscription: &str, topics: &[String]) -> sqlx::Result<Positions> {
    let rows: Vec<Row> = sqlx::query_as(LOCK).bind(subscription).bind(topics).fetch_all(&mut *conn).await?;
    Ok(positions(rows))
}

pub async fn save(conn: &mut PgConnection, subscription: &str, positions: &Positions) -> sqlx::Result<()> {
    update(conn, SAVE, subscription, positions).await
}

/// Sets each position back to the given one where it is further on; positions already behind it stay.
pub async fn move_back(conn: &mut PgConnection, subscription: &str, positions: &Positions) -> sqlx::Result<()> {
    update(conn, MOVE_BACK, subscription, positions).await
}

pub async fn read(conn: &mut PgConnection, subscription: &str, topics: &[String]) -> sqlx::Result<Positions> {
    let rows: Vec<Row> = sqlx::query_as(READ).bind(subscription).bind(topics).fetch_all(&mut *conn).await?;
    Ok(positions(rows))
}

async fn update(conn: &mut PgConnection, sql: &str, subscription: &str, positions: &Positions) -> sqlx::Result<()> {
    if positions.is_empty() {
        return Ok(());
    }
    let mut topics = Vec::new();
    let (mut ledgers, mut entries, mut indexes) = (Vec::new(), Vec::new(), Vec::new());
    for (topic, id) in positions {
        topics.push(topic.as_str());
        ledgers.push(id.ledger);
        entries.push(id.entry);
        indexes.push(id.batch_index);
    }
    sqlx::query(sql)
        .bind(subscription)
        .bind(&topics)
        .bind(&ledgers)
        .bind(&entries)
        .bind(&indexes)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
