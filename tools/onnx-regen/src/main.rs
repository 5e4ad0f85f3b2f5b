//! Regenerates the prost code for `onnx.proto` without `protoc`.
//!
//! Usage (from the repository root):
//!
//! ```text
//! cargo run --manifest-path tools/onnx-regen/Cargo.toml -- \
//!     crates/qtune-onnx/proto/onnx.proto crates/qtune-onnx/src/proto
//! ```
//!
//! `protox` parses the .proto into a `FileDescriptorSet` in pure Rust; `prost-build` turns it
//! into Rust. All `bytes` fields become `bytes::Bytes` (`.bytes(["."])`) so that decoding a
//! model from a `Bytes` buffer is zero-copy for `TensorProto.raw_data`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 2 || args.iter().any(|a| a == "-h" || a == "--help") {
        eprintln!("usage: onnx-regen <path/to/onnx.proto> <output dir>");
        return ExitCode::from(2);
    }
    match run(Path::new(&args[0]), Path::new(&args[1])) {
        Ok(out) => {
            println!("wrote {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("onnx-regen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(proto: &Path, out_dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let include = proto.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = proto.file_name().ok_or("proto path has no file name")?;
    let fds = protox::compile([Path::new(file_name)], [include])?;
    std::fs::create_dir_all(out_dir)?;
    prost_build::Config::new()
        .bytes(["."])
        .out_dir(out_dir)
        .compile_fds(fds)?;
    // prost-build names the output after the proto package: `onnx` -> onnx.rs.
    let out = out_dir.join("onnx.rs");
    if !out.is_file() {
        return Err(format!("expected {} to be generated", out.display()).into());
    }
    Ok(out)
}
