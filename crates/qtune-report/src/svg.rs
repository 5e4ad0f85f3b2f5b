//! Static SVG charts: stacked panels sharing an x axis, series of points
//! (optionally joined), vertical marks, horizontal reference lines. Every
//! point is a `<circle class="pt">` with a `<title>` (hover text) and
//! `data-i` (the index the page's script maps back to a layer), so a browser
//! test can count what was drawn.

use std::fmt::Write as _;

use crate::{Report, ReportError};

/// A series of one panel.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub color: &'static str,
    /// `(x, y, data-i, hover text)`.
    pub points: Vec<(f64, f64, usize, String)>,
    /// Join the points with a line.
    pub line: bool,
}

/// One panel (y axis) of a chart.
#[derive(Debug, Clone, Default)]
pub struct Panel {
    pub y_label: String,
    pub series: Vec<Series>,
    /// Logarithmic y axis (values <= 0 are dropped from it).
    pub log_y: bool,
    /// Horizontal reference lines `(y, label)`.
    pub hlines: Vec<(f64, String)>,
}

/// A vertical mark at `x` (a float layer, ...).
#[derive(Debug, Clone)]
pub struct Mark {
    pub x: f64,
    pub color: &'static str,
    pub title: String,
}

/// A chart: panels stacked over one x axis.
#[derive(Debug, Clone, Default)]
pub struct Chart {
    /// `data-chart` of the `<svg>`.
    pub id: String,
    pub x_label: String,
    pub x_range: (f64, f64),
    pub panels: Vec<Panel>,
    pub marks: Vec<Mark>,
    pub width: f64,
    pub panel_height: f64,
}

/// Colours of the series, readable on white and for most colour-blind
/// readers (Okabe-Ito).
pub const COLORS: [&str; 6] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9",
];

const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 24.0;
const GAP: f64 = 28.0;
const BOTTOM: f64 = 40.0;

/// Escapes text for XML content and attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A number for axis labels and hover text: 4 significant digits.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if (1e-3..1e5).contains(&a) {
        let digits = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
        let s = format!("{v:.digits$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{v:.3e}")
    }
}

/// "Nice" tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    // NaN bounds too: no range to tick.
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 && out.len() < 50 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

fn y_range(panel: &Panel) -> (f64, f64) {
    let ys = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(panel.hlines.iter().map(|h| h.0))
        .filter(|y| y.is_finite() && (!panel.log_y || *y > 0.0));
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for y in ys {
        lo = lo.min(y);
        hi = hi.max(y);
    }
    if !lo.is_finite() {
        return if panel.log_y { (0.1, 1.0) } else { (0.0, 1.0) };
    }
    if panel.log_y {
        let (l, h) = (lo.log10().floor(), hi.log10().ceil());
        let h = if h <= l { l + 1.0 } else { h };
        (10f64.powf(l), 10f64.powf(h))
    } else if hi - lo < 1e-12 {
        (
            lo - 0.5f64.max(lo.abs() * 0.01),
            hi + 0.5f64.max(hi.abs() * 0.01),
        )
    } else {
        let pad = (hi - lo) * 0.05;
        (lo - pad, hi + pad)
    }
}

