//! The SQL of every statement, written out once per schema.
//!
//! Every write is one statement: the task row's change, the active-task
//! counter's (only when the number of active tasks changes) and the
//! notification (`pg_notify` in the `RETURNING` list, so it fires once per
//! row written and is delivered at commit; a handle opened without change
//! notices has a test of the channel's parameter there instead), joined by
//! data-modifying `WITH` clauses. Conditional writes match `id`, `created_at_ns` and `revision`:
//! the row lock and PostgreSQL's re-check of the `WHERE` clause after
//! waiting for it decide every race between hosts. A batch (of
//! replacements or of removals) waits for no task's row: it leaves out the
//! rows another session holds ([`unlocked`]), which `PgBackend` then
//! writes one by one, so that the batch never holds the rows it wrote
//! while it waits for another's.

use super::schema::{OWNER_KEY, OWNER_UNREAD};
use crate::backend::{Scan, Scope};

/// What the insert fails with when the active-task counter did not count
/// the active row it inserted: a cast of this text, then the task's id, to
/// an integer (`22P02`, "invalid input syntax for type integer"). An
/// insert is one statement, no transaction of the store's own around it,
/// so that no transaction stands open while a task is on its way to the
/// server (a large task, a slow link: the server's
/// `idle_in_transaction_session_timeout` would end the session); the
/// statement's failure is what undoes a row the cap refused. The cast's
/// text is built from the inserted row, so it cannot be folded into a
/// constant when the statement is planned: it fails only when it runs.
pub(crate) const UNCOUNTED: &str = "taskstore: an active task the counter did not count:";

/// Whether `e` is the insert's failure for an active row the counter did
/// not count ([`UNCOUNTED`]).
pub(crate) fn uncounted(db: &postgres::error::DbError) -> bool {
    *db.code() == postgres::error::SqlState::INVALID_TEXT_REPRESENTATION
        && db.message().contains(UNCOUNTED)
}

/// The statements over one schema.
#[derive(Debug)]
pub(crate) struct Sql {
    pub schema: String,
    /// The notification channel: `taskstore:<schema>`.
    pub channel: String,
    /// Whether the writes notify it (`change_notices`).
    pub notifies: bool,
    pub load: String,
    pub insert: String,
    pub replace: String,
    pub remove: String,
    pub replace_all: String,
    pub remove_all: String,
    pub load_all: String,
    /// Reads the counter, taking no lock: one row, or none if it is gone.
    pub counter: String,
    /// The counter (NULL if its row is gone) and the number of active
    /// rows, taking no lock: one statement, one snapshot, and every write
    /// changes a row and the counter in one statement, so the two agree
    /// there unless a change made outside the store put the counter out.
    pub counter_and_active: String,
    /// Takes the counter's row lock, and reads it.
    pub lock_counter: String,
    pub make_counter: String,
    /// Sets the counter to the number of active rows, if it is not:
    /// returns it then (run with the row lock held, in a statement of its
    /// own, so that its snapshot sees every write that changed the counter
    /// before it).
    pub recount: String,
}

