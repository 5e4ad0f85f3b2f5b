//! Image files to 8-bit pixel arrays, mirroring what TPU-MLIR's reader
//! (`cv2.imread`) hands to its preprocessing.
//!
//! # How files are read
//!
//! Decoding uses the `image` crate for PNG and BMP and for reading the EXIF
//! orientation, and libjpeg-turbo's decoder (the C source bundled by the
//! `mozjpeg` crate) for JPEG pixels; CMYK/YCCK JPEGs, which libjpeg does not
//! convert to RGB, fall back to `image`'s zune-jpeg. The conversions follow
//! `cv2.imread`:
//!
//! | source | [`load_image`] (`IMREAD_COLOR`, RGB) | [`load_image_as`] `Gray` (`IMREAD_GRAYSCALE`) | `Rgba` (`IMREAD_UNCHANGED`, then RGBA) |
//! |---|---|---|---|
//! | gray | replicated to 3 channels | as is | replicated, A = 255 |
//! | gray + alpha | alpha dropped, replicated | alpha dropped | replicated, alpha kept |
//! | RGB | as is | `(4899 R + 9617 G + 1868 B + 8192) >> 14` | A = 255 |
//! | RGBA | alpha dropped (not composited) | alpha dropped, then as RGB | as is |
//! | palette (PNG/BMP) | expanded to RGB(A) by the decoder, then as above | | |
//! | 16-bit PNG | high byte (`png_set_strip_16`) | | |
//!
//! * **EXIF orientation** is applied, as `cv2.imread` does unless
//!   `IMREAD_IGNORE_ORIENTATION` is given. Note that `preprocess.py` (PIL)
//!   does *not* apply it; none of the workload images carries an orientation
//!   tag, so both agree there.
//! * **ICC profiles** are ignored, as by OpenCV and by PIL's `convert("RGB")`.
//! * **Gray**: a gray request on a YCbCr or RGB JPEG asks libjpeg for
//!   grayscale output, as OpenCV's JPEG reader does: the luma plane itself
//!   (YCbCr) or libjpeg's own RGB weights, not the formula above. OpenCV's PNG
//!   reader uses libpng's `rgb_to_gray`, which can differ from the formula by
//!   1. BMP matches exactly.
//! * **JPEG** pixels are libjpeg-turbo's, as in `cv2.imread` and PIL, with
//!   libjpeg's defaults: full-size output (no DCT scaling), the `JDCT_ISLOW`
//!   integer IDCT, "fancy" (triangular) chroma upsampling and block smoothing
//!   for progressive files. The bundled C code is built without SIMD; the
//!   SIMD paths of the libjpeg-turbo inside OpenCV and PIL produce the same
//!   bits for these settings. Measured: raw RGB equal to PIL's for all 97
//!   workload photos (images/val and images/calib). Pure-Rust decoders are
//!   not exact: jpeg-decoder (stb-derived IDCT) was off by up to 3 LSB,
//!   zune-jpeg (different chroma upsampling) by up to 9. Cost: 2-3 ms per
//!   640x480 4:2:0 photo on one core (examples/bench_preprocess.rs), about
//!   PIL's time and 1.5x zune-jpeg's.
//! * The format is detected from the file's leading bytes, falling back to the
//!   extension; only JPEG, PNG and BMP are accepted.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::error::DataError;

/// Channel layout of an [`Image`]'s interleaved pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorLayout {
    Gray,
    Rgb,
    Rgba,
}

impl ColorLayout {
    pub fn channels(self) -> usize {
        match self {
            ColorLayout::Gray => 1,
            ColorLayout::Rgb => 3,
            ColorLayout::Rgba => 4,
        }
    }
}

/// An 8-bit image: `height` rows of `width` pixels, channels interleaved
/// (HWC, row-major).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    width: usize,
    height: usize,
    layout: ColorLayout,
    data: Vec<u8>,
}

impl Image {
    /// Wraps interleaved pixels; `data.len()` must be `height * width * channels`.
    pub fn new(
        width: usize,
        height: usize,
        layout: ColorLayout,
        data: Vec<u8>,
    ) -> Result<Self, DataError> {
        let expected = width
            .checked_mul(height)
            .and_then(|n| n.checked_mul(layout.channels()));
        if expected != Some(data.len()) {
            return Err(DataError::Geometry {
                width,
                height,
                message: format!(
                    "{layout:?} pixel buffer has {} bytes, expected {}",
                    data.len(),
                    width
                        .saturating_mul(height)
                        .saturating_mul(layout.channels())
                ),
            });
        }
        Ok(Image {
            width,
            height,
            layout,
            data,
        })
    }

