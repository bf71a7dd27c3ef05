//! What the rows hold: JSON stored exactly as the rules encoded it, loads of
//! many tasks, and rows that are unreadable, at odds with their columns or of a
//! hand-edited type: an error naming the task, never a loop or a panic, and the
//! listings and sweeps that go on past them.

use super::*;

#[test]
fn json_is_stored_exactly_as_the_rules_encoded_it() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("exact");
    let store = open(cluster, &schema, "exact");
    let value = json!({"nul": "\u{0}", "big": u64::MAX, "float": 0.300_000_000_000_000_04, "order": {"z": 1, "a": 2}});
    let task = store
        .create(NewTask::new().metadata("v", value.clone()))
        .unwrap();
    let stored: String = cluster
        .client()
        .query_one(
            &format!("SELECT task FROM {schema}.tasks WHERE id = $1"),
            &[&task.id.as_str()],
        )
        .unwrap()
        .get(0);
    assert_eq!(stored, serde_json::to_string(&task).unwrap());
    assert_eq!(store.get(&task.id).unwrap().unwrap().metadata["v"], value);
}

/// Makes the stored rows of `ids` unreadable behind the store's back (a
/// hand edit, or another tool's write).
fn spoil(cluster: &Cluster, schema: &str, ids: &[&TaskId]) {
    for id in ids {
        let spoilt = cluster
            .client()
            .execute(
                &format!("UPDATE {schema}.tasks SET task = '{{}}' WHERE id = $1"),
                &[&id.as_str()],
            )
            .unwrap();
        assert_eq!(spoilt, 1, "{id}");
    }
}

/// `PgBackend::load_all` (one statement for a renewal pass's loads)
/// answers each id as its own `load` does, in order: a task, none for an
/// id no row has, the same task again for an id given twice, and
/// `Error::Corrupt` for an unreadable row, which leaves the others'
/// answers alone.
#[test]
fn loading_many_tasks_at_once_answers_each_as_its_own_load() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("load_all");
    let store = open(cluster, &schema, "load_all");
    let [a, b, bad] = [(); 3].map(|()| store.create(NewTask::new()).unwrap());
    assert!(store.complete(&b.id, json!(1)).unwrap().is_applied());
    spoil(cluster, &schema, &[&bad.id]);
    let ids = [
        a.id.clone(),
        TaskId::new(),
        bad.id.clone(),
        a.id.clone(),
        b.id.clone(),
        bad.id.clone(),
    ];
    let backend = store.backend();
    let answers = backend.load_all(&ids);
    assert_eq!(answers.len(), ids.len());
    for (id, answer) in ids.iter().zip(answers) {
        match (answer, backend.load(id)) {
            (Ok(got), Ok(alone)) => assert_eq!(got, alone, "{id}"),
            (Err(Error::Corrupt { path: got, .. }), Err(Error::Corrupt { path, .. })) => {
                assert_eq!(got, path, "{id}");
            }
            (got, alone) => panic!("{id}: {got:?} loaded together, {alone:?} alone"),
        }
    }
    assert!(backend.load_all(&[]).is_empty());
}

