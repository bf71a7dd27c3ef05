//! Checks of listings on one handle: order, filters, pages and cursors,
//! and the expired tasks a page meets.

use super::*;

pub(super) fn list_orders_filters_and_pages(store: &dyn TaskStore, setup: &Setup) {
    let mut ids = Vec::new();
    for i in 0..7 {
        // Two tasks per instant: the id breaks the tie.
        if i % 2 == 0 {
            setup.clock.advance(Duration::from_millis(10));
        }
        ids.push(
            store
                .create(NewTask::new().id(TaskId::parse(&format!("t{}", 7 - i)).unwrap()))
                .unwrap(),
        );
    }
    applied(store.complete(&ids[1].id, json!(1)).unwrap());
    applied(store.cancel(&ids[4].id, None).unwrap());
    applied(
        store
            .update(
                &ids[5].id,
                TaskUpdate::new().status(TaskStatus::InputRequired),
            )
            .unwrap(),
    );
    let mut expected: Vec<&Task> = ids.iter().collect();
    expected.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let expected: Vec<TaskId> = expected.into_iter().map(|t| t.id.clone()).collect();

    let all = listed_ids(store, &ListQuery::all());
    assert_eq!(all, expected, "ordered by created_at, then id");

    let active = store.list(&ListQuery::active()).unwrap().tasks;
    assert_eq!(active.len(), 5);
    assert!(active.iter().all(|t| !t.is_terminal()));
    let input = listed_ids(store, &ListQuery::all().status(TaskStatus::InputRequired));
    assert_eq!(input, vec![ids[5].id.clone()]);
    let completed = store
        .list(&ListQuery::all().status(TaskStatus::Completed))
        .unwrap()
        .tasks;
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0].result, Some(json!(1)));
    assert!(
        store
            .list(&ListQuery::active().status(TaskStatus::Completed))
            .unwrap()
            .tasks
            .is_empty()
    );

    let mut paged = Vec::new();
    let mut query = ListQuery::all().limit(3);
    loop {
        let page = store.list(&query).unwrap();
        assert!(page.tasks.len() <= 3);
        paged.extend(page.tasks.into_iter().map(|t| t.id));
        match page.next_cursor {
            Some(c) => query = ListQuery::all().limit(3).after(&c),
            None => break,
        }
    }
    assert_eq!(paged, expected, "pages concatenate to the full listing");
    // Pages of one status follow the cursors too, whatever the tasks of
    // other statuses between them.
    let working: Vec<TaskId> = listed_ids(store, &ListQuery::all().status(TaskStatus::Working));
    assert_eq!(working.len(), 4);
    let mut paged = Vec::new();
    let mut query = ListQuery::all().status(TaskStatus::Working).limit(1);
    loop {
        let page = store.list(&query).unwrap();
        assert!(page.tasks.iter().all(|t| t.status == TaskStatus::Working));
        paged.extend(page.tasks.into_iter().map(|t| t.id));
        match page.next_cursor {
            Some(c) => {
                query = ListQuery::all()
                    .status(TaskStatus::Working)
                    .limit(1)
                    .after(&c);
            }
            None => break,
        }
    }
    assert_eq!(
        paged, working,
        "a status's pages concatenate to its listing"
    );
    let exact = store.list(&ListQuery::all().limit(7)).unwrap();
    assert_eq!(exact.next_cursor, None, "no cursor when nothing is left");
    // The largest limit there is: everything, once (the scan asks for one
    // more than the limit, which overflowed).
    let most = store.list(&ListQuery::all().limit(usize::MAX)).unwrap();
    let most: Vec<TaskId> = most.tasks.into_iter().map(|t| t.id).collect();
    assert_eq!(most, expected, "limit(usize::MAX) lists everything");
}

