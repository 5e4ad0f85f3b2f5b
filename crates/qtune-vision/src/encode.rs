//! Writing a [`Canvas`] as PNG or JPEG.

use std::path::Path;

use crate::draw::Canvas;
use crate::error::VisionError;

/// The file format of an output image, chosen by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFileFormat {
    Png,
    /// Baseline JPEG, quality 90, 4:2:0 (libjpeg's defaults otherwise).
    Jpeg,
}

/// JPEG quality of written images: the workload photos' own quality.
const JPEG_QUALITY: f32 = 90.0;

impl ImageFileFormat {
    /// `.png`, or `.jpg` / `.jpeg` (any case).
    pub fn from_path(path: &Path) -> Result<Self, VisionError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("png") => Ok(ImageFileFormat::Png),
            Some("jpg" | "jpeg") => Ok(ImageFileFormat::Jpeg),
            _ => Err(VisionError::UnknownImageFormat {
                path: path.to_path_buf(),
            }),
        }
    }

    /// The encoded file.
    pub fn encode(self, canvas: &Canvas) -> Result<Vec<u8>, String> {
        match self {
            ImageFileFormat::Png => encode_png(canvas),
            ImageFileFormat::Jpeg => encode_jpeg(canvas),
        }
    }
}

fn encode_png(canvas: &Canvas) -> Result<Vec<u8>, String> {
    let size = |v: usize| u32::try_from(v).map_err(|_| format!("{v} pixels is too large for PNG"));
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, size(canvas.width())?, size(canvas.height())?);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer
        .write_image_data(canvas.pixels())
        .map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

fn encode_jpeg(canvas: &Canvas) -> Result<Vec<u8>, String> {
    // libjpeg reports fatal errors through `error_exit`, which the mozjpeg
    // crate turns into an unwind carrying the message; stop it here (as
    // qtune-data's decoder does).
    std::panic::catch_unwind(|| -> Result<Vec<u8>, String> {
        let mut compress = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        // libjpeg-turbo's plain baseline settings: no trellis quantisation or
        // progressive scans, which cost time and are not needed for a preview.
        compress.set_fastest_defaults();
        compress.set_size(canvas.width(), canvas.height());
        compress.set_quality(JPEG_QUALITY);
        let mut started = compress
            .start_compress(Vec::new())
            .map_err(|e| e.to_string())?;
        started
            .write_scanlines(canvas.pixels())
            .map_err(|e| e.to_string())?;
        started.finish().map_err(|e| e.to_string())
    })
    .unwrap_or_else(|payload| {
        Err(payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "libjpeg failed".to_string()))
    })
}

/// Writes `canvas` to `path` as PNG or JPEG by its extension, atomically
/// (a temporary file renamed over `path`).
pub fn write_image(path: &Path, canvas: &Canvas) -> Result<(), VisionError> {
    let format = ImageFileFormat::from_path(path)?;
    let bytes = format
        .encode(canvas)
        .map_err(|message| VisionError::Encode {
            path: path.to_path_buf(),
            message,
        })?;
    qtune_tensor::write_atomic(path, |w| std::io::Write::write_all(w, &bytes)).map_err(|source| {
        VisionError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use qtune_data::{ColorLayout, Image, decode_image};

    use super::*;

    fn ramp(w: usize, h: usize) -> Image {
        let data = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [(x * 8) as u8, (y * 8) as u8, 128]))
            .collect();
        Image::new(w, h, ColorLayout::Rgb, data).unwrap()
    }

    #[test]
    fn formats_by_extension() {
        let f = |p: &str| ImageFileFormat::from_path(Path::new(p));
        assert_eq!(f("a/b.PNG").unwrap(), ImageFileFormat::Png);
        assert_eq!(f("b.jpg").unwrap(), ImageFileFormat::Jpeg);
        assert_eq!(f("b.Jpeg").unwrap(), ImageFileFormat::Jpeg);
        let e = f("out.bmp").unwrap_err().to_string();
        assert!(e.contains("out.bmp") && e.contains(".png"), "{e}");
        assert!(f("out").is_err());
    }

    #[test]
    fn png_round_trips_exactly_and_jpeg_closely() {
        let img = ramp(21, 13);
        let canvas = Canvas::from_image(&img);
        let png = ImageFileFormat::Png.encode(&canvas).unwrap();
        let back = decode_image(&png, Path::new("t.png"), ColorLayout::Rgb).unwrap();
        assert_eq!(back, img);
        let jpeg = ImageFileFormat::Jpeg.encode(&canvas).unwrap();
        let back = decode_image(&jpeg, Path::new("t.jpg"), ColorLayout::Rgb).unwrap();
        assert_eq!((back.width(), back.height()), (21, 13));
        let worst = back
            .data()
            .iter()
            .zip(img.data())
            .map(|(&a, &b)| a.abs_diff(b))
            .max()
            .unwrap();
        // Quality 90 on a smooth ramp: a few levels at most.
        assert!(worst <= 12, "JPEG differs by {worst} levels");
    }
}