/// Renders `chart` as one `<svg>` element.
pub fn render(chart: &Chart) -> String {
    let n = chart.panels.len().max(1) as f64;
    let plot_w = chart.width - LEFT - RIGHT;
    let height = TOP + n * chart.panel_height + (n - 1.0) * GAP + BOTTOM;
    let (x0, x1) = chart.x_range;
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * plot_w;
    let mut drawn = 0usize;
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg class="chart" data-chart="{}" data-points="__POINTS__" viewBox="0 0 {} {height}" width="{}" height="{height}" role="img" xmlns="http://www.w3.org/2000/svg">"#,
        esc(&chart.id),
        chart.width,
        chart.width
    );
    o.push_str(r##"<rect x="0" y="0" width="100%" height="100%" fill="#fff"/>"##);
    for (pi, panel) in chart.panels.iter().enumerate() {
        let top = TOP + pi as f64 * (chart.panel_height + GAP);
        let bottom = top + chart.panel_height;
        let (lo, hi) = y_range(panel);
        let sy = |y: f64| {
            let f = if panel.log_y {
                (y.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10())
            } else {
                (y - lo) / (hi - lo)
            };
            bottom - f.clamp(-0.02, 1.02) * chart.panel_height
        };
        // Marks first, under everything.
        for m in &chart.marks {
            let x = sx(m.x);
            let _ = write!(
                o,
                r#"<line class="mark" x1="{x:.1}" x2="{x:.1}" y1="{top:.1}" y2="{bottom:.1}" stroke="{}" stroke-opacity="0.35" stroke-width="3"><title>{}</title></line>"#,
                m.color,
                esc(&m.title)
            );
        }
        // Axes and grid.
        let yt: Vec<f64> = if panel.log_y {
            let (a, b) = (lo.log10().round() as i32, hi.log10().round() as i32);
            (a..=b).map(|e| 10f64.powi(e)).collect()
        } else {
            ticks(lo, hi, 4)
        };
        for t in yt {
            let y = sy(t);
            let _ = write!(
                o,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 4.0,
                y + 3.5,
                num(t)
            );
        }
        let _ = write!(
            o,
            r##"<rect x="{LEFT}" y="{top:.1}" width="{plot_w:.1}" height="{:.1}" fill="none" stroke="#999"/>"##,
            chart.panel_height
        );
        let _ = write!(
            o,
            r#"<text class="axis" transform="translate(14,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (top + bottom) / 2.0,
            esc(&panel.y_label)
        );
        for (y, label) in &panel.hlines {
            let yy = sy(*y);
            let _ = write!(
                o,
                r##"<line class="hline" x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#D55E00" stroke-dasharray="5,4"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end" fill="#D55E00">{}</text>"##,
                LEFT + plot_w,
                LEFT + plot_w - 4.0,
                yy - 4.0,
                esc(label)
            );
        }
        // Series.
        let mut lx = LEFT + 8.0;
        for s in &panel.series {
            let pts: Vec<(f64, f64, usize, &String)> = s
                .points
                .iter()
                .filter(|p| p.1.is_finite() && (!panel.log_y || p.1 > 0.0))
                .map(|p| (sx(p.0), sy(p.1), p.2, &p.3))
                .collect();
            if s.line && pts.len() > 1 {
                let mut d = String::new();
                for (k, p) in pts.iter().enumerate() {
                    let _ = write!(d, "{}{:.1},{:.1}", if k == 0 { "M" } else { "L" }, p.0, p.1);
                }
                let _ = write!(
                    o,
                    r#"<path d="{d}" fill="none" stroke="{}" stroke-width="1.2" stroke-opacity="0.8"/>"#,
                    s.color
                );
            }
            drawn += pts.len();
            let _ = write!(o, r#"<g class="series" data-series="{}">"#, esc(&s.label));
            for p in &pts {
                let _ = write!(
                    o,
                    r#"<circle class="pt" data-i="{}" cx="{:.1}" cy="{:.1}" r="2.6" fill="{}"><title>{}</title></circle>"#,
                    p.2,
                    p.0,
                    p.1,
                    s.color,
                    esc(p.3)
                );
            }
            o.push_str("</g>");
            // Legend entry, the next one after this label's width (12 px
            // sans-serif: at most about 7.5 px a character, DejaVu Sans
            // being among the widest).
            let _ = write!(
                o,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}"/><text class="legend" x="{:.1}" y="{:.1}">{}</text>"#,
                lx,
                top - 8.0,
                s.color,
                lx + 8.0,
                top - 4.0,
                esc(&s.label)
            );
            lx += 8.0 + 7.5 * s.label.chars().count() as f64 + 22.0;
        }
    }
    // X axis ticks under the last panel.
    let base = TOP + n * chart.panel_height + (n - 1.0) * GAP;
    for t in ticks(x0, x1, 8) {
        let x = sx(t);
        let _ = write!(
            o,
            r#"<text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            base + 14.0,
            num(t)
        );
    }
    let _ = write!(
        o,
        r#"<text class="axis" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        base + 32.0,
        esc(&chart.x_label)
    );
    o.push_str("</svg>");
    o.replacen("__POINTS__", &drawn.to_string(), 1)
}