    /// An image filled with one value in every channel.
    pub fn filled(width: usize, height: usize, layout: ColorLayout, value: u8) -> Self {
        Image {
            width,
            height,
            layout,
            data: vec![value; width * height * layout.channels()],
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }
    pub fn height(&self) -> usize {
        self.height
    }
    pub fn layout(&self) -> ColorLayout {
        self.layout
    }
    pub fn channels(&self) -> usize {
        self.layout.channels()
    }
    /// Interleaved pixels, HWC.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }
    pub(crate) fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// One row of interleaved pixels.
    pub fn row(&self, y: usize) -> &[u8] {
        let n = self.width * self.channels();
        &self.data[y * n..(y + 1) * n]
    }

    /// Converts to another layout with the rules of the module table: alpha is
    /// dropped without compositing, gray is replicated, RGB to gray uses
    /// OpenCV's `COLOR_RGB2GRAY` fixed-point weights, a missing alpha is 255.
    pub fn to_layout(&self, layout: ColorLayout) -> Image {
        if layout == self.layout {
            return self.clone();
        }
        let c = self.channels();
        let mut out = Vec::with_capacity(self.width * self.height * layout.channels());
        for px in self.data.chunks_exact(c) {
            let (rgb, alpha) = match c {
                1 | 2 => ([px[0]; 3], px.get(1).copied()),
                _ => ([px[0], px[1], px[2]], px.get(3).copied()),
            };
            match layout {
                ColorLayout::Gray => out.push(if c <= 2 { px[0] } else { rgb_to_gray(rgb) }),
                ColorLayout::Rgb => out.extend_from_slice(&rgb),
                ColorLayout::Rgba => {
                    out.extend_from_slice(&rgb);
                    out.push(alpha.unwrap_or(u8::MAX));
                }
            }
        }
        Image {
            width: self.width,
            height: self.height,
            layout,
            data: out,
        }
    }
}

/// OpenCV's `cvtColor(RGB2GRAY)` for 8-bit data: weights 0.299, 0.587, 0.114
/// in 14-bit fixed point, rounded half up.
fn rgb_to_gray([r, g, b]: [u8; 3]) -> u8 {
    let y = (4899 * u32::from(r) + 9617 * u32::from(g) + 1868 * u32::from(b) + (1 << 13)) >> 14;
    // The weights sum to 2^14, so y <= 255.
    u8::try_from(y).unwrap_or(u8::MAX)
}

/// Reads an image as `cv2.imread(path, IMREAD_COLOR)` does, but in RGB order:
/// 8-bit, 3 channels. See the module documentation for the conversions.
pub fn load_image(path: impl AsRef<Path>) -> Result<Image, DataError> {
    load_image_as(path, ColorLayout::Rgb)
}

/// Reads an image into the given layout (`Gray` for TPU-MLIR's gray input,
/// `Rgba` for its rgba input, `Rgb` otherwise).
pub fn load_image_as(path: impl AsRef<Path>, layout: ColorLayout) -> Result<Image, DataError> {
    let path = path.as_ref();
    let bytes = fs_err::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_image(&bytes, path, layout)
}

/// Decodes an in-memory image file; `path` is only used for the format
/// fallback and in error messages.
pub fn decode_image(bytes: &[u8], path: &Path, layout: ColorLayout) -> Result<Image, DataError> {
    // Some decoders end their messages with a newline: one line per error.
    let fail = |message: String| DataError::Decode {
        path: path.to_path_buf(),
        message: message.trim_end().replace('\n', "; "),
    };
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| fail(e.to_string()))?;
    let format = match reader.format() {
        Some(f) => f,
        None => ImageFormat::from_path(path)
            .map_err(|_| fail("unrecognised image format (expected JPEG, PNG or BMP)".into()))?,
    };
    if !matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Bmp
    ) {
        return Err(fail(format!(
            "{format:?} images are not supported (expected JPEG, PNG or BMP)"
        )));
    }
    let mut reader = reader;
    reader.set_format(format);
    // Only the headers are parsed here; pixels are decoded below.
    let mut decoder = reader.into_decoder().map_err(|e| fail(e.to_string()))?;
    check_dimensions(decoder.dimensions()).map_err(fail)?;
    let orientation = decoder.orientation().map_err(|e| fail(e.to_string()))?;
    let jpeg = if format == ImageFormat::Jpeg {
        decode_jpeg(bytes, layout).map_err(fail)?
    } else {
        None
    };
    let image = match jpeg {
        Some(image) => {
            // Orientation is applied through `image`'s implementation, which
            // covers all eight EXIF cases.
            let mut dynamic = to_dynamic(image).map_err(fail)?;
            dynamic.apply_orientation(orientation);
            from_dynamic(dynamic).map_err(fail)?
        }
        None => {
            let mut decoded =
                DynamicImage::from_decoder(decoder).map_err(|e| fail(e.to_string()))?;
            decoded.apply_orientation(orientation);
            from_dynamic(decoded).map_err(fail)?
        }
    };
    Ok(if image.layout == layout {
        image
    } else {
        image.to_layout(layout)
    })
}

