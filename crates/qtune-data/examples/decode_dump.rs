//! Writes each image's decoded RGB pixels as raw bytes (`<out_dir>/<stem>.rgb`),
//! for comparing the JPEG decoder with libjpeg-turbo from Python.
//!
//! `cargo run -p qtune-data --example decode_dump -- OUT_DIR IMAGE...`

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((out_dir, images)) = args.split_first() else {
        eprintln!("usage: decode_dump OUT_DIR IMAGE...");
        return ExitCode::from(2);
    };
    for path in images {
        match qtune_data::load_image(path) {
            Ok(img) => {
                let stem = Path::new(path)
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy();
                let out = Path::new(out_dir).join(format!("{stem}.rgb"));
                if let Err(e) = std::fs::write(&out, img.data()) {
                    eprintln!("{}: {e}", out.display());
                    return ExitCode::FAILURE;
                }
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