/// A row whose task cannot be decoded is `Error::Corrupt` naming the task
/// (as the file store's undecodable task file is), for a read, a write
/// and a create under its id alike; the other tasks are untouched. (It was
/// `Error::Backend`, "decode task …", which the MCP manager takes for an
/// outage and retries.)
#[test]
fn an_unreadable_row_is_corrupt_naming_the_task_whatever_the_call() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("corrupt_row");
    let store = open(cluster, &schema, "corrupt_row");
    let (bad, good) = (
        store.create(NewTask::new()).unwrap(),
        store.create(NewTask::new()).unwrap(),
    );
    spoil(cluster, &schema, &[&bad.id]);
    let corrupt = |what: &str, got: Result<(), Error>| match got {
        Err(Error::Corrupt { path, reason }) => {
            let path = path.to_string_lossy();
            assert!(
                path.contains(&schema) && path.contains(bad.id.as_str()),
                "{what}: names the schema and the task: {path}"
            );
            assert!(!reason.is_empty(), "{what}");
        }
        other => panic!("{what}: expected Corrupt naming the task, got {other:?}"),
    };
    corrupt("get", store.get(&bad.id).map(drop));
    corrupt("complete", store.complete(&bad.id, json!(1)).map(drop));
    corrupt(
        "update",
        store
            .update(&bad.id, TaskUpdate::new().metadata("k", 1))
            .map(drop),
    );
    // The file store's create under the id of an undecodable file says
    // the same (`bad_input::*`): the id is neither free nor a task.
    corrupt(
        "create under its id",
        store.create(NewTask::new().id(bad.id.clone())).map(drop),
    );
    // Another handle, which holds no guess of the task, reads the same.
    let other = open(cluster, &schema, "corrupt_row_2");
    corrupt("another handle's get", other.get(&bad.id).map(drop));
    assert_eq!(store.get(&good.id).unwrap(), Some(good.clone()));
    assert!(store.complete(&good.id, json!(1)).unwrap().is_applied());
}

/// A create under the id of an unreadable row fails `Corrupt` and leaves
/// nothing to undo: nothing of it was written, so nothing warns that it may
/// have left its task, and no renewal pass tries to remove it. (The undo's
/// removal failed on the same row, and the handle warned and kept the task,
/// read the row again at every renewal pass: one rule with the file store,
/// `faults::a_create_over_an_unreadable_file_leaves_nothing_to_undo`.)
#[test]
fn a_create_over_an_unreadable_row_leaves_nothing_to_undo() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("undo_corrupt");
    let store = open(cluster, &schema, "undo_corrupt");
    let bad = store.create(NewTask::new()).unwrap();
    spoil(cluster, &schema, &[&bad.id]);
    let logged = common::Logged::default();
    let err = tracing::subscriber::with_default(logged.clone(), || {
        let err = store.create(NewTask::new().id(bad.id.clone())).unwrap_err();
        let _ = store.renew_leases();
        err
    });
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    let undo = logged.warnings_of("failed create");
    assert!(undo.is_empty(), "{undo:?}");
}

/// A row whose task still decodes but disagrees with the row's own columns
/// (a hand edit of its revision): a write to it is an error naming the
/// task, not a loop. (The conditional write matched on the columns and
/// retried from the task, which never matched them: an `update` spun for
/// ever, committing thousands of transactions a second.)
#[test]
fn a_row_at_odds_with_its_columns_is_an_error_not_a_loop() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("odds");
    let (a, b) = (open(cluster, &schema, "a"), open(cluster, &schema, "b"));
    let task = a.create(NewTask::new()).unwrap();
    let edited = cluster
        .client()
        .execute(
            &format!(
                "UPDATE {schema}.tasks SET task = replace(task, '\"revision\":1', '\"revision\":5') WHERE id = $1"
            ),
            &[&task.id.as_str()],
        )
        .unwrap();
    assert_eq!(edited, 1);
    let (tx, rx) = std::sync::mpsc::channel();
    let id = task.id.clone();
    std::thread::spawn(move || {
        let _ = tx.send(b.update(&id, TaskUpdate::new().metadata("k", 1)));
    });
    match rx
        .recv_timeout(common::HANG)
        .expect("the update never returned")
    {
        Err(e @ Error::Backend { .. }) => {
            assert!(e.to_string().contains(task.id.as_str()), "{e}")
        }
        other => panic!("expected an error naming the task, got {other:?}"),
    }
}

