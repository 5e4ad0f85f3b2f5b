//! Replays the regression corpus: every file under `corpus/<target>/` (the
//! seeds the fuzz script starts from, and every crash it found, once fixed)
//! goes through its target again. A panic fails this test; an abort or an
//! allocation failure kills it, which fails it too.

use std::path::PathBuf;

#[test]
fn every_corpus_input_returns_cleanly() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut total = 0;
    let mut per_target = Vec::new();
    for &(name, target) in qtune_fuzz::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no corpus for target {name}");
        for f in &files {
            let data = std::fs::read(f).unwrap();
            eprintln!("{name}: {}", f.display());
            target(&data);
        }
        total += files.len();
        per_target.push(format!("{name} {}", files.len()));
    }
    eprintln!("replayed {total} inputs ({})", per_target.join(", "));
}