impl Sql {
    /// The statements over `schema`; with `notifies` false, the writes send
    /// no notification (the channel's parameter is still typed, and
    /// unused).
    pub fn new(schema: &str, notifies: bool) -> Sql {
        let s = &super::schema::ident(schema);
        let notify = |channel: &str, id: &str| notification(notifies, channel, id);
        Sql {
            schema: schema.to_owned(),
            channel: format!("taskstore:{schema}"),
            notifies,
            load: format!("SELECT task FROM {s}.tasks WHERE id = $1"),
            // $1 id, $2 created_at_ns, $3 revision, $4 status, $5 active,
            // $6 expires_at_ns, $7 task, $8 the cap, $9 the channel. Returns
            // the rows inserted and counted; an active row the counter did
            // not count (the cap reached, or the counter's row gone) fails
            // the statement instead ([`UNCOUNTED`]), so that nothing of it
            // commits.
            insert: format!(
                "WITH i AS (
                     INSERT INTO {s}.tasks (id, created_at_ns, revision, status, active, expires_at_ns, task)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (id) DO NOTHING
                     RETURNING id, {n}),
                 c AS (
                     UPDATE {s}.counters SET active = active + 1
                     WHERE singleton AND $5 AND EXISTS (SELECT FROM i) AND active < $8
                     RETURNING 1)
                 SELECT (SELECT count(*) FROM i),
                        (SELECT count(*) FROM c)
                        + CASE WHEN $5 AND EXISTS (SELECT FROM i) AND NOT EXISTS (SELECT FROM c)
                               THEN CAST((SELECT '{UNCOUNTED} ' || id FROM i) AS int4)
                               ELSE 0 END",
                n = notify("$9", "id")
            ),
            // $1 id, $2 created_at_ns, $3 revision (the version read);
            // $4 created_at_ns, $5 revision, $6 status, $7 active,
            // $8 expires_at_ns, $9 task (the next version); $10 the change
            // in active tasks; $11 the channel; $12 the version's stored
            // JSON, if known (a guess's: then the row must hold exactly it).
            replace: format!(
                "WITH u AS (
                     UPDATE {s}.tasks
                     SET created_at_ns = $4, revision = $5, status = $6, active = $7,
                         expires_at_ns = $8, task = $9
                     WHERE id = $1 AND created_at_ns = $2 AND revision = $3
                       AND ($12::text IS NULL OR task = $12::text)
                     RETURNING id, {n}),
                 c AS (
                     UPDATE {s}.counters SET active = active + $10::int8
                     WHERE singleton AND $10::int8 <> 0 AND EXISTS (SELECT FROM u)
                     RETURNING 1)
                 SELECT count(*) FROM u",
                n = notify("$11", "id")
            ),
            // $1 id, $2 created_at_ns, $3 revision; $4 the channel; $5 the
            // version's stored JSON, if known (as for `replace`).
            remove: format!(
                "WITH d AS (
                     DELETE FROM {s}.tasks
                     WHERE id = $1 AND created_at_ns = $2 AND revision = $3
                       AND ($5::text IS NULL OR task = $5::text)
                     RETURNING id, active, {n}),
                 c AS (
                     UPDATE {s}.counters SET active = active - 1
                     WHERE singleton AND EXISTS (SELECT FROM d WHERE d.active)
                     RETURNING 1)
                 SELECT count(*) FROM d",
                n = notify("$4", "id")
            ),
            replace_all: replace_all(s, &notify("$11", "t.id"), true),
            // Arrays: $1 id, $2 created_at_ns, $3 revision; $4 the channel.
            // Deletes only the rows `l` locked ([`unlocked`]).
            remove_all: format!(
                "WITH n AS (
                     SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[])
                         AS n(id, created_at_ns, revision)),
                 {l},
                 d AS (
                     DELETE FROM {s}.tasks t USING n JOIN l ON l.id = n.id
                     WHERE {AS_READ}
                     RETURNING t.id, t.active, {n}),
                 c AS (
                     UPDATE {s}.counters
                     SET active = active - (SELECT count(*) FROM d WHERE d.active)
                     WHERE singleton AND EXISTS (SELECT FROM d WHERE d.active)
                     RETURNING 1)
                 SELECT id FROM d",
                l = unlocked(s),
                n = notify("$4", "t.id")
            ),
            load_all: format!("SELECT id, task FROM {s}.tasks WHERE id = ANY($1)"),
            counter: format!("SELECT active FROM {s}.counters WHERE singleton"),
            counter_and_active: format!(
                "SELECT (SELECT active FROM {s}.counters WHERE singleton) AS active,
                        (SELECT count(*) FROM {s}.tasks WHERE active)"
            ),
            lock_counter: format!("SELECT active FROM {s}.counters WHERE singleton FOR UPDATE"),
            // The counter's row made again (deleted by hand), at 0 for the
            // recount to correct.
            make_counter: format!(
                "INSERT INTO {s}.counters (singleton, active) VALUES (true, 0)
                 ON CONFLICT (singleton) DO NOTHING"
            ),
            recount: format!(
                "WITH n AS (SELECT count(*) AS active FROM {s}.tasks WHERE active)
                 UPDATE {s}.counters SET active = n.active FROM n
                 WHERE singleton AND {s}.counters.active <> n.active
                 RETURNING n.active"
            ),
        }
    }

    /// The batch of replacements without its locking step
    /// ([`replace_all`]), for `benches/pg.rs`.
    pub fn replace_all_waiting(&self) -> String {
        replace_all(
            &super::schema::ident(&self.schema),
            &notification(self.notifies, "$11", "t.id"),
            false,
        )
    }

    /// The scan for `scan`'s filters: `$1` the limit, then its filters'
    /// values in the order scope, status, expiry, owner, and, if `after`,
    /// the position rows are taken after (`created_at_ns`, then id). It
    /// selects id, task and `created_at_ns`, the position as stored. Each
    /// combination has its own text, so each is planned for its own index
    /// (the partial index of active tasks, the listing index, the expiry
    /// index, or the owner's).
    pub fn scan(&self, scan: &Scan, after: bool) -> String {
        let mut conditions = Vec::new();
        let mut n = 1;
        let mut param = || {
            n += 1;
            format!("${n}")
        };
        if scan.scope == Scope::Active {
            conditions.push("active".to_owned());
        }
        if scan.status.is_some() {
            conditions.push(format!("status = {}", param()));
        }
        if scan.expired_at.is_some() {
            conditions.push(format!("expires_at_ns <= {}", param()));
        }
        let owner = scan.owner.is_some().then(&mut param);
        if after {
            let (at, id) = (param(), param());
            conditions.push(format!("(created_at_ns, id) > ({at}, {id})"));
        }
        let table = format!("{}.tasks", super::schema::ident(&self.schema));
        let page = |conditions: &[String]| {
            let filter = if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            };
            format!(
                "SELECT id, task, created_at_ns FROM {table} {filter} \
                 ORDER BY created_at_ns, id LIMIT $1"
            )
        };
        let Some(owner) = owner else {
            return page(&conditions);
        };
        // The owner's rows by the owner's index (`owner_key`, computed by
        // the server from each row's task), and the rows whose task the
        // server could not read, whoever owns them: the rows the scan
        // then checks with `Scan::owns`. Two pages, each in order from
        // the index, merged: one `OR` would read and sort every one of
        // the owner's rows for each page. (`$n` NULL, an owner holding a
        // `\u0000` no text holds, matches no key.)
        let keyed = |key: String| {
            let mut conditions = conditions.clone();
            conditions.push(format!("owner_key = {key}"));
            format!("({})", page(&conditions))
        };
        format!(
            "SELECT id, task, created_at_ns FROM ({} UNION ALL {}) owned \
             ORDER BY created_at_ns, id LIMIT $1",
            keyed(format!("'{OWNER_KEY}' || {owner}::text")),
            keyed(format!("'{OWNER_UNREAD}'")),
        )
    }
}