/// The per-layer similarity chart: cosine and SQNR of every measured layer,
/// cumulative and isolated, with the layers not run in INT8 marked (red:
/// put in float by the qtable; grey: kept in float by the chip's rules).
pub fn layer_chart(report: &Report, width: f64) -> Chart {
    let mut cos_cum = Vec::new();
    let mut cos_iso = Vec::new();
    let mut snr_cum = Vec::new();
    let mut snr_iso = Vec::new();
    for l in &report.layers {
        let x = l.index as f64;
        if let Some(s) = l.cumulative {
            let t = format!(
                "{} ({}) cumulative: cos {:.6}, SQNR {:.2} dB",
                l.name, l.op_type, s.cos, s.sqnr_db
            );
            cos_cum.push((x, s.cos, l.index, t.clone()));
            snr_cum.push((x, s.sqnr_db, l.index, t));
        }
        if let Some(s) = l.isolated {
            let t = format!(
                "{} ({}) isolated: cos {:.6}, SQNR {:.2} dB",
                l.name, l.op_type, s.cos, s.sqnr_db
            );
            cos_iso.push((x, s.cos, l.index, t.clone()));
            snr_iso.push((x, s.sqnr_db, l.index, t));
        }
    }
    let series = |cum, iso| {
        vec![
            Series {
                label: "cumulative (whole model)".into(),
                color: COLORS[0],
                points: cum,
                line: true,
            },
            Series {
                label: "isolated (this layer only)".into(),
                color: COLORS[1],
                points: iso,
                line: false,
            },
        ]
    };
    let marks = report
        .layers
        .iter()
        .filter(|l| l.mode != "INT8")
        .map(|l| {
            let by_qtable = l.float_reason.as_deref() == Some("qtable");
            Mark {
                x: l.index as f64,
                color: if by_qtable { "#D55E00" } else { "#999999" },
                title: format!(
                    "{} ({}): {}{}",
                    l.name,
                    l.op_type,
                    l.mode,
                    l.float_reason
                        .as_deref()
                        .map(|r| format!(", {r}"))
                        .unwrap_or_default()
                ),
            }
        })
        .collect();
    Chart {
        id: "layers".into(),
        x_label: "layer (op order)".into(),
        x_range: (0.0, report.layers.len().saturating_sub(1).max(1) as f64),
        panels: vec![
            Panel {
                y_label: "cosine".into(),
                series: series(cos_cum, cos_iso),
                ..Panel::default()
            },
            Panel {
                y_label: "SQNR (dB)".into(),
                series: series(snr_cum, snr_iso),
                ..Panel::default()
            },
        ],
        marks,
        width,
        panel_height: 190.0,
    }
}

/// The per-layer chart as a standalone SVG document (its style inlined).
pub fn layer_svg_document(report: &Report) -> String {
    let body = render(&layer_chart(report, 1100.0));
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}\n",
        body.replacen(
            "<rect ",
            &format!("<style>{}</style><rect ", crate::html::SVG_STYLE),
            1
        )
    )
}

/// `--plot FILE.svg`: the per-layer chart as a standalone SVG document.
pub fn write_layer_svg(report: &Report, path: &std::path::Path) -> Result<(), ReportError> {
    crate::write_file(path, layer_svg_document(report).as_bytes())
}

/// Pixels per SVG unit of `--plot FILE.png` (a 1100-unit wide chart becomes
/// 2200 pixels: sharp on high-density screens and in slides).
pub const PNG_SCALE: f32 = 2.0;

/// Families tried, in order, for the chart's `sans-serif` text (fontdb's own
/// default, Arial, is rarely installed on Linux).
const SANS_FAMILIES: [&str; 6] = [
    "DejaVu Sans",
    "Liberation Sans",
    "Noto Sans",
    "FreeSans",
    "Arial",
    "Helvetica",
];

/// Rasterizes an SVG document to PNG bytes at `scale` pixels per unit, on
/// white, with the system's fonts. Errors when no font is installed: a chart
/// without its axis labels and legend would be unreadable.
pub fn svg_to_png(svg: &str, scale: f32) -> Result<Vec<u8>, ReportError> {
    use resvg::{tiny_skia, usvg};
    let mut options = usvg::Options::default();
    let db = options.fontdb_mut();
    db.load_system_fonts();
    if db.is_empty() {
        return Err(ReportError::Input(
            "no font is installed for the chart's text (Debian: apt-get install fonts-dejavu-core); \
             write the chart as .svg instead"
                .to_string(),
        ));
    }
    let installed: Vec<String> = db
        .faces()
        .flat_map(|f| f.families.iter().map(|(name, _)| name.clone()))
        .collect();
    let sans = SANS_FAMILIES
        .iter()
        .find(|want| installed.iter().any(|have| have == *want))
        .map(|s| s.to_string())
        .unwrap_or_else(|| {
            let mut sorted = installed.clone();
            sorted.sort();
            sorted[0].clone()
        });
    db.set_sans_serif_family(sans.clone());
    options.font_family = sans;
    let tree = usvg::Tree::from_str(svg, &options)
        .map_err(|e| ReportError::Input(format!("the chart's SVG does not parse: {e}")))?;
    let size = tree.size().to_int_size().scale_by(scale).ok_or_else(|| {
        ReportError::Input(format!(
            "the chart ({} x {} units) at {scale} pixels per unit has no pixels",
            tree.size().width(),
            tree.size().height()
        ))
    })?;
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height()).ok_or_else(|| {
        ReportError::Input(format!(
            "the chart is too large to rasterize ({} x {} pixels)",
            size.width(),
            size.height()
        ))
    })?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| ReportError::Input(format!("encoding the chart as PNG: {e}")))
}