/// OpenCV's limits on a decoded image (`CV_IO_MAX_IMAGE_WIDTH`,
/// `CV_IO_MAX_IMAGE_HEIGHT`, `CV_IO_MAX_IMAGE_PIXELS`, which `cv2.imread`
/// applies): a header claiming more is refused before any pixel buffer is
/// allocated. A few bytes of JPEG can claim 65500 x 65500 pixels.
pub const MAX_IMAGE_SIDE: u32 = 1 << 20;
/// See [`MAX_IMAGE_SIDE`].
pub const MAX_IMAGE_PIXELS: u64 = 1 << 30;

fn check_dimensions((width, height): (u32, u32)) -> Result<(), String> {
    let pixels = u64::from(width) * u64::from(height);
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE || pixels > MAX_IMAGE_PIXELS {
        return Err(format!(
            "the header claims {width} x {height} pixels, more than the {MAX_IMAGE_PIXELS} pixels (and {MAX_IMAGE_SIDE} per side) that OpenCV's imread accepts"
        ));
    }
    if width == 0 || height == 0 {
        return Err(format!("the header claims {width} x {height} pixels"));
    }
    Ok(())
}

/// Decodes gray, YCbCr and RGB JPEGs with libjpeg-turbo; `None` for the
/// other color spaces (CMYK, YCCK), which go through `image`.
///
/// Gray output is asked of libjpeg when `layout` is `Gray` (see the module
/// documentation); otherwise gray files stay gray and color files become RGB.
fn decode_jpeg(bytes: &[u8], layout: ColorLayout) -> Result<Option<Image>, String> {
    use mozjpeg::ColorSpace;

    // libjpeg reports fatal errors through `error_exit`, which must not
    // return; the mozjpeg crate makes it unwind with the message as payload
    // (`resume_unwind`, so no panic hook runs), and this is where the unwind
    // stops. Warnings are silenced, not errors: a file cut inside its
    // entropy-coded data decodes with the missing blocks filled, as in
    // cv2.imread (PIL refuses it unless `ImageFile.LOAD_TRUNCATED_IMAGES`).
    let decoded = std::panic::catch_unwind(|| -> Result<Option<Image>, String> {
        let decompress = mozjpeg::Decompress::new_mem(bytes).map_err(|e| e.to_string())?;
        // Neither scaling, DCT method, upsampling nor block smoothing is
        // touched: libjpeg's defaults are what PIL and OpenCV use.
        let (started, out_layout) = match (decompress.color_space(), layout) {
            (ColorSpace::JCS_GRAYSCALE, _)
            | (ColorSpace::JCS_YCbCr | ColorSpace::JCS_RGB, ColorLayout::Gray) => {
                (decompress.grayscale(), ColorLayout::Gray)
            }
            (ColorSpace::JCS_YCbCr | ColorSpace::JCS_RGB, _) => {
                (decompress.rgb(), ColorLayout::Rgb)
            }
            _ => return Ok(None),
        };
        let mut started = started.map_err(|e| e.to_string())?;
        let (width, height) = (started.width(), started.height());
        // libjpeg's own view of the header (the one `read_scanlines` sizes
        // its buffer by) is checked as well as `image`'s.
        check_dimensions((
            u32::try_from(width).unwrap_or(u32::MAX),
            u32::try_from(height).unwrap_or(u32::MAX),
        ))?;
        let pixels = started.read_scanlines::<u8>().map_err(|e| e.to_string())?;
        started.finish().map_err(|e| e.to_string())?;
        Image::new(width, height, out_layout, pixels)
            .map(Some)
            .map_err(|e| e.to_string())
    });
    decoded.unwrap_or_else(|payload| {
        // libjpeg's errors carry a `String`; a panic in the wrapper itself
        // would carry a `&str`.
        Err(match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(payload) => payload
                .downcast_ref::<&str>()
                .map_or("libjpeg failed without a message", |m| m)
                .to_string(),
        })
    })
}

