//! The compiled `examples/mcp_server.rs`, for the tests that run it as a
//! real server process.
//!
//! `cargo test` builds examples before it runs tests, with the test
//! binaries' features; a focused run (`--test mcp`) builds it here. Either
//! way the example is built with exactly the features this test binary was
//! built with, in the same profile and target directory, so under
//! `cargo test --all-features` the build below is a no-op: a different
//! feature set would compile the whole crate (and its dependencies) a second
//! time, and overwrite the binary another test binary just used.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The server binary, built on first use.
pub fn mcp_server() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        // target/<profile>/deps/<test>-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let binary = profile_dir.join("examples").join("mcp_server");
        let features = features();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build
            .args(["build", "--quiet", "--example", "mcp_server", "--features"])
            .arg(features.join(","))
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if let Some(target_dir) = profile_dir.parent() {
            build.arg("--target-dir").arg(target_dir);
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building examples/mcp_server.rs failed");
        assert!(binary.exists(), "no server binary at {}", binary.display());
        binary
    })
}

/// Every cargo feature this test binary was built with (the example needs
/// `mcp`, which every test that runs it requires). Panics if Cargo.toml
/// declares a feature this list does not know, which would make the build
/// above differ from the test binary's.
fn features() -> Vec<&'static str> {
    let known = [
        ("cli", cfg!(feature = "cli")),
        ("compare", cfg!(feature = "compare")),
        ("conformance", cfg!(feature = "conformance")),
        ("fault-injection", cfg!(feature = "fault-injection")),
        ("mcp", true),
        ("metrics", cfg!(feature = "metrics")),
        ("postgres", cfg!(feature = "postgres")),
    ];
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("read Cargo.toml");
    let declared = manifest
        .lines()
        .skip_while(|line| line.trim() != "[features]")
        .skip(1)
        .take_while(|line| !line.starts_with('['))
        .filter_map(|line| line.split_once('=').map(|(name, _)| name.trim()))
        .filter(|name| !name.is_empty() && !name.starts_with('#') && *name != "default");
    for name in declared {
        assert!(
            known.iter().any(|(k, _)| *k == name),
            "tests/common/example.rs does not know the cargo feature {name:?}"
        );
    }
    known
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect()
}