pub(super) fn paging_is_stable_while_creating(store: &dyn TaskStore, setup: &Setup) {
    let mut before = Vec::new();
    for _ in 0..10 {
        setup.clock.advance(Duration::from_millis(1));
        before.push(store.create(NewTask::new()).unwrap().id);
    }
    let mut seen = Vec::new();
    let mut query = ListQuery::active().limit(4);
    loop {
        let page = store.list(&query).unwrap();
        seen.extend(page.tasks.into_iter().map(|t| t.id));
        // Tasks created between pages come after every task already listed.
        setup.clock.advance(Duration::from_millis(1));
        store.create(NewTask::new()).unwrap();
        match page.next_cursor {
            Some(c) => query = ListQuery::active().limit(4).after(&c),
            None => break,
        }
    }
    let distinct: std::collections::HashSet<&TaskId> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "no task listed twice");
    assert_eq!(
        &seen[..10],
        &before[..],
        "every earlier task listed once, in order"
    );
}

pub(super) fn invalid_cursor_is_an_error(store: &dyn TaskStore, _: &Setup) {
    for cursor in ["", "garbage", "c1.notanumber.x", "c1.1.../..", "c9.1.a"] {
        match store.list(&ListQuery::all().after(cursor)) {
            Err(Error::InvalidCursor { .. }) => {}
            other => panic!("cursor {cursor:?} must be InvalidCursor, got {other:?}"),
        }
    }
}

/// A page that meets expired tasks among the live ones leaves them out and
/// is still full: pages of every size hold `limit` live tasks each but the
/// last, concatenate to the live listing, and the expired tasks (running
/// or finished) are gone after.
pub(super) fn a_page_leaves_out_the_expired_tasks_it_meets(store: &dyn TaskStore, setup: &Setup) {
    let ttl = setup.lease;
    // A fresh set for each size: a listing deletes the expired tasks it
    // meets, so the next would meet none.
    for limit in 1..=4 {
        let mut live = Vec::new();
        let mut expired = Vec::new();
        for i in 0..15 {
            setup.clock.advance(Duration::from_millis(1));
            let task = if i % 3 == 1 {
                store.create(NewTask::new().ttl(ttl)).unwrap()
            } else {
                store.create(NewTask::new()).unwrap()
            };
            if i % 5 == 2 {
                applied(store.complete(&task.id, json!(i)).unwrap());
            }
            if i % 3 == 1 {
                expired.push(task.id);
            } else {
                live.push(task.id);
            }
        }
        setup.clock.advance(ttl);
        let mut paged = Vec::new();
        let mut query = ListQuery::all().limit(limit);
        loop {
            let page = store.list(&query).unwrap();
            paged.extend(page.tasks.iter().map(|t| t.id.clone()));
            match page.next_cursor {
                Some(c) => {
                    assert_eq!(page.tasks.len(), limit, "a page before the last is full");
                    query = ListQuery::all().limit(limit).after(&c);
                }
                None => break,
            }
        }
        assert_eq!(
            paged, live,
            "limit {limit}: the live tasks, each once, in order"
        );
        // Before any `get`, which deletes an expired task it meets too.
        assert_eq!(
            store.sweep().unwrap().deleted,
            0,
            "the pages deleted the expired tasks they met"
        );
        for id in &expired {
            assert!(store.get(id).unwrap().is_none(), "{id} expired");
        }
        for id in &live {
            assert!(store.delete(id).unwrap());
        }
    }
}

/// The ids `store` lists for `query`, in listing order.
pub(super) fn listed_ids(store: &dyn TaskStore, query: &ListQuery) -> Vec<TaskId> {
    store
        .list(query)
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| t.id)
        .collect()
}

pub(super) fn a_zero_limit_is_an_error(store: &dyn TaskStore, _: &Setup) {
    store.create(NewTask::new()).unwrap();
    match store.list(&ListQuery::all().limit(0)) {
        Err(Error::InvalidQuery { .. }) => {}
        other => panic!("limit(0) must be InvalidQuery, got {other:?}"),
    }
}