fn to_dynamic(img: Image) -> Result<DynamicImage, String> {
    let (w, h) = (
        u32::try_from(img.width).map_err(|e| e.to_string())?,
        u32::try_from(img.height).map_err(|e| e.to_string())?,
    );
    let bad = || "pixel buffer does not match its size".to_string();
    Ok(match img.layout {
        ColorLayout::Gray => {
            DynamicImage::ImageLuma8(image::GrayImage::from_raw(w, h, img.data).ok_or_else(bad)?)
        }
        ColorLayout::Rgb => {
            DynamicImage::ImageRgb8(image::RgbImage::from_raw(w, h, img.data).ok_or_else(bad)?)
        }
        ColorLayout::Rgba => {
            DynamicImage::ImageRgba8(image::RgbaImage::from_raw(w, h, img.data).ok_or_else(bad)?)
        }
    })
}

/// Flattens a decoded image to 8-bit Gray, RGB or RGBA. Gray + alpha becomes
/// RGBA (gray replicated) so that the alpha survives for an `Rgba` request;
/// 16-bit samples keep their high byte, as OpenCV's `png_set_strip_16`.
fn from_dynamic(img: DynamicImage) -> Result<Image, String> {
    let width = usize::try_from(img.width()).map_err(|e| e.to_string())?;
    let height = usize::try_from(img.height()).map_err(|e| e.to_string())?;
    let high_byte =
        |v: &[u16]| -> Vec<u8> { v.iter().map(|&s| (s >> 8).to_le_bytes()[0]).collect() };
    let (layout, data) = match img {
        DynamicImage::ImageLuma8(b) => (ColorLayout::Gray, b.into_raw()),
        DynamicImage::ImageRgb8(b) => (ColorLayout::Rgb, b.into_raw()),
        DynamicImage::ImageRgba8(b) => (ColorLayout::Rgba, b.into_raw()),
        DynamicImage::ImageLumaA8(b) => (ColorLayout::Rgba, gray_alpha_to_rgba(b.as_raw())),
        DynamicImage::ImageLuma16(b) => (ColorLayout::Gray, high_byte(b.as_raw())),
        DynamicImage::ImageRgb16(b) => (ColorLayout::Rgb, high_byte(b.as_raw())),
        DynamicImage::ImageRgba16(b) => (ColorLayout::Rgba, high_byte(b.as_raw())),
        DynamicImage::ImageLumaA16(b) => (
            ColorLayout::Rgba,
            gray_alpha_to_rgba(&high_byte(b.as_raw())),
        ),
        other => return Err(format!("unsupported pixel type {:?}", other.color())),
    };
    Image::new(width, height, layout, data).map_err(|e| e.to_string())
}

