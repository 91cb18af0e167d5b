//! The PostgreSQL store (`STORAGE_BACKEND=postgres`, `DATABASE_URL`), for production and for
//! sharing data with other tools.
//!
//! Schema (created and migrated at start-up, under an advisory lock so that several servers
//! starting together migrate once):
//!
//! ```sql
//! topgun_schema  (version integer)          -- one row: the applied migration
//! topgun_entries (kind smallint,             -- 0 = LWW, 1 = OR-Map
//!                 map_name bytea, key bytea, -- UTF-8; bytea because keys may hold NUL
//!                 partition_id integer,      -- fnv1a(key) % 271
//!                 entry bytea,               -- StoredEntry::encode (docs/durability.md)
//!                 PRIMARY KEY (kind, map_name, key))
//! ```
//!
//! Writes are one transaction per batch: one `INSERT … SELECT FROM UNNEST(…) ON CONFLICT DO
//! UPDATE` for the keys' new states and one `DELETE … UNNEST` for keys gone; loads are
//! keyset-paged scans in primary-key order.

use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Executor, Row};
use topgun_core::hash::partition_id;

use crate::storage::store::{
    EncodedEntry, Loaded, MapKind, Store, StoreError, StoredEntry, Unreadable,
};

/// Rows per page of a load.
const PAGE_ROWS: i64 = 10_000;
/// Connections in the pool.
const POOL_MAX: u32 = 8;
/// An arbitrary constant naming this schema's migration lock.
const MIGRATION_LOCK: i64 = 0x746f_7067_756e;

/// Migrations in order; `topgun_schema.version` is the number applied.
const MIGRATIONS: [&str; 1] = ["CREATE TABLE topgun_entries (
        kind smallint NOT NULL,
        map_name bytea NOT NULL,
        key bytea NOT NULL,
        partition_id integer NOT NULL,
        entry bytea NOT NULL,
        PRIMARY KEY (kind, map_name, key)
    )"];

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("PostgreSQL: {e}"))
}

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

fn kind_code(kind: MapKind) -> i16 {
    match kind {
        MapKind::Lww => 0,
        MapKind::Or => 1,
    }
}

/// The primary-key columns of entries, for `UNNEST`.
fn key_columns<'a>(entries: &[&'a EncodedEntry]) -> (Vec<i16>, Vec<&'a [u8]>, Vec<&'a [u8]>) {
    let kinds = entries.iter().map(|e| kind_code(e.kind)).collect();
    let maps = entries.iter().map(|e| e.map.as_bytes()).collect();
    let keys = entries.iter().map(|e| e.key.as_bytes()).collect();
    (kinds, maps, keys)
}