/// `--plot FILE.png`: the per-layer chart rasterized ([`PNG_SCALE`]).
pub fn write_layer_png(report: &Report, path: &std::path::Path) -> Result<(), ReportError> {
    let png = svg_to_png(&layer_svg_document(report), PNG_SCALE)?;
    crate::write_file(path, &png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_short() {
        assert_eq!(num(0.999912345), "0.9999");
        assert_eq!(num(12.5), "12.5");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(1.5e-7), "1.500e-7");
    }

    #[test]
    fn ticks_cover_range() {
        let t = ticks(0.0, 10.0, 5);
        assert_eq!(t, vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(1.0, 1.0, 4), vec![1.0]);
    }

    #[test]
    fn points_are_counted_and_escaped() {
        let chart = Chart {
            id: "c".into(),
            x_label: "x".into(),
            x_range: (0.0, 2.0),
            panels: vec![Panel {
                y_label: "y".into(),
                series: vec![Series {
                    label: "s<1>".into(),
                    color: COLORS[0],
                    points: vec![
                        (0.0, 1.0, 0, "a&b".into()),
                        (1.0, f64::NAN, 1, "nan".into()),
                        (2.0, 3.0, 2, "c".into()),
                    ],
                    line: true,
                }],
                ..Panel::default()
            }],
            width: 400.0,
            panel_height: 100.0,
            ..Chart::default()
        };
        let svg = render(&chart);
        // The NaN point is not drawn.
        assert_eq!(svg.matches("class=\"pt\"").count(), 2);
        assert!(svg.contains("a&amp;b") && svg.contains("s&lt;1&gt;"));
    }

    fn line_chart(width: f64) -> Chart {
        Chart {
            id: "c".into(),
            x_label: "layer".into(),
            x_range: (0.0, 3.0),
            panels: vec![Panel {
                y_label: "cosine".into(),
                series: vec![Series {
                    label: "cumulative".into(),
                    color: COLORS[0],
                    points: (0..4)
                        .map(|i| (i as f64, 1.0 - 0.1 * i as f64, i, format!("l{i}")))
                        .collect(),
                    line: true,
                }],
                ..Panel::default()
            }],
            width,
            panel_height: 120.0,
            ..Chart::default()
        }
    }

    fn decode(png: &[u8]) -> resvg::tiny_skia::Pixmap {
        resvg::tiny_skia::Pixmap::decode_png(png).expect("the PNG decodes")
    }

    fn count_rgb(p: &resvg::tiny_skia::Pixmap, rgb: (u8, u8, u8), tol: i32) -> usize {
        p.pixels()
            .iter()
            .filter(|c| {
                let c = c.demultiply();
                (c.red() as i32 - rgb.0 as i32).abs() <= tol
                    && (c.green() as i32 - rgb.1 as i32).abs() <= tol
                    && (c.blue() as i32 - rgb.2 as i32).abs() <= tol
            })
            .count()
    }

    #[test]
    fn png_has_the_svg_size_times_the_scale_and_draws_series_and_text() {
        let svg = render(&line_chart(400.0));
        // The SVG's own size, read back from its root element.
        let attr = |name: &str| -> f32 {
            let at = svg.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            svg[at..at + svg[at..].find('"').unwrap()].parse().unwrap()
        };
        let (w, h) = (attr("width"), attr("height"));
        let png = svg_to_png(&svg, 2.0).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let p = decode(&png);
        assert_eq!(
            (p.width(), p.height()),
            ((w * 2.0) as u32, (h * 2.0) as u32)
        );
        // The series' colour is drawn (its line and points), on white.
        let hex = COLORS[0].trim_start_matches('#');
        let rgb = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).unwrap();
        assert!(count_rgb(&p, (rgb(0), rgb(2), rgb(4)), 40) > 100);
        assert!(count_rgb(&p, (255, 255, 255), 0) > p.pixels().len() / 2);
        // The text (ticks, axis labels, legend) is drawn: the same chart
        // without its <text> elements differs in many more pixels than the
        // antialiasing of a line would explain.
        let mut bare = String::new();
        let mut rest = svg.as_str();
        while let Some(a) = rest.find("<text") {
            bare.push_str(&rest[..a]);
            let b = rest[a..].find("</text>").unwrap() + a + "</text>".len();
            rest = &rest[b..];
        }
        bare.push_str(rest);
        assert!(bare.len() < svg.len());
        let q = decode(&svg_to_png(&bare, 2.0).unwrap());
        let differ = p
            .pixels()
            .iter()
            .zip(q.pixels())
            .filter(|(a, b)| a != b)
            .count();
        assert!(differ > 2000, "text changed only {differ} pixels");
    }

    #[test]
    fn unparsable_svg_is_an_error() {
        let err = svg_to_png("<svg", 1.0).unwrap_err().to_string();
        assert!(err.contains("does not parse"), "{err}");
    }
}