/// A column whose type a hand edit changed (`ALTER TABLE … ALTER COLUMN …
/// TYPE`) is an error naming the operation, the column and its type, and
/// the task, not a panic: the store reads every column it selects from its
/// tables fallibly. Each change is made before a handle of its own opens,
/// so its statements are prepared over the changed table. (`row.get`
/// panicked in the listing, in `get` and in the sweep's recount.)
#[test]
fn a_column_whose_type_a_hand_edit_changed_is_an_error_not_a_panic() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("retyped");
    // A handle opened before the changes, its `load` prepared.
    let before = open(cluster, &schema, "retyped");
    let task = before.create(NewTask::new()).unwrap();
    assert_eq!(before.get(&task.id).unwrap(), Some(task.clone()));
    let mut client = cluster.client();
    let alter = |client: &mut postgres::Client, table: &str, column: &str, to: &str| {
        client
            .batch_execute(&format!(
                "ALTER TABLE {schema}.{table} ALTER COLUMN {column} TYPE {to} USING {column}::{to}"
            ))
            .unwrap();
    };
    // Each call on a fresh handle, its outcome caught if it panics.
    let call = |what: &str, op: &dyn Fn(&PgStore) -> Result<(), Error>| -> Error {
        let store = open(cluster, &schema, "retyped");
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op(&store))) {
            Ok(Err(e)) => e,
            Ok(Ok(())) => panic!("{what}: read a column of the wrong type"),
            Err(_) => panic!("{what}: panicked"),
        }
    };
    let says = |e: &Error, parts: &[&str]| {
        assert!(matches!(e, Error::Backend { .. }), "{e:?}");
        let said = e.to_string();
        for part in parts {
            assert!(said.contains(part), "{said:?} does not name {part:?}");
        }
    };

    alter(&mut client, "tasks", "created_at_ns", "text");
    let e = call("a listing", &|s| s.list(&ListQuery::all()).map(drop));
    says(
        &e,
        &[&format!("{schema}.tasks.created_at_ns"), "text", "scan"],
    );
    alter(&mut client, "tasks", "created_at_ns", "bigint");

    // The server retypes no column another is computed from: the owner's
    // (`owner_key`) goes first, and comes back after.
    client
        .batch_execute(&format!("ALTER TABLE {schema}.tasks DROP COLUMN owner_key"))
        .unwrap();
    alter(&mut client, "tasks", "task", "jsonb");
    let e = call("a get", &|s| s.get(&task.id).map(drop));
    says(
        &e,
        &[&format!("{schema}.tasks.task"), "jsonb", task.id.as_str()],
    );
    let old = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| before.get(&task.id)))
        .expect("a get by a handle opened before the change panicked");
    match old {
        // The server refuses the statement it prepared over the column's
        // old type ("cached plan must not change result type").
        Err(e) => says(&e, &[task.id.as_str()]),
        Ok(read) => panic!("read a column of the wrong type: {read:?}"),
    }
    alter(&mut client, "tasks", "task", "text");
    client
        .batch_execute(&format!(
            "ALTER TABLE {schema}.tasks ADD COLUMN owner_key text COLLATE \"C\"
                 GENERATED ALWAYS AS ({schema}.owner_key(task)) STORED;
             CREATE INDEX tasks_owner_order ON {schema}.tasks (owner_key, created_at_ns, id)
                 WHERE owner_key IS NOT NULL"
        ))
        .unwrap();

    // (Its check, `active >= 0`, takes a number.)
    alter(&mut client, "counters", "active", "numeric");
    let e = call("a sweep", &|s| s.sweep().map(drop));
    says(
        &e,
        &[&format!("{schema}.counters.active"), "numeric", "count"],
    );
    alter(&mut client, "counters", "active", "bigint");

    // Put back, the store reads as before.
    let store = open(cluster, &schema, "retyped");
    assert_eq!(store.get(&task.id).unwrap(), Some(task.clone()));
    assert_eq!(store.sweep().unwrap().cleaned, 0);
}

/// `query` walked in pages of two: the ids listed, and the ids of the
/// rows reported unreadable, each in order.
fn walked_in_pages(store: &PgStore, query: &ListQuery) -> (Vec<TaskId>, Vec<TaskId>) {
    let (mut listed, mut skipped) = (Vec::new(), Vec::new());
    let mut page_query = query.clone().limit(2);
    loop {
        let page = store.list(&page_query).unwrap();
        listed.extend(page.tasks.into_iter().map(|t| t.id));
        skipped.extend(page.skipped.into_iter().filter_map(|s| s.id));
        match page.next_cursor {
            Some(next) => page_query = query.clone().limit(2).after(&next),
            None => return (listed, skipped),
        }
    }
}

