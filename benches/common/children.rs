//! Writer processes for the benches: this bench binary re-run as children
//! that open their own handles, say "ready", wait to be released together
//! by a "go" line, run, and report their timed total as "timed <ns>". Start
//! up, opening and untimed work stay outside every total.

#![allow(dead_code)] // each bench uses its own part

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts `n` children of this binary with `var` set to `spec`, releases
/// them at once when all are ready, and returns each one's timed total.
pub fn run(var: &str, spec: &str, n: usize) -> Vec<Duration> {
    let mut children: Vec<_> = (0..n)
        .map(|_| {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .env(var, spec)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let out = BufReader::new(child.stdout.take().unwrap());
            (child, out)
        })
        .collect();
    let line = |out: &mut BufReader<_>| {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        line.trim().to_owned()
    };
    for (_, out) in &mut children {
        assert_eq!(line(out), "ready");
    }
    for (child, _) in &mut children {
        writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    }
    let timed = children
        .iter_mut()
        .map(|(_, out)| {
            let reported = line(out);
            let nanos = reported
                .strip_prefix("timed ")
                .unwrap_or_else(|| panic!("a writer reported {reported:?}"));
            Duration::from_nanos(nanos.parse().unwrap())
        })
        .collect();
    for (child, _) in &mut children {
        assert!(child.wait().unwrap().success());
    }
    timed
}

/// In a child: says it is ready and waits to be released.
pub fn ready() {
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    assert_eq!(go.trim(), "go");
}

/// In a child: reports its timed total.
pub fn report(timed: Duration) {
    println!("timed {}", timed.as_nanos());
}