impl PgStore {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_MAX)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(unavailable)?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.execute("CREATE TABLE IF NOT EXISTS topgun_schema (version integer NOT NULL)")
            .await
            .map_err(unavailable)?;
        let version: Option<i32> = sqlx::query("SELECT version FROM topgun_schema")
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
            .map(|row| row.get(0));
        let applied = usize::try_from(version.unwrap_or(0)).unwrap_or(0);
        for sql in MIGRATIONS.iter().skip(applied) {
            tx.execute(*sql).await.map_err(unavailable)?;
        }
        let latest = i32::try_from(MIGRATIONS.len()).expect("few migrations");
        if version.is_none() {
            sqlx::query("INSERT INTO topgun_schema (version) VALUES ($1)")
                .bind(latest)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        } else if applied < MIGRATIONS.len() {
            sqlx::query("UPDATE topgun_schema SET version = $1")
                .bind(latest)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn load_pages(&self, partitions: Vec<u32>) -> Result<Loaded, StoreError> {
        let partitions: Vec<i32> = partitions
            .into_iter()
            .filter_map(|p| i32::try_from(p).ok())
            .collect();
        let mut out = Loaded::default();
        let mut after: (i16, Vec<u8>, Vec<u8>) = (-1, Vec::new(), Vec::new());
        loop {
            let rows = sqlx::query(
                "SELECT kind, map_name, key, entry FROM topgun_entries \
                 WHERE partition_id = ANY($1) AND (kind, map_name, key) > ($2, $3, $4) \
                 ORDER BY kind, map_name, key LIMIT $5",
            )
            .bind(&partitions)
            .bind(after.0)
            .bind(&after.1)
            .bind(&after.2)
            .bind(PAGE_ROWS)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
            let full = rows.len() == usize::try_from(PAGE_ROWS).unwrap_or(usize::MAX);
            for row in &rows {
                match StoredEntry::decode(row.get::<&[u8], _>(3)) {
                    Ok(entry) => out.entries.push(entry),
                    Err(e) => out.unreadable.push(unreadable(row, &e)),
                }
            }
            match rows.last() {
                Some(last) if full => after = (last.get(0), last.get(1), last.get(2)),
                _ => return Ok(out),
            }
        }
    }

    async fn upsert(&self, entries: &[EncodedEntry]) -> Result<(), StoreError> {
        // One statement may not update a row twice: keep each key's last state.
        let mut latest: Vec<&EncodedEntry> = Vec::with_capacity(entries.len());
        let mut seen = std::collections::HashMap::with_capacity(entries.len());
        for entry in entries {
            let slot = (entry.kind, entry.map.as_str(), entry.key.as_str());
            if let Some(&at) = seen.get(&slot) {
                latest[at] = entry;
            } else {
                seen.insert(slot, latest.len());
                latest.push(entry);
            }
        }
        if latest.is_empty() {
            return Ok(());
        }
        let (gone, live): (Vec<&EncodedEntry>, Vec<&EncodedEntry>) =
            latest.into_iter().partition(|e| e.gone);
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        if !live.is_empty() {
            let (kinds, maps, keys) = key_columns(&live);
            let partitions: Vec<i32> = live
                .iter()
                .map(|e| i32::try_from(partition_id(&e.key)).expect("partitions are below 271"))
                .collect();
            let bodies: Vec<&[u8]> = live.iter().map(|e| e.bytes.as_slice()).collect();
            sqlx::query(
                "INSERT INTO topgun_entries (kind, map_name, key, partition_id, entry) \
                 SELECT * FROM UNNEST($1::smallint[], $2::bytea[], $3::bytea[], \
                 $4::integer[], $5::bytea[]) \
                 ON CONFLICT (kind, map_name, key) DO UPDATE SET entry = EXCLUDED.entry",
            )
            .bind(&kinds)
            .bind(&maps)
            .bind(&keys)
            .bind(&partitions)
            .bind(&bodies)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        if !gone.is_empty() {
            let (kinds, maps, keys) = key_columns(&gone);
            sqlx::query(
                "DELETE FROM topgun_entries WHERE (kind, map_name, key) IN \
                 (SELECT * FROM UNNEST($1::smallint[], $2::bytea[], $3::bytea[]))",
            )
            .bind(&kinds)
            .bind(&maps)
            .bind(&keys)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }
}

/// A row whose entry could not be read, named (and made deletable) by its primary key.
fn unreadable(row: &sqlx::postgres::PgRow, error: &StoreError) -> Unreadable {
    let kind = match row.get::<i16, _>(0) {
        0 => Some(MapKind::Lww),
        1 => Some(MapKind::Or),
        _ => None,
    };
    let text = |i| String::from_utf8(row.get::<Vec<u8>, _>(i)).ok();
    let (map, key) = (text(1), text(2));
    Unreadable {
        row: format!("topgun_entries row kind {kind:?} map {map:?} key {key:?}"),
        reason: error.to_string(),
        delete: match (kind, map, key) {
            (Some(kind), Some(map), Some(key)) => Some(EncodedEntry::deletion(kind, map, key)),
            _ => None,
        },
    }
}

impl Store for PgStore {
    fn load_checked(&self, partitions: &[u32]) -> BoxFuture<'_, Result<Loaded, StoreError>> {
        self.load_pages(partitions.to_vec()).boxed()
    }

    fn write(&self, entries: Vec<StoredEntry>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.write_encoded(entries.iter().map(EncodedEntry::from).collect())
    }

    fn write_encoded(&self, entries: Arc<[EncodedEntry]>) -> BoxFuture<'_, Result<(), StoreError>> {
        async move { self.upsert(&entries).await }.boxed()
    }
}
