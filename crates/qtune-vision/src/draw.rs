//! Box outlines drawn into an RGB image.

use qtune_data::{ColorLayout, Image};

use crate::boxes::{BoundingBox, Detection};

/// An 8-bit RGB image being drawn on: `height` rows of `width` pixels,
/// channels interleaved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    /// The image as RGB (gray is replicated, alpha dropped).
    pub fn from_image(image: &Image) -> Self {
        let rgb = if image.layout() == ColorLayout::Rgb {
            image.clone()
        } else {
            image.to_layout(ColorLayout::Rgb)
        };
        Canvas {
            width: rgb.width(),
            height: rgb.height(),
            pixels: rgb.into_data(),
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }
    pub fn height(&self) -> usize {
        self.height
    }
    /// Interleaved RGB pixels, row-major.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Fills the pixels `x0..=x1` x `y0..=y1`, clipped to the image.
    fn fill(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, color: [u8; 3]) {
        if self.width == 0 || self.height == 0 {
            return;
        }
        let (x1, y1) = (x1.min(self.width - 1), y1.min(self.height - 1));
        for y in y0..=y1 {
            let row = &mut self.pixels[y * self.width * 3..(y + 1) * self.width * 3];
            for x in x0..=x1 {
                row[x * 3..x * 3 + 3].copy_from_slice(&color);
            }
        }
    }

    /// Draws the outline of `b` (continuous pixel coordinates, see
    /// [`BoundingBox`]), `thickness` pixels wide, inside the box: the
    /// outermost pixels drawn are the ones the box edges pass through.
    pub fn draw_box(&mut self, b: &BoundingBox, color: [u8; 3], thickness: usize) {
        if self.width == 0 || self.height == 0 || thickness == 0 {
            return;
        }
        let x0 = pixel_index(b.x1, self.width);
        let y0 = pixel_index(b.y1, self.height);
        // The last pixel a right edge at x2 covers is ceil(x2) - 1.
        let x1 = pixel_index(b.x2.ceil() - 1.0, self.width).max(x0);
        let y1 = pixel_index(b.y2.ceil() - 1.0, self.height).max(y0);
        let t = thickness - 1;
        self.fill(x0, y0, x1, (y0 + t).min(y1), color);
        self.fill(x0, y1.saturating_sub(t).max(y0), x1, y1, color);
        self.fill(x0, y0, (x0 + t).min(x1), y1, color);
        self.fill(x1.saturating_sub(t).max(x0), y0, x1, y1, color);
    }
}

/// The pixel holding coordinate `v`, clamped to `0..len` (NaN gives 0).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn pixel_index(v: f32, len: usize) -> usize {
    if v >= 0.0 {
        // `as` saturates; floor first so that the cast truncates nothing.
        (v.floor() as usize).min(len.saturating_sub(1))
    } else {
        0
    }
}

/// Twenty colours far apart from each other and from typical photo content.
const PALETTE: [[u8; 3]; 20] = [
    [255, 56, 56],
    [50, 205, 50],
    [30, 144, 255],
    [255, 215, 0],
    [255, 0, 255],
    [0, 255, 255],
    [255, 140, 0],
    [138, 43, 226],
    [0, 128, 128],
    [255, 105, 180],
    [154, 205, 50],
    [0, 0, 205],
    [210, 105, 30],
    [127, 255, 212],
    [220, 20, 60],
    [173, 255, 47],
    [255, 250, 205],
    [75, 0, 130],
    [255, 160, 122],
    [0, 191, 255],
];

/// The colour of class `class` (classes past the palette reuse it).
pub fn class_color(class: usize) -> [u8; 3] {
    PALETTE[class % PALETTE.len()]
}

/// The outline width for an image: 2 pixels, 3 from 1000 pixels on a side.
pub fn default_thickness(width: usize, height: usize) -> usize {
    if width.max(height) >= 1000 { 3 } else { 2 }
}

/// Draws every detection in its class colour, lowest score first so that
/// the best boxes end on top.
pub fn draw_detections(canvas: &mut Canvas, detections: &[Detection]) {
    let thickness = default_thickness(canvas.width, canvas.height);
    for d in detections.iter().rev() {
        canvas.draw_box(&d.bbox, class_color(d.class), thickness);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn black(w: usize, h: usize) -> Canvas {
        Canvas::from_image(&Image::filled(w, h, ColorLayout::Rgb, 0))
    }

    /// The image as rows of '#' (drawn) and '.' (untouched).
    fn picture(c: &Canvas) -> Vec<String> {
        c.pixels()
            .chunks(c.width() * 3)
            .map(|row| {
                row.chunks(3)
                    .map(|p| if p == [0, 0, 0] { '.' } else { '#' })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn outline_is_inside_the_box() {
        let mut c = black(10, 8);
        c.draw_box(
            &BoundingBox {
                x1: 2.0,
                y1: 1.5,
                x2: 8.0,
                y2: 7.0,
            },
            [255, 0, 0],
            2,
        );
        let expect = [
            "..........",
            "..######..",
            "..######..",
            "..##..##..",
            "..##..##..",
            "..######..",
            "..######..",
            "..........",
        ];
        assert_eq!(picture(&c), expect);
        assert_eq!(&c.pixels()[(10 + 2) * 3..(10 + 2) * 3 + 3], &[255, 0, 0]);
    }

    #[test]
    fn boxes_past_the_edges_and_degenerate_boxes_stay_inside() {
        let mut c = black(4, 3);
        let big = BoundingBox {
            x1: -5.0,
            y1: -5.0,
            x2: 50.0,
            y2: 50.0,
        };
        c.draw_box(&big, [1, 2, 3], 1);
        // An empty box still marks the pixel it sits on.
        let point = BoundingBox {
            x1: 2.5,
            y1: 1.0,
            x2: 2.5,
            y2: 1.0,
        };
        c.draw_box(&point, [9, 9, 9], 2);
        assert_eq!(picture(&c), ["####", "#.##", "####"]);
        // NaN coordinates do not panic.
        let nan = BoundingBox {
            x1: f32::NAN,
            y1: 1.0,
            x2: f32::NAN,
            y2: f32::INFINITY,
        };
        c.draw_box(&nan, [9, 9, 9], 3);
    }
}