/// A row that cannot be read is reported and left out, and the listing goes
/// on past it: a page is short only at the end. (Rows were cut by `LIMIT`
/// before they were read, so a batch that left one out looked like the last,
/// and every task after it went unlisted.)
#[test]
fn unreadable_rows_are_reported_and_every_task_after_them_is_still_listed() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("unreadable");
    let store = open(cluster, &schema, "unreadable");
    for _ in 0..6 {
        store.create(NewTask::new()).unwrap();
    }
    let order = common::ids_of(&store, &ListQuery::all());
    spoil(cluster, &schema, &[&order[1], &order[2]]);
    let (listed, skipped) = walked_in_pages(&store, &ListQuery::all());
    assert_eq!(
        listed,
        [&order[0], &order[3], &order[4], &order[5]].map(Clone::clone)
    );
    assert_eq!(skipped, [order[1].clone(), order[2].clone()]);
}

/// A row whose task says another creation time than the row lists it by
/// (a hand edit of its `createdAt`) is reported and left out, and hides no
/// task after it from a listing walked in pages. (Its task was listed, out
/// of order, and the page's cursor, taken from the task, jumped past every
/// row between: a walk of six tasks in pages of two ended after two.)
#[test]
fn a_row_listed_out_of_its_place_is_reported_and_hides_no_task_after_it() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("out_of_place");
    let store = open(cluster, &schema, "out_of_place");
    for _ in 0..6 {
        store.create(NewTask::new()).unwrap();
    }
    let order = common::ids_of(&store, &ListQuery::all());
    let mut client = cluster.client();
    let sql = format!("SELECT task FROM {schema}.tasks WHERE id = $1");
    let json: String = client
        .query_one(&sql, &[&order[1].as_str()])
        .unwrap()
        .get(0);
    let mut task: serde_json::Value = serde_json::from_str(&json).unwrap();
    task["createdAt"] = json!("2100-01-01T00:00:00Z");
    let edited = client
        .execute(
            &format!("UPDATE {schema}.tasks SET task = $2 WHERE id = $1"),
            &[&order[1].as_str(), &task.to_string()],
        )
        .unwrap();
    assert_eq!(edited, 1);
    let (listed, skipped) = walked_in_pages(&store, &ListQuery::all());
    assert_eq!(
        listed,
        [&order[0], &order[2], &order[3], &order[4], &order[5]].map(Clone::clone)
    );
    assert_eq!(skipped, [order[1].clone()]);
}

/// A row whose task has another status than its columns say (a hand edit
/// of its `status`) is reported by a listing that picked it by those
/// columns, not left out unsaid: the running tasks' listing picked it as
/// running, and its task, finished, was dropped from the page without a
/// word, though `get` answers it.
#[test]
fn a_row_whose_status_is_not_its_columns_is_reported_not_left_out_unsaid() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("status_odds");
    let store = open(cluster, &schema, "status_odds");
    for _ in 0..4 {
        store.create(NewTask::new()).unwrap();
    }
    let order = common::ids_of(&store, &ListQuery::all());
    let edited = cluster
        .client()
        .execute(
            &format!(
                "UPDATE {schema}.tasks SET task = replace(task, '\"status\":\"working\"', '\"status\":\"completed\"') WHERE id = $1"
            ),
            &[&order[1].as_str()],
        )
        .unwrap();
    assert_eq!(edited, 1);
    assert_eq!(
        store.get(&order[1]).unwrap().unwrap().status,
        TaskStatus::Completed
    );
    for query in [
        ListQuery::active(),
        ListQuery::all().status(TaskStatus::Working),
    ] {
        let (listed, skipped) = walked_in_pages(&store, &query);
        assert_eq!(
            listed,
            [&order[0], &order[2], &order[3]].map(Clone::clone),
            "{query:?}"
        );
        assert_eq!(skipped, [order[1].clone()], "{query:?}");
    }
}

