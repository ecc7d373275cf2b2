//! Replays every saved fuzz input through its target: the corpora under `fuzz/corpus/` and
//! the inputs that once failed, under `fuzz/regressions/`. Runs on stable in a few seconds,
//! so CI checks that nothing once found comes back.

use std::path::Path;

#[test]
fn every_saved_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut replayed = 0;
    for (name, target) in keyward_fuzz::TARGETS {
        let mut inputs = 0;
        for folder in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(folder).join(name)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name} fails on {}", path.display());
                inputs += 1;
            }
        }
        assert!(inputs > 0, "no saved inputs for {name}");
        replayed += inputs;
    }
    println!("replayed {replayed} saved fuzz inputs");
}
