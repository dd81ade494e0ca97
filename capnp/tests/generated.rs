//! The generated Rust code under `src/generated/` is committed (so building
//! keyway needs no Cap'n Proto compiler); this test regenerates it with the
//! installed `capnp` compiler (Debian `capnproto`) and fails if the committed
//! files differ. Regenerate with:
//!
//!     KEYWAY_CAPNP_REGEN=1 cargo test -p keyway-capnp --test generated

use std::path::Path;

#[test]
fn committed_code_matches_the_schemas() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("keyway-capnp-gen-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    capnpc::CompilerCommand::new()
        .src_prefix(root.join("schema"))
        .file(root.join("schema/snapshot.capnp"))
        .file(root.join("schema/control.capnp"))
        .default_parent_module(vec!["generated".into()])
        .output_path(&out)
        .run()
        .expect("the capnp compiler (Debian package capnproto) must be installed");
    let regen = std::env::var_os("KEYWAY_CAPNP_REGEN").is_some();
    let mut stale = Vec::new();
    for name in ["snapshot_capnp.rs", "control_capnp.rs"] {
        let fresh = std::fs::read(out.join(name)).unwrap();
        let committed_path = root.join("src/generated").join(name);
        if regen {
            std::fs::write(&committed_path, &fresh).unwrap();
        } else if std::fs::read(&committed_path).ok().as_deref() != Some(&fresh[..]) {
            stale.push(name);
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    assert!(stale.is_empty(), "stale generated code {stale:?}: run KEYWAY_CAPNP_REGEN=1 cargo test -p keyway-capnp --test generated");
}
