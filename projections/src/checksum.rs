//! A checksum of every read-model table, to tell whether two read-model databases (or
//! schemas) hold the same rows: the live one and a rebuild from the log, say.
//!
//! What is guaranteed:
//!
//! - Every base table of the schema is covered except the projector's own bookkeeping
//!   ([`NOT_READ_MODELS`]): a read-model table added later is checked without anyone
//!   remembering to list it.
//! - A table's digest depends only on its multiset of rows, not on physical order, column
//!   order, or session settings (time zone, date style): rows are rendered with the
//!   columns sorted by name, in UTC, and the per-row hashes are summed, so two rebuilds
//!   that inserted the same rows in different orders agree, and a row present twice
//!   differs from a row present once.
//! - All tables are read in one repeatable-read snapshot.
//!
//! No read-model column is left out today: every time in the read models is an event's
//! `occurred_at`, never the wall clock of the projector, so two projections of the same
//! log are equal column for column. A column that legitimately differs between two runs
//! (an `applied_at`, say) belongs in [`IGNORED_COLUMNS`].

use std::fmt;

use sqlx::PgPool;

/// Tables of a read-model schema that are not read models: migrations, per-aggregate
/// checkpoints (their projection name may differ between a live and a rebuilt copy), and
/// dead letters (arrival times and ids).
pub const NOT_READ_MODELS: &[&str] =
    &["_sqlx_migrations", "projection_checkpoints", "dead_letters"];

/// `(table, column)` pairs left out of the digest because they may differ between two
/// projections of the same log. None today; see the module documentation.
pub const IGNORED_COLUMNS: &[(&str, &str)] = &[];

#[derive(Debug, thiserror::Error)]
pub enum ChecksumError {
    #[error("read-model checksum: {0}")]
    Database(#[from] sqlx::Error),
    #[error("read-model checksum: schema `{0}` has no tables")]
    EmptySchema(String),
    #[error("read-model checksum: digest `{0}` is not a number")]
    Digest(String),
}

/// One table's row count and digest (32 hex digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableChecksum {
    pub table: String,
    pub rows: i64,
    pub digest: String,
}

/// Every read-model table of a schema, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadModelChecksum {
    pub tables: Vec<TableChecksum>,
}

impl ReadModelChecksum {
    /// The tables whose rows differ from `other`'s, or that only one side has, each with
    /// both row counts (`-` when missing): empty when the two are equal.
    pub fn differences(&self, other: &ReadModelChecksum) -> Vec<String> {
        let mut names: Vec<&str> = self
            .tables
            .iter()
            .chain(&other.tables)
            .map(|t| t.table.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        let find = |side: &ReadModelChecksum, name: &str| {
            side.tables.iter().find(|t| t.table == name).cloned()
        };
        let rows =
            |t: &Option<TableChecksum>| t.as_ref().map_or("-".to_owned(), |t| t.rows.to_string());
        names
            .into_iter()
            .filter_map(|name| {
                let (mine, theirs) = (find(self, name), find(other, name));
                (mine != theirs)
                    .then(|| format!("{name} ({} rows vs {})", rows(&mine), rows(&theirs)))
            })
            .collect()
    }
}

impl fmt::Display for ReadModelChecksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.tables.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{}: {} rows {}", t.table, t.rows, t.digest)?;
        }
        Ok(())
    }
}

/// The checksum of the read models in `pool`'s current schema (normally `public`).
pub async fn checksum(pool: &PgPool) -> Result<ReadModelChecksum, ChecksumError> {
    checksum_schema(pool, None).await
}

/// The checksum of the read models in `schema` (the current schema when `None`), e.g. a
/// blue or green copy living beside the other in one database.
pub async fn checksum_schema(
    pool: &PgPool,
    schema: Option<&str>,
) -> Result<ReadModelChecksum, ChecksumError> {
    let mut tx = pool.begin().await?;
    // One snapshot for every table; rendering independent of the session's settings.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL TimeZone = 'UTC'")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL DateStyle = 'ISO, YMD'")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL IntervalStyle = 'iso_8601'")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL extra_float_digits = 3")
        .execute(&mut *tx)
        .await?;
    let schema: String = match schema {
        Some(schema) => schema.to_owned(),
        None => {
            sqlx::query_scalar("SELECT current_schema()")
                .fetch_one(&mut *tx)
                .await?
        }
    };
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = $1 AND table_type = 'BASE TABLE' AND table_name::text <> ALL($2) \
         ORDER BY table_name",
    )
    .bind(&schema)
    .bind(NOT_READ_MODELS)
    .fetch_all(&mut *tx)
    .await?;
    if tables.is_empty() {
        return Err(ChecksumError::EmptySchema(schema));
    }
    let mut out = Vec::with_capacity(tables.len());
    for table in tables {
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2 ORDER BY column_name",
        )
        .bind(&schema)
        .bind(&table)
        .fetch_all(&mut *tx)
        .await?;
        let columns: Vec<String> = columns
            .into_iter()
            .filter(|c| !IGNORED_COLUMNS.contains(&(table.as_str(), c.as_str())))
            .map(|c| quote(&c))
            .collect();
        // Names come from the catalog, quoted; nothing here is input. Each row's md5 is
        // split into two 64-bit lanes, each summed modulo 2^64: order-independent, and a
        // repeated row counts twice.
        let sql = format!(
            "WITH h AS (SELECT md5(ROW({columns})::text) AS m FROM {schema}.{table}) \
             SELECT count(*)::bigint, \
                    (mod(mod(coalesce(sum(('x' || substr(m, 1, 16))::bit(64)::bigint::numeric), 0), 18446744073709551616) \
                         + 18446744073709551616, 18446744073709551616))::text, \
                    (mod(mod(coalesce(sum(('x' || substr(m, 17, 16))::bit(64)::bigint::numeric), 0), 18446744073709551616) \
                         + 18446744073709551616, 18446744073709551616))::text \
             FROM h",
            columns = columns.join(", "),
            schema = quote(&schema),
            table = quote(&table),
        );
        let (rows, high, low): (i64, String, String) =
            sqlx::query_as(&sql).fetch_one(&mut *tx).await?;
        let lane = |s: &str| {
            s.parse::<u128>()
                .ok()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| ChecksumError::Digest(s.to_owned()))
        };
        out.push(TableChecksum {
            digest: format!("{:016x}{:016x}", lane(&high)?, lane(&low)?),
            table,
            rows,
        });
    }
    tx.rollback().await?;
    Ok(ReadModelChecksum { tables: out })
}

/// A Postgres identifier, quoted.
fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, rows: i64, digest: &str) -> TableChecksum {
        TableChecksum {
            table: name.to_owned(),
            rows,
            digest: digest.to_owned(),
        }
    }

    #[test]
    fn differences_name_changed_and_missing_tables() {
        let live = ReadModelChecksum {
            tables: vec![table("orders", 2, "a"), table("users", 1, "b")],
        };
        let rebuilt = ReadModelChecksum {
            tables: vec![
                table("order_items", 3, "c"),
                table("orders", 2, "a"),
                table("users", 1, "x"),
            ],
        };
        assert!(live.differences(&live).is_empty());
        assert_eq!(
            live.differences(&rebuilt),
            ["order_items (- rows vs 3)", "users (1 rows vs 1)"]
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote("users"), "\"users\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }
}
