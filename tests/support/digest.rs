//! Ordered digests of Lookout's tables, computed in SQL: per table, the row count and the md5 of every row's text
//! (`row::text`, all columns) in primary-key order. Two databases hold the same rows exactly when their digests are
//! equal.
#![allow(dead_code)]

use sqlx::PgPool;

/// Lookout's tables the ingester writes, with their primary key.
pub const TABLES: [(&str, &str); 4] =
    [("job", "job_id"), ("job_run", "run_id"), ("job_spec", "job_id"), ("job_error", "job_id")];

/// One table's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDigest {
    pub table: &'static str,
    pub rows: i64,
    pub md5: String,
}

/// The digests of [`TABLES`], in that order.
pub async fn digests(pool: &PgPool) -> Vec<TableDigest> {
    let mut out = Vec::new();
    for (table, key) in TABLES {
        let sql = format!(
            "SELECT count(*), md5(coalesce(string_agg(md5(t::text), ',' ORDER BY t.{key}), '')) FROM {table} t"
        );
        let (rows, md5): (i64, String) =
            sqlx::query_as(&sql).fetch_one(pool).await.unwrap_or_else(|e| panic!("digest of {table}: {e}"));
        out.push(TableDigest { table, rows, md5 });
    }
    out
}

/// Fails naming the tables that differ.
pub fn assert_same_digests(got: &[TableDigest], want: &[TableDigest], what: &str) {
    let differ: Vec<String> = got
        .iter()
        .zip(want)
        .filter(|(g, w)| g != w)
        .map(|(g, w)| format!("{}: {} rows {} / want {} rows {}", g.table, g.rows, g.md5, w.rows, w.md5))
        .collect();
    assert!(differ.is_empty(), "{what}: tables differ:\n  {}", differ.join("\n  "));
}