/// A sweep's batch that met an unreadable row is not its last: every
/// expired task after it is deleted too, and the row is reported.
#[test]
fn a_sweep_goes_on_past_an_unreadable_row() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("sweep_unreadable");
    let store = open(cluster, &schema, "sweep_unreadable");
    // More than a sweep's batch (1,024), one of the first spoilt.
    let ids: Vec<TaskId> = (0..1_100)
        .map(|_| {
            let task = NewTask::new().ttl(Duration::from_millis(1));
            store.create(task).unwrap().id
        })
        .collect();
    spoil(cluster, &schema, &[&ids[10]]);
    std::thread::sleep(Duration::from_millis(5));
    let swept = store.sweep().unwrap();
    assert_eq!(swept.deleted, ids.len() - 1);
    assert_eq!(
        swept
            .skipped
            .iter()
            .map(|s| s.id.clone())
            .collect::<Vec<_>>(),
        [Some(ids[10].clone())]
    );
    let left: i64 = cluster
        .client()
        .query_one(&format!("SELECT count(*) FROM {schema}.tasks"), &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 1);
}

/// A listing filtered by owner reads the owner's rows alone: the server
/// filters them (`sql::Sql::scan`), however many tasks of other owners come
/// before, and sends only those (here counted through a proxy). (They were
/// filtered after the fact, in batches of 256 rows, each sent and decoded:
/// a page of one task, `--owner X --limit 1`, over 600 tasks of another
/// owner read all 600, 170 kB.) A task that names the owner only in its
/// metadata is not the owner's.
#[test]
fn a_listing_by_owner_reads_the_owners_rows_alone() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("by_owner");
    let others = open(cluster, &schema, "others");
    std::thread::scope(|s| {
        for part in 0..4 {
            let others = &others;
            s.spawn(move || {
                for n in 0..150 {
                    others
                        .create(NewTask::new().id(common::id(&format!("o{part}"), n)))
                        .unwrap();
                }
            });
        }
    });
    others
        .create(NewTask::new().metadata("owner", "mine"))
        .unwrap();
    let proxy = pg_cluster::LosesAReply::start(cluster);
    let mine = PgStore::builder(proxy.conninfo())
        .schema(&schema)
        .instance_id("mine")
        .time_source(TimeSource::Clock)
        .open()
        .unwrap();
    let owned = mine.create(NewTask::new()).unwrap();
    let before = proxy.answered();
    let page = mine.list(&ListQuery::all().owner("mine").limit(1)).unwrap();
    let answered = proxy.answered() - before;
    assert_eq!(page.tasks, std::slice::from_ref(&owned));
    assert_eq!(page.next_cursor, None);
    // The owner's task, and the statement's description: not the others'.
    let one = serde_json::to_string(&owned).unwrap().len();
    assert!(
        answered < 10 * one,
        "the listing read {answered} bytes; a task is {one}"
    );
    let all = mine.list(&ListQuery::all().owner("mine")).unwrap();
    assert_eq!(all.tasks, [owned]);
}

/// Every scan node of `plan` (`EXPLAIN (ANALYZE, FORMAT JSON)`'s `Plan`):
/// its type, its index if any, and the rows it read (those it returned and
/// those its filter removed).
fn scans_of(plan: &serde_json::Value, into: &mut Vec<(String, String, u64)>) {
    let node = plan["Node Type"].as_str().unwrap_or_default();
    if node.ends_with("Scan") {
        let read = plan["Actual Rows"].as_u64().unwrap_or(0)
            + plan["Rows Removed by Filter"].as_u64().unwrap_or(0);
        let index = plan["Index Name"].as_str().unwrap_or_default();
        into.push((node.to_owned(), index.to_owned(), read));
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        scans_of(child, into);
    }
}

