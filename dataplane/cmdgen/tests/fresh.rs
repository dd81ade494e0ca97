//! The checked-in command table must be what the installed Redis reports.

#[test]
fn checked_in_table_matches_installed_redis() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyway-cmdgen"))
        .arg("--check")
        .output()
        .expect("run keyway-cmdgen");
    assert!(
        out.status.success(),
        "keyway-cmdgen --check failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
