//! A batch of rows as one JSON array parameter, read back as a table in SQL.
//!
//! A statement with a `$n` list per row changes its text with the batch size: each size
//! is parsed and planned again and takes its own entry in every connection's statement
//! cache. One JSON parameter gives each statement one text whatever the batch size, and
//! one value to bind instead of one per column per row. Postgres' write-backs bind
//! theirs as a record array instead ([`super::pg_records`]), cheaper to parse.

use sqlx::AnyConnection;

use super::{pg_records, Backend, WriteConflict};

/// The backend of a connection of the `Any` pool.
pub fn backend_of(conn: &AnyConnection) -> Backend {
    if conn.backend_name().eq_ignore_ascii_case("sqlite") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    }
}

/// A table source named `v` over the JSON array of objects bound as `$1`, with the columns
/// of `table` that the objects name. Postgres types each field by the table's own column
/// type; SQLite takes the JSON value as it is (its columns are loosely typed).
pub fn source(backend: Backend, table: &str, columns: &[&str]) -> String {
    source_at(backend, table, columns, 1)
}

/// [`source`] over the parameter `$param`.
fn source_at(backend: Backend, table: &str, columns: &[&str], param: usize) -> String {
    match backend {
        Backend::Postgres => {
            format!("json_populate_recordset(NULL::{table}, ${param}::json) AS v")
        }
        Backend::Sqlite => {
            let fields: Vec<String> = columns
                .iter()
                .map(|c| format!("value ->> '{c}' AS {c}"))
                .collect();
            // Each object materialised once as text: read straight from `json_each`, its
            // `value` was rendered anew for every `->>`, once per column (a quarter of the
            // CPU of a webhook on SQLite); SQLite keeps the parse of the text for the
            // `->>`s that follow.
            format!(
                "(WITH r AS MATERIALIZED (SELECT value FROM json_each(${param})) \
                 SELECT {} FROM r) AS v",
                fields.join(", ")
            )
        }
    }
}

/// `v.a, v.b, …`
pub fn prefixed(prefix: &str, columns: &[&str]) -> String {
    let cols: Vec<String> = columns.iter().map(|c| format!("{prefix}.{c}")).collect();
    cols.join(", ")
}

/// Serialises rows for [`source`]. Only strings, integers and finite floats go in, which
/// `serde_json` cannot fail on.
pub fn encode<T: serde::Serialize>(rows: &[T]) -> String {
    serde_json::to_string(rows).expect("rows of strings and numbers serialise")
}

/// A row naming only a phone: what reads by phone send.
#[derive(serde::Serialize)]
pub struct PhoneKey<'a> {
    pub phone: &'a str,
}

pub fn phone_keys<'a>(phones: &[&'a str]) -> Vec<PhoneKey<'a>> {
    phones.iter().map(|phone| PhoneKey { phone }).collect()
}

/// One SQL text per backend, built on first use.
pub struct Statement {
    build: fn(Backend) -> String,
    /// Planned for each execution rather than cached (one more round trip on Postgres).
    replanned: bool,
    postgres: std::sync::OnceLock<String>,
    sqlite: std::sync::OnceLock<String>,
}

impl Statement {
    pub const fn new(build: fn(Backend) -> String) -> Self {
        Self::with_planning(build, false)
    }

    /// A statement planned at every execution, for the tables as they are: an `UPDATE`
    /// joined to the parameter, whose plan cached while the table was small read the
    /// whole table through its primary key on every run (measured in the soak: 126M index
    /// entries read for 30k runs, and Postgres' CPU rising minute by minute).
    pub const fn replanned(build: fn(Backend) -> String) -> Self {
        Self::with_planning(build, true)
    }

    const fn with_planning(build: fn(Backend) -> String, replanned: bool) -> Self {
        Self {
            build,
            replanned,
            postgres: std::sync::OnceLock::new(),
            sqlite: std::sync::OnceLock::new(),
        }
    }

