//! Paired before/after: the same operations on the store at an earlier
//! commit (`old`, see `./run`) and on this checkout (`new`), in one
//! process, taking turns round by round; the median of the rounds' mean
//! time per operation.
use std::time::{Duration, Instant};

fn payload() -> serde_json::Value {
    serde_json::json!({"content": [{"type": "text", "text": "x".repeat(512)}], "isError": false})
}

macro_rules! ops {
    ($m:ident, $krate:ident) => {
        mod $m {
            use super::*;
            use ::$krate::{
                Durability, FileStore, ListQuery, NewTask, TaskId, TaskStore, TaskUpdate,
            };
            pub struct S {
                pub s: FileStore,
                pub running: TaskId,
                _d: tempfile::TempDir,
            }
            pub fn open() -> S {
                let d = tempfile::tempdir().unwrap();
                let s = FileStore::builder(d.path())
                    .durability(Durability::Immediate)
                    .open()
                    .unwrap();
                let mut running = None;
                for _ in 0..10 {
                    let id = s.create(NewTask::new()).unwrap().id;
                    let _ = s
                        .update(&id, TaskUpdate::new().metadata("progress", 1))
                        .unwrap();
                    running = Some(id);
                }
                S {
                    s,
                    running: running.unwrap(),
                    _d: d,
                }
            }
            pub fn create(s: &S, n: usize) -> Duration {
                let mut t = Duration::ZERO;
                for _ in 0..n {
                    let start = Instant::now();
                    let id = s.s.create(NewTask::new()).unwrap().id;
                    t += start.elapsed();
                    assert!(s.s.delete(&id).unwrap());
                }
                t / n as u32
            }
            pub fn complete(s: &S, n: usize) -> Duration {
                let mut t = Duration::ZERO;
                for _ in 0..n {
                    let id = s.s.create(NewTask::new()).unwrap().id;
                    let start = Instant::now();
                    let _ = s.s.complete(&id, payload()).unwrap();
                    t += start.elapsed();
                    assert!(s.s.delete(&id).unwrap());
                }
                t / n as u32
            }
            pub fn get(s: &S, n: usize) -> Duration {
                let start = Instant::now();
                for _ in 0..n {
                    std::hint::black_box(s.s.get(&s.running).unwrap());
                }
                start.elapsed() / n as u32
            }
            pub fn list(s: &S, n: usize) -> Duration {
                let start = Instant::now();
                for _ in 0..n {
                    assert_eq!(s.s.list(&ListQuery::active()).unwrap().tasks.len(), 10);
                }
                start.elapsed() / n as u32
            }
        }
    };
}
ops!(m_old, old);
ops!(m_new, new);

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .map(|v| v.parse().unwrap())
        .unwrap_or(15);
    let (o, n) = (m_old::open(), m_new::open());
    type Op<S> = fn(&S, usize) -> Duration;
    let rows: [(&str, Op<m_old::S>, Op<m_new::S>, usize); 4] = [
        ("create (Immediate)", m_old::create, m_new::create, 40),
        ("complete (Immediate)", m_old::complete, m_new::complete, 40),
        ("get (a running task)", m_old::get, m_new::get, 20_000),
        ("list_active (10 running)", m_old::list, m_new::list, 5_000),
    ];
    println!("| operation | f7e7eaf | HEAD | HEAD / f7e7eaf |");
    println!("|---|---|---|---|");
    for (name, fo, fnew, per) in rows {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            if r % 2 == 0 {
                a.push(fo(&o, per));
                b.push(fnew(&n, per));
            } else {
                b.push(fnew(&n, per));
                a.push(fo(&o, per));
            }
        }
        let (a, b) = (median(a), median(b));
        println!(
            "| {name} | {a:.1?} | {b:.1?} | {:.2} |",
            b.as_secs_f64() / a.as_secs_f64()
        );
    }
}