/// The owner a scan passes for `owner`: itself, or none if it holds a
/// `\u0000`, which no text the server holds can (such an owner's task is
/// [`OWNER_UNREAD`]'s: its JSON holds `\u0000`).
pub(crate) fn owner_param(owner: &str) -> Option<&str> {
    (!owner.contains('\0')).then_some(owner)
}

/// A batch's row `t` is still the version read, `n`: the same `id`,
/// `created_at_ns` and `revision`.
const AS_READ: &str =
    "t.id = n.id AND t.created_at_ns = n.created_at_ns AND t.revision = n.revision";

/// What a write's `RETURNING` list does about task `id`'s change:
/// notifies `channel`, or (without change notices) only types its
/// parameter.
fn notification(notifies: bool, channel: &str, id: &str) -> String {
    if notifies {
        format!("pg_notify({channel}, {id})")
    } else {
        format!("{channel}::text IS NULL")
    }
}

/// The batch of replacements over schema `s` (`n`: what its `RETURNING`
/// list notifies): arrays, one element per task: $1 id, $2 created_at_ns,
/// $3 revision, $4 was active (the version read); $5 created_at_ns, $6
/// revision, $7 status, $8 active, $9 expires_at_ns, $10 task (the next
/// version); $11 the channel. `locking`: it writes only the rows `l`
/// locked ([`unlocked`]), as the store's does; without, it waits for every
/// row another session holds (`benches/pg.rs` times the two side by side).
fn replace_all(s: &str, n: &str, locking: bool) -> String {
    let (l, joined) = if locking {
        (format!("{},", unlocked(s)), "n JOIN l ON l.id = n.id")
    } else {
        (String::new(), "n")
    };
    format!(
        "WITH n AS (
                     SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::bool[],
                                          $5::int8[], $6::int8[], $7::text[], $8::bool[],
                                          $9::int8[], $10::text[])
                         AS n(id, created_at_ns, revision, was_active,
                              next_created_at_ns, next_revision, status, active,
                              expires_at_ns, task)),
                 {l}
                 u AS (
                     UPDATE {s}.tasks t
                     SET created_at_ns = n.next_created_at_ns, revision = n.next_revision,
                         status = n.status, active = n.active,
                         expires_at_ns = n.expires_at_ns, task = n.task
                     FROM {joined}
                     WHERE {AS_READ}
                     RETURNING t.id, n.active::int - n.was_active::int AS delta,
                               {n}),
                 c AS (
                     UPDATE {s}.counters SET active = active + (SELECT sum(delta) FROM u)
                     WHERE singleton AND (SELECT coalesce(sum(delta), 0) FROM u) <> 0
                     RETURNING 1)
                 SELECT id FROM u"
    )
}

/// The `WITH` clause `l` of a batch over the versions read, `n`: the ids
/// of those of their rows (in schema `s`) that no other session holds
/// locked, locked by the batch (`FOR UPDATE … SKIP LOCKED`). A batch
/// writes only these rows, so it waits for no task's row and never holds
/// the rows it wrote while it waits for another's; a row left out is
/// stored as read, and `PgBackend` writes it on its own once the batch
/// has committed, so that only that write waits for the lock.
fn unlocked(s: &str) -> String {
    format!(
        "l AS (
                     SELECT t.id FROM {s}.tasks t, n
                     WHERE {AS_READ}
                     FOR UPDATE OF t SKIP LOCKED)"
    )
}
