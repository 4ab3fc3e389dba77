//! A fresh, migrated database per test.
#![allow(dead_code)]

use sqlx::{Connection, Executor, PgConnection, PgPool};

pub struct Db {
    pub pool: PgPool,
    pub url: String,
}

/// Creates a database from the template named by `LI_TEST_TEMPLATE` on the server of `DATABASE_URL`.
pub async fn migrated() -> Db {
    let admin = std::env::var("DATABASE_URL").expect("DATABASE_URL must point at a Postgres superuser connection");
    let template = std::env::var("LI_TEST_TEMPLATE").unwrap_or_else(|_| "scratch".into());
    let name = format!("li_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin).await.expect("connect admin");
    conn.execute(format!("CREATE DATABASE {name} TEMPLATE {template}").as_str()).await.expect("create db");
    let base = admin.rsplit_once('/').unwrap().0;
    let url = format!("{base}/{name}");
    let pool = PgPool::connect(&url).await.expect("connect test db");
    Db { pool, url }
}