/// A listing of one owner's tasks among many rows of another's reads the
/// owner's rows by their index (`tasks_owner_order`), not the table: the
/// store's own statement (`taskstore::pg_statements`), explained as the
/// server runs it, over 20,000 rows of another owner's and 10 of this
/// one's, made after them. (Its owner was a search of each row's text: the
/// server read every row before the owner's.)
#[test]
fn a_listing_by_owner_among_many_rows_of_another_reads_the_owners_by_their_index() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("owner_index");
    let others = open(cluster, &schema, "others");
    let template = others.create(NewTask::new()).unwrap();
    let mut client = cluster.client();
    // 20,000 rows of the others' task under other ids, as a writer of
    // version 1 inserts them (the columns it names).
    let made = client
        .execute(
            &format!(
                "INSERT INTO {schema}.tasks
                     (id, created_at_ns, revision, status, active, expires_at_ns, task)
                 SELECT t.id || '-' || n, t.created_at_ns, t.revision, t.status, t.active,
                        t.expires_at_ns,
                        replace(t.task, '\"' || t.id || '\"', '\"' || t.id || '-' || n || '\"')
                 FROM {schema}.tasks t, generate_series(1, 20000) n WHERE t.id = $1"
            ),
            &[&template.id.as_str()],
        )
        .unwrap();
    assert_eq!(made, 20_000);
    let mine = open(cluster, &schema, "mine");
    let owned: Vec<Task> = (0..10)
        .map(|_| mine.create(NewTask::new()).unwrap())
        .collect();
    client
        .batch_execute(&format!("ANALYZE {schema}.tasks"))
        .unwrap();
    let listed = mine
        .list(&ListQuery::all().owner("mine").limit(100))
        .unwrap();
    assert_eq!(listed.tasks, owned);

    // As the server plans it for given values, and for any (a prepared
    // statement's generic plan, which a pooled connection comes to).
    let statement = taskstore::pg_statements(&schema).list_owned;
    client
        .batch_execute(&format!("PREPARE listed AS {statement}"))
        .unwrap();
    for mode in ["force_custom_plan", "force_generic_plan"] {
        let explained = client
            .simple_query(&format!(
                "SET plan_cache_mode = {mode};
                 EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE listed(100, 'mine')"
            ))
            .unwrap();
        let plan = explained
            .iter()
            .find_map(|m| match m {
                postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap();
        let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
        let mut scans = Vec::new();
        scans_of(&plan[0]["Plan"], &mut scans);
        let read: u64 = scans.iter().map(|(_, _, read)| read).sum();
        assert!(
            read <= 20
                && scans
                    .iter()
                    .all(|(_, index, _)| index == "tasks_owner_order"),
            "{mode}: the listing of 10 tasks read {read} rows: {scans:?}"
        );
    }
}

/// A listing by owner over PostgreSQL gives each owner's tasks alone, for
/// owners whose names JSON escapes or the server must unescape to key them
/// (`owner_key`): a quote, a backslash, `\u` written out, an emoji, the
/// longest instance id; each owner's tasks and no other's, as the tasks
/// name them.
#[test]
fn a_listing_by_owner_keys_owners_that_json_escapes() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("odd_owners");
    let owners = [
        "a\"b".to_owned(),
        "a\\b".to_owned(),
        "a\\\"".to_owned(),
        "\\u0041".to_owned(),
        "A".to_owned(),
        "zoë \u{1F600}".to_owned(),
        "x".repeat(taskstore::MAX_INSTANCE_ID_LEN),
    ];
    let mut made = Vec::new();
    for owner in &owners {
        let store = open(cluster, &schema, owner);
        made.push((owner, store.create(NewTask::new()).unwrap()));
    }
    let reader = open(cluster, &schema, "reader");
    for (owner, task) in &made {
        let listed = reader
            .list(&ListQuery::all().owner(owner.as_str()))
            .unwrap();
        assert_eq!(listed.tasks, std::slice::from_ref(task), "owner {owner:?}");
    }
}
