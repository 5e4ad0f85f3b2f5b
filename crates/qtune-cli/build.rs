//! Makes the `.py` spellings of the tools (`model_deploy.py`, ...) next to
//! the binaries of this build; see `src/py_names.rs` for why they are links.

include!("src/py_names.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/py_names.rs");
    // OUT_DIR is <profile dir>/build/qtune-cli-<hash>/out, and the binaries
    // go to the profile dir (target/debug, target/release, or
    // target/<triple>/<profile>). A separate `build.build-dir` breaks this
    // layout: the links are then made where the intermediate files go and
    // `qtune install-py-names --dir <bin dir>` makes them instead.
    let Some(out_dir) = std::env::var_os("OUT_DIR") else {
        println!("cargo:warning=OUT_DIR is not set: no .py links made");
        return;
    };
    let out_dir = std::path::PathBuf::from(out_dir);
    let Some(profile_dir) = out_dir.ancestors().nth(3) else {
        println!("cargo:warning=unexpected OUT_DIR layout: no .py links made");
        return;
    };
    if let Err(e) = link_py_names(profile_dir, false) {
        println!("cargo:warning=.py links of the tools: {e}");
    }
}