fn gray_alpha_to_rgba(src: &[u8]) -> Vec<u8> {
    src.chunks_exact(2)
        .flat_map(|p| [p[0], p[0], p[0], p[1]])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_conversions_follow_opencv() {
        let rgba = Image::new(
            2,
            1,
            ColorLayout::Rgba,
            vec![10, 20, 30, 0, 255, 255, 255, 7],
        )
        .unwrap();
        assert_eq!(
            rgba.to_layout(ColorLayout::Rgb).data(),
            &[10, 20, 30, 255, 255, 255]
        );
        let gray = rgba.to_layout(ColorLayout::Gray);
        // (4899*10 + 9617*20 + 1868*30 + 8192) >> 14 = 18
        assert_eq!(gray.data(), &[18, 255]);
        assert_eq!(
            gray.to_layout(ColorLayout::Rgba).data(),
            &[18, 18, 18, 255, 255, 255, 255, 255]
        );
        assert!(Image::new(2, 2, ColorLayout::Rgb, vec![0; 11]).is_err());
    }

    #[test]
    fn decode_errors_name_the_file() {
        let e =
            decode_image(b"not an image", Path::new("x/broken.jpg"), ColorLayout::Rgb).unwrap_err();
        assert!(e.to_string().contains("x/broken.jpg"), "{e}");
        let e = load_image("/nonexistent/dir/missing.png").unwrap_err();
        assert!(e.to_string().contains("missing.png"), "{e}");
        let e = decode_image(b"GIF89a....", Path::new("a.gif"), ColorLayout::Rgb).unwrap_err();
        assert!(e.to_string().contains("a.gif"), "{e}");
    }

    /// A JPEG made by libjpeg's encoder: `channels` 1 (gray) or 3 (RGB in,
    /// YCbCr 4:2:0 in the file), a smooth ramp, quality 95.
    fn encode_jpeg(width: usize, height: usize, channels: usize, progressive: bool) -> Vec<u8> {
        // Kept within 60..=255 without wrapping, so that no RGB sample clips.
        let pixels: Vec<u8> = (0..width * height * channels)
            .map(|i| {
                let (pixel, c) = (i / channels, i % channels);
                let (x, y) = (pixel % width, pixel / width);
                u8::try_from((60 + 4 * x + 3 * y + 15 * c).min(255)).unwrap()
            })
            .collect();
        std::panic::catch_unwind(|| {
            let color = if channels == 1 {
                mozjpeg::ColorSpace::JCS_GRAYSCALE
            } else {
                mozjpeg::ColorSpace::JCS_RGB
            };
            let mut compress = mozjpeg::Compress::new(color);
            compress.set_size(width, height);
            compress.set_quality(95.0);
            if progressive {
                compress.set_progressive_mode();
            }
            let mut started = compress.start_compress(Vec::new()).unwrap();
            started.write_scanlines(&pixels).unwrap();
            started.finish().unwrap()
        })
        .unwrap()
    }

    #[test]
    fn jpeg_layouts_follow_imread() {
        let path = Path::new("t.jpg");
        let gray_file = encode_jpeg(13, 7, 1, false);
        let gray = decode_image(&gray_file, path, ColorLayout::Gray).unwrap();
        assert_eq!((gray.width(), gray.height()), (13, 7));
        let rgb = decode_image(&gray_file, path, ColorLayout::Rgb).unwrap();
        assert_eq!(rgb, gray.to_layout(ColorLayout::Rgb));
        let rgba = decode_image(&gray_file, path, ColorLayout::Rgba).unwrap();
        assert_eq!(rgba, gray.to_layout(ColorLayout::Rgba));

        for progressive in [false, true] {
            let color_file = encode_jpeg(17, 9, 3, progressive);
            let rgb = decode_image(&color_file, path, ColorLayout::Rgb).unwrap();
            assert_eq!(
                (rgb.width(), rgb.height(), rgb.layout()),
                (17, 9, ColorLayout::Rgb)
            );
            // Gray comes from libjpeg (the luma plane), which is within 1 of
            // the RGB -> gray formula applied to libjpeg's RGB output.
            let gray = decode_image(&color_file, path, ColorLayout::Gray).unwrap();
            let converted = rgb.to_layout(ColorLayout::Gray);
            assert_eq!(gray.layout(), ColorLayout::Gray);
            for (a, b) in gray.data().iter().zip(converted.data()) {
                assert!(a.abs_diff(*b) <= 1, "progressive {progressive}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn libjpeg_errors_are_decode_errors() {
        // SOI, then a baseline SOF0 declaring a 0x0 image: a fatal libjpeg
        // error while reading the header.
        let empty = [
            0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0x11,
            0x00, 0xFF, 0xD9,
        ];
        let message = decode_jpeg(&empty, ColorLayout::Rgb).unwrap_err();
        assert!(message.contains("libjpeg"), "{message}");
        let e = decode_image(&empty, Path::new("d/empty.jpg"), ColorLayout::Rgb).unwrap_err();
        assert!(e.to_string().contains("d/empty.jpg"), "{e}");

        // Cut inside the entropy-coded data: libjpeg warns and completes the
        // image, as cv2.imread does, rather than failing.
        let file = encode_jpeg(32, 32, 3, false);
        let truncated = &file[..file.len() * 3 / 4];
        let image = decode_image(truncated, Path::new("cut.jpg"), ColorLayout::Rgb).unwrap();
        assert_eq!((image.width(), image.height()), (32, 32));
    }
}