    /// The statement, bound to nothing yet: the one way to run it, so that a replanned
    /// statement is never cached by accident.
    pub fn query(
        &self,
        backend: Backend,
    ) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
        sqlx::query(self.sql(backend)).persistent(!self.replanned)
    }

    /// The statement over `rows`, bound as its `$1` (see [`source`]); any further
    /// parameters are bound after it.
    pub fn over<T: serde::Serialize>(
        &self,
        conn: &AnyConnection,
        rows: &[T],
    ) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
        self.query(backend_of(conn)).bind(encode(rows))
    }

    fn sql(&self, backend: Backend) -> &str {
        let cell = match backend {
            Backend::Postgres => &self.postgres,
            Backend::Sqlite => &self.sqlite,
        };
        cell.get_or_init(|| (self.build)(backend))
    }
}

/// The write-back of a batch's rows into `table` (keyed by `key`, whose rows carry a
/// `version`), in one statement and so in one lock order: a row that is absent is
/// inserted; a row that is present is updated only if its version is one less than the
/// version the write gives it, that is, if nobody wrote it since it was read. Rows read
/// as absent are written with version 0, which no stored row can be one less than.
///
/// A row read as present but deleted since (by a retention purge, perhaps another
/// replica's) would be inserted again, bringing back what was purged. On Postgres the
/// statement returns which rows it wrote as they were read ([`RETURNING_AS_READ`]) and
/// [`checked`] counts those; on SQLite, one process whose purge drops the rows it kept,
/// that window is one batch's read and write.
pub struct WriteBack<'a> {
    pub table: &'a str,
    pub key: &'a [&'a str],
    /// Columns an update leaves as they are.
    pub keep: &'a [&'a str],
    /// Columns a row may leave out, and the value it then means (the row is smaller to
    /// send and to parse).
    pub defaults: &'a [(&'a str, &'a str)],
    pub columns: &'a [&'a str],
}

impl WriteBack<'_> {
    /// SQLite: the upsert of the rows bound as `$param`.
    pub fn sqlite(&self, param: usize) -> String {
        let source = source_at(Backend::Sqlite, self.table, self.columns, param);
        format!("{} {}", self.insert_from(&source), self.on_conflict())
    }

    /// Postgres: the write-back of the rows bound as `$param` (a record array,
    /// [`pg_records`]: a third of JSON's parse) as a common table expression `name`
    /// returning `as_read` per row written.
    ///
    /// Rows all read as absent (`all_new`) go in by a plain `INSERT`: `ON CONFLICT` first
    /// searches the key's index for a conflict and then descends it again to insert.
    /// Statuses come in waves (every message's `sent`, then every `delivered`…), so a
    /// batch's rows are mostly all new or all present. A row created since the read fails
    /// that insert on the key ([`super::duplicate_is_a_lost_race`]). Either way a batch
    /// writes its rows in key order, the order in which a batch run again locks them.
    fn postgres(&self, name: &str, param: usize, all_new: bool) -> String {
        let source = format!("unnest(${param}::text::{}[]) AS v", self.table);
        let insert = self.insert_from(&source);
        if all_new {
            format!("{name} AS ({insert} RETURNING true AS as_read)")
        } else {
            format!(
                "{name} AS ({insert} {} {RETURNING_AS_READ})",
                self.on_conflict()
            )
        }
    }

    /// `WHERE true`: SQLite would take `ON CONFLICT` after a bare `FROM` for a join's.
    fn insert_from(&self, source: &str) -> String {
        let values: Vec<String> = self.columns.iter().map(|c| self.value(c)).collect();
        format!(
            "INSERT INTO {} ({}) SELECT {} FROM {source} WHERE true",
            self.table,
            self.columns.join(", "),
            values.join(", "),
        )
    }

    /// Column `c` of the row `v`: a row leaves out a column that holds its default.
    fn value(&self, c: &str) -> String {
        match self.defaults.iter().find(|(d, _)| *d == c) {
            Some((_, value)) => format!("COALESCE(v.{c}, {value})"),
            None => format!("v.{c}"),
        }
    }

    /// A present row is updated only if nobody wrote it since it was read.
    fn on_conflict(&self) -> String {
        let set: Vec<String> = self
            .columns
            .iter()
            .filter(|c| !self.key.contains(c) && !self.keep.contains(c))
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        format!(
            "ON CONFLICT ({}) DO UPDATE SET {} WHERE {}.version = excluded.version - 1",
            self.key.join(", "),
            set.join(", "),
            self.table
        )
    }
}

