//! The schema in the database: its name, its tables and indexes, and the
//! versioned migrations that create them (FORMAT.md, "PostgreSQL schema").

use std::path::PathBuf;

use postgres::GenericClient;

use super::backend::failed;
use crate::error::{Error, Result};

/// The schema version this build writes and reads.
pub(crate) const SCHEMA_VERSION: i32 = 2;

/// What `tasks.owner_key` holds before a task's owner: the owner of a
/// task whose JSON the server reads is `=` and the owner, never
/// [`OWNER_UNREAD`].
pub(crate) const OWNER_KEY: &str = "=";

/// `tasks.owner_key` of a row whose task the server could not read as
/// JSON (not JSON, or holding a `\u0000` its JSON functions refuse): a
/// listing by owner reads it whatever the owner, and decodes it to tell.
pub(crate) const OWNER_UNREAD: &str = "?";

/// The longest schema name accepted, so that the notification channel
/// (`taskstore:<schema>`) stays within PostgreSQL's 63-byte identifiers.
pub(crate) const MAX_SCHEMA_LEN: usize = 48;

/// The first key of the advisory lock that serializes migrations (the
/// bytes of "task"); the second is the schema's `hashtext`.
const MIGRATION_LOCK: i32 = 0x7461_736b;

/// The schema as an SQL identifier: quoted, so that a name that is also a
/// keyword (`user`, `order`) names it. A checked name holds no `"`.
pub(crate) fn ident(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// A checked schema name: `[a-z_][a-z0-9_]*`, at most 48 bytes, so it can
/// never inject SQL (it is quoted all the same: see [`ident`]).
pub(crate) fn check_name(schema: &str) -> Result<()> {
    let invalid = |reason: &str| Error::InvalidConfig {
        field: "schema",
        reason: format!("{schema:?} {reason}"),
    };
    let mut chars = schema.chars();
    match chars.next() {
        None => return Err(invalid("is empty")),
        Some(c) if !(c.is_ascii_lowercase() || c == '_') => {
            return Err(invalid("must start with a lowercase letter or `_`"));
        }
        Some(_) => {}
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(invalid("may hold only lowercase letters, digits and `_`"));
    }
    if schema.len() > MAX_SCHEMA_LEN {
        return Err(invalid(&format!("is longer than {MAX_SCHEMA_LEN} bytes")));
    }
    if schema.starts_with("pg_") {
        return Err(invalid("is reserved by PostgreSQL (`pg_`)"));
    }
    Ok(())
}

/// The migration that brings a schema from version `n - 1` to `n`, for
/// `n` = 1.. (index 0 makes version 1). Version 2 adds `owner_key`, the
/// task's owner as the server reads it from the task's JSON
/// (FORMAT.md, "PostgreSQL schema"), and its index.
fn migrations(schema: &str) -> [String; 2] {
    let s = ident(schema);
    [
        format!(
            r#"
CREATE TABLE {s}.tasks (
    id            text COLLATE "C" PRIMARY KEY,
    created_at_ns bigint  NOT NULL,
    revision      bigint  NOT NULL,
    status        text    NOT NULL,
    active        boolean NOT NULL,
    expires_at_ns bigint,
    task          text    NOT NULL,
    CHECK (active = (status IN ('working', 'input_required')))
);
CREATE INDEX tasks_active_order ON {s}.tasks (created_at_ns, id) WHERE active;
CREATE INDEX tasks_order ON {s}.tasks (created_at_ns, id);
CREATE INDEX tasks_expiry ON {s}.tasks (expires_at_ns) WHERE expires_at_ns IS NOT NULL;
CREATE TABLE {s}.counters (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    active    bigint  NOT NULL CHECK (active >= 0)
);
INSERT INTO {s}.counters (active) SELECT count(*) FROM {s}.tasks WHERE active;
"#
        ),
        // Computed by the server from the task, for every writer's row: a
        // build of version 1 still open writes on without naming it. The
        // function never fails a write: a text its JSON functions refuse
        // is `OWNER_UNREAD`.
        format!(
            r#"
CREATE FUNCTION {s}.owner_key(task text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog
AS $owner_key$
BEGIN
    RETURN '{OWNER_KEY}' || (task::json ->> 'owner');
EXCEPTION WHEN OTHERS THEN
    RETURN '{OWNER_UNREAD}';
END
$owner_key$;
ALTER TABLE {s}.tasks ADD COLUMN owner_key text COLLATE "C"
    GENERATED ALWAYS AS ({s}.owner_key(task)) STORED;
CREATE INDEX tasks_owner_order ON {s}.tasks (owner_key, created_at_ns, id)
    WHERE owner_key IS NOT NULL;
"#
        ),
    ]
}

/// Creates the schema (if `create`) or migrates it to [`SCHEMA_VERSION`]
/// (if `upgrade`: else an older one is refused, and left as it is);
/// refuses a newer one. Opens that find the schema current take no lock and
/// run no DDL; the others serialize on an advisory lock, in one transaction
/// each. `server` says where (`Pool::server`), for the errors that find
/// no store there, one of another version, or another tool's tables.
pub(crate) fn prepare(
    client: &mut postgres::Client,
    schema: &str,
    server: &str,
    create: bool,
    upgrade: bool,
) -> Result<()> {
    let op = |what: &str| format!("{what} schema {schema}");
    let db = |what: &'static str| move |e| failed(op(what), e);
    match read_version(client, schema, server)? {
        Some(SCHEMA_VERSION) => return Ok(()),
        Some(found) if found > SCHEMA_VERSION => return Err(newer(schema, server, found)),
        Some(found) if !upgrade => return Err(older(schema, server, found)),
        None if !create => {
            return Err(Error::NoStore {
                store: located(schema, server),
            });
        }
        _ => {}
    }
    let mut tx = client.transaction().map_err(db("migrate"))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&MIGRATION_LOCK, &schema],
    )
    .map_err(db("lock for migrating"))?;
    // A schema made for the store (by a role that may create schemas, for
    // one that may not) is used as it is: `CREATE SCHEMA IF NOT EXISTS`
    // asks for the right to create schemas before it looks.
    let quoted = ident(schema);
    let exists: bool = tx
        .query_one("SELECT to_regnamespace($1) IS NOT NULL", &[&quoted])
        .map_err(db("look for"))?
        .get(0);
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))
            .map_err(db("create"))?;
    }
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {quoted}.schema_version (
             singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
             version   integer NOT NULL
         );"
    ))
    .map_err(db("create"))?;
    let found = read_version(&mut tx, schema, server)?.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(newer(schema, server, found));
    }
    if found == 0 {
        // No store made them (under the lock, none is making them): a
        // table of the store's names is another tool's.
        let theirs: Vec<String> = tx
            .query(
                "SELECT c.relname::text FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = ANY($2)",
                &[&schema, &TABLES.as_slice()],
            )
            .map_err(db("look for the tables of"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if let Some(table) = theirs.first() {
            return Err(foreign(schema, server, table));
        }
    }
    let steps = migrations(schema);
    for (index, step) in steps.iter().enumerate().skip(found.max(0) as usize) {
        tx.batch_execute(step).map_err(|e| {
            failed(
                format!("migrate schema {schema} to version {}", index + 1),
                e,
            )
        })?;
    }
    tx.execute(
        &format!(
            "INSERT INTO {quoted}.schema_version (version) VALUES ($1)
             ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version"
        ),
        &[&SCHEMA_VERSION],
    )
    .map_err(db("record the version of"))?;
    tx.commit().map_err(db("commit the migration of"))
}

/// The tables a store makes in its schema (besides `schema_version`, made
/// first, on its own).
const TABLES: [&str; 2] = ["tasks", "counters"];

/// The schema's version, `None` if it has none yet. A `schema_version`
/// table of another shape is another tool's: refused, naming it and where
/// it was found (`server`).
fn read_version(
    client: &mut impl GenericClient,
    schema: &str,
    server: &str,
) -> Result<Option<i32>> {
    let db = |e| failed(format!("read the version of schema {schema}"), e);
    let table = format!("{}.schema_version", ident(schema));
    // Its columns and their types, in order (none: no such table).
    let columns: Vec<(String, String)> = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
             FROM pg_attribute a
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&table],
        )
        .map_err(db)?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    if columns.is_empty() {
        return Ok(None);
    }
    let ours = [("singleton", "boolean"), ("version", "integer")];
    if columns.len() != ours.len()
        || columns
            .iter()
            .zip(ours)
            .any(|((name, kind), (n, k))| name != n || kind != k)
    {
        return Err(foreign(schema, server, "schema_version"));
    }
    let row = client
        .query_opt(&format!("SELECT version FROM {table}"), &[])
        .map_err(db)?;
    Ok(row.map(|r| r.get(0)))
}

