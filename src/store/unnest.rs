//! The one way rows of our own tables are inserted: each column bound as an array to an `unnest(…)` insert, the
//! stream position first (`$1`–`$4`: source, ledger, entry, batch index).

use sqlx::PgConnection;
use sqlx::postgres::{PgArguments, Postgres};
use sqlx::query::Query;

/// A statement with some columns bound.
pub(super) type Bound = Query<'static, Postgres, PgArguments>;

/// Where a row's message is in the stream: (source, ledger id, entry id, batch index).
pub(super) type At<'a> = (&'a str, i64, i64, i32);

/// Inserts `rows` with `statement`: binds their positions as `$1`–`$4`, then the other columns with `bind`. Returns
/// the rows inserted (none for an empty slice, without a round trip).
pub(super) async fn insert<R>(
    conn: &mut PgConnection,
    statement: &'static str,
    rows: &[R],
    at: impl Fn(&R) -> At<'_>,
    bind: impl FnOnce(Bound) -> Bound,
) -> sqlx::Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let query = sqlx::query(statement)
        .bind(column(rows, |r| at(r).0.to_string()))
        .bind(column(rows, |r| at(r).1))
        .bind(column(rows, |r| at(r).2))
        .bind(column(rows, |r| at(r).3));
    Ok(bind(query).execute(&mut *conn).await?.rows_affected())
}

/// One column of rows, for binding as an array.
pub(super) fn column<R, T>(rows: &[R], f: impl Fn(&R) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}