/// Postgres: each row a [`WriteBack`]'s upsert wrote, `as_read` unless the write inserted
/// a row that was read as present (a version above 0), that is, one deleted since it was
/// read. `xmax` is 0 only in a row version that an insert made; an update through
/// `ON CONFLICT` leaves its own transaction's id there.
const RETURNING_AS_READ: &str = "RETURNING NOT (xmax = 0 AND version > 0) AS as_read";

/// Raises what [`super::is_retryable`] takes for a lost race. Created at start
/// ([`super::Db::migrate`]); plpgsql because SQL alone cannot raise an error.
pub(super) const CREATE_CONFLICT_FUNCTION: &str =
    "CREATE OR REPLACE FUNCTION messaging_exporter_write_conflict(tbl text) RETURNS bigint \
     LANGUAGE plpgsql AS $$ BEGIN \
     RAISE EXCEPTION 'a row of % changed since it was read', tbl \
     USING ERRCODE = 'serialization_failure'; END $$";

/// Postgres: [`WriteBack`]s, each given with the `$n` of its rows, the `$n` of the number
/// of rows it is given, and whether they were all read as absent, as one statement that
/// raises a lost race unless each wrote all its rows as they were read; nothing of it
/// then stands.
pub fn checked(writes: &[(&WriteBack, usize, usize, bool)]) -> String {
    let (ctes, conflicts): (Vec<String>, Vec<String>) = writes
        .iter()
        .enumerate()
        .map(|(i, (write, rows, count, all_new))| {
            let cte = write.postgres(&format!("w{i}"), *rows, *all_new);
            let conflict = format!(
                "WHEN (SELECT count(*) FROM w{i} WHERE as_read) <> ${count} \
                 THEN messaging_exporter_write_conflict('{}')",
                write.table
            );
            (cte, conflict)
        })
        .unzip();
    format!(
        "WITH {} SELECT CASE {} ELSE 0 END",
        ctes.join(", "),
        conflicts.join(" ")
    )
}

/// The statement [`write_back`] runs for one [`WriteBack`] over `$1`: on Postgres
/// [`checked`], its row count bound as `$2`.
pub fn single(backend: Backend, write_back: &WriteBack) -> String {
    match backend {
        Backend::Postgres => checked(&[(write_back, 1, 2, false)]),
        Backend::Sqlite => write_back.sqlite(1),
    }
}

/// The version a [`WriteBack`] gives a row read at `read`: one more, or 0 for a row that
/// was absent.
pub fn written_version(read: Option<i64>) -> i64 {
    read.map_or(0, |v| v + 1)
}

/// Runs a [`single`] write-back statement over `rows`. A row not written as it was read
/// means another transaction wrote (or deleted) it after it was read, so nothing of
/// this one may stand: a lost race ([`WriteConflict`] on SQLite, raised by the
/// statement on Postgres), and the caller runs the batch again.
pub async fn write_back<T: serde::Serialize>(
    conn: &mut AnyConnection,
    table: &'static str,
    statement: &Statement,
    rows: &[T],
    columns: &[&str],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    match backend_of(conn) {
        Backend::Postgres => {
            statement
                .query(Backend::Postgres)
                .bind(pg_records::encode(rows, columns))
                .bind(rows.len() as i64)
                .execute(&mut *conn)
                .await?;
        }
        Backend::Sqlite => {
            let done = statement.over(conn, rows).execute(&mut *conn).await?;
            if done.rows_affected() != rows.len() as u64 {
                return Err(WriteConflict::error(table));
            }
        }
    }
    Ok(())
}

/// The field names `row` serialises with, sorted: what a table source reads of it.
#[cfg(test)]
pub fn field_names<T: serde::Serialize>(row: &T) -> Vec<String> {
    let json = serde_json::to_value(row).expect("a row serialises");
    let mut names: Vec<String> = json
        .as_object()
        .expect("a row is an object")
        .keys()
        .cloned()
        .collect();
    names.sort_unstable();
    names
}

/// `columns`, owned and sorted, to compare with [`field_names`].
#[cfg(test)]
pub fn sorted(columns: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
    names.sort_unstable();
    names
}