/// A schema holding `table`, which is not the store's, found at `server`.
fn foreign(schema: &str, server: &str, table: &str) -> Error {
    Error::InvalidStore {
        path: PathBuf::from(located(schema, server)),
        reason: format!(
            "its table {table} is not taskstore's (another tool made it): give the store a \
             schema of its own (`PgStoreBuilder::schema`); nothing was changed"
        ),
    }
}

/// Where a schema was looked for (no store there, one of another version,
/// or another tool's tables): the schema, and the server and database
/// (`Pool::server`, never the password). One wording for every such
/// error.
fn located(schema: &str, server: &str) -> String {
    format!("postgres schema {schema} at {server}")
}

/// A schema of version `found`, older than this build's, that the open
/// was told not to migrate.
fn older(schema: &str, server: &str, found: i32) -> Error {
    Error::OlderFormat {
        path: PathBuf::from(located(schema, server)),
        found: u64::try_from(found).unwrap_or(0),
        current: SCHEMA_VERSION as u64,
    }
}

/// A schema of version `found`, newer than this build's.
fn newer(schema: &str, server: &str, found: i32) -> Error {
    Error::UnsupportedFormat {
        path: PathBuf::from(located(schema, server)),
        found: u64::try_from(found).unwrap_or(0),
        supported: SCHEMA_VERSION as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["taskstore", "_x", "a1_b2", &"a".repeat(MAX_SCHEMA_LEN)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Taskstore",
            "1abc",
            "a-b",
            "a;drop",
            "a\"b",
            "pg_catalog",
            &"a".repeat(MAX_SCHEMA_LEN + 1),
        ] {
            assert!(
                matches!(
                    check_name(bad),
                    Err(Error::InvalidConfig {
                        field: "schema",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }
}
