//! The one way rows of our own tables are inserted: each column bound as an array to an `unnest(…)` insert.

use sqlx::PgConnection;
use sqlx::postgres::{PgArguments, Postgres};
use sqlx::query::Query;

/// A statement with some columns bound.
pub(super) type Bound = Query<'static, Postgres, PgArguments>;

/// Inserts rows with `statement`, its columns bound by `bind` (see [`bind_columns`]). Returns the rows inserted
/// (none for an empty slice, without a round trip).
pub(super) async fn insert<R>(
    conn: &mut PgConnection,
    statement: &'static str,
    rows: &[R],
    bind: impl FnOnce(Bound) -> Bound,
) -> sqlx::Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    Ok(bind(sqlx::query(statement)).execute(&mut *conn).await?.rows_affected())
}

/// One column of rows, for binding as an array.
pub(super) fn column<R, T>(rows: &[R], f: impl Fn(&R) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}

/// Binds the named fields of `$rows`, in order, each as one array column: `bind_columns!(query, rows => a b c)`.
macro_rules! bind_columns {
    ($query:expr, $rows:expr => $($field:ident)+) => {
        $query$(.bind($crate::store::unnest::column($rows, |r| Clone::clone(&r.$field))))+
    };
}
pub(super) use bind_columns;
