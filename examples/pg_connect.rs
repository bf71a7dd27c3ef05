use std::time::Duration;
use taskstore::{NewTask, PgStore, TaskStore};

fn main() -> taskstore::Result<()> {
    // A libpq-style connection string (or a postgresql:// URL); the schema
    // is created, or migrated, on first use.
    let local = PgStore::connect("host=/var/run/postgresql user=app dbname=app")?;
    local.create(NewTask::new())?;

    // Or with every setting.
    let store = PgStore::builder("host=db.internal user=app password=secret dbname=app")
        .schema("taskstore") // default "taskstore"
        .pool_size(8) // connections this handle holds at most
        .instance_id("api-1")
        .lease(Duration::from_secs(30))
        .max_active(10_000)
        .open()?;
    store.create(NewTask::new())?;
    Ok(())
}
