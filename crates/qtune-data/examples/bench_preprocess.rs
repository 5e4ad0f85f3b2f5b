//! Single-core timing of JPEG decode + preprocess (resize to 224x224, rgb,
//! NCHW float32), the per-image cost of calibration input preparation.
//!
//! `cargo run --release -p qtune-data --example bench_preprocess -- [IMAGE] [ITERATIONS]`
//!
//! Defaults to a 640x480 workload photo. Also times zune-jpeg (through
//! `image`) for comparison with the libjpeg-turbo path used by `load_image`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use qtune_data::{
    ColorLayout, PixelFormat, PreprocessConfig, decode_image, preprocess, resize_bilinear,
};

const DEFAULT_IMAGE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/workloads/images/val/opencv_scenetext_scenetext01.jpg"
);

fn time_ms(iterations: u32, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_secs_f64() * 1e3 / f64::from(iterations)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().unwrap_or_else(|| DEFAULT_IMAGE.to_string()));
    let iterations: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(50);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let mut cfg = PreprocessConfig::new([1, 3, 224, 224]);
    cfg.pixel_format = PixelFormat::Rgb;
    cfg.mean = vec![127.0; 3];
    cfg.scale = vec![1.0 / 128.0; 3];

    let img = match decode_image(&bytes, &path, ColorLayout::Rgb) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{} ({}x{}), {iterations} iterations, one thread",
        path.display(),
        img.width(),
        img.height()
    );
    let decode = time_ms(iterations, || {
        std::hint::black_box(decode_image(&bytes, &path, ColorLayout::Rgb).ok());
    });
    let zune = time_ms(iterations, || {
        std::hint::black_box(image::load_from_memory(&bytes).ok());
    });
    let resize = time_ms(iterations, || {
        std::hint::black_box(resize_bilinear(&img, 224, 224).ok());
    });
    let pre = time_ms(iterations, || {
        std::hint::black_box(preprocess(&img, &cfg).ok());
    });
    let total = time_ms(iterations, || {
        let img = decode_image(&bytes, &path, ColorLayout::Rgb);
        std::hint::black_box(img.ok().map(|i| preprocess(&i, &cfg)));
    });
    println!("decode (libjpeg-turbo, load_image path)  {decode:8.3} ms");
    println!("decode (zune-jpeg via image, comparison) {zune:8.3} ms");
    println!("resize to 224x224 (u8)                   {resize:8.3} ms");
    println!("preprocess (resize + normalise, f32)     {pre:8.3} ms");
    println!("decode + preprocess                      {total:8.3} ms");
    ExitCode::SUCCESS
}
