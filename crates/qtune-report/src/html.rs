//! The report as one self-contained HTML file: inline CSS, the static
//! charts as inline SVG, the data as embedded JSON, and a little plain
//! JavaScript that draws the on-demand charts (a tensor's histogram, a
//! layer's weight ranges), links the per-layer chart to the layer selector
//! and sorts the layer table. Nothing is fetched when the file is opened.

use std::fmt::Write as _;
use std::path::Path;

use crate::svg::{COLORS, Chart, Mark, Panel, Series, esc, layer_chart, num, render};
use crate::{Report, ReportError};

/// Styles of the SVG text (also put into standalone `--plot` SVGs).
pub const SVG_STYLE: &str = ".tick{font:11px sans-serif;fill:#444}.axis{font:12px sans-serif;fill:#222}.legend{font:12px sans-serif;fill:#222}";

const CSS: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:12px 20px 60px}
h1{font-size:22px;margin:14px 0 4px}h2{font-size:18px;margin:30px 0 4px;border-bottom:1px solid #ddd;padding-bottom:3px}
.caption{color:#444;max-width:1100px;margin:2px 0 8px}
table.kv td{padding:1px 10px 1px 0;vertical-align:top}table.kv td:first-child{color:#555;white-space:nowrap}
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
.cmd{background:#f0f0f0;padding:4px 6px;border-radius:3px;word-break:break-all}
.card{background:#fff;border:1px solid #e3e3e3;border-radius:4px;padding:8px;margin:8px 0;overflow-x:auto}
svg.chart{display:block;max-width:100%;height:auto}
svg.chart circle.pt{cursor:pointer}svg.chart circle.pt.sel{stroke:#000;stroke-width:2}
.picker{margin:8px 0}.picker select{font-size:14px;max-width:700px}
table.layers{border-collapse:collapse;font-size:12.5px;width:100%}
table.layers th{position:sticky;top:0;background:#eee;cursor:pointer;text-align:left;padding:3px 6px;user-select:none}
table.layers th[data-dir="asc"]::after{content:" \25B2"}table.layers th[data-dir="desc"]::after{content:" \25BC"}
table.layers td{padding:2px 6px;border-bottom:1px solid #eee}table.layers td.num{text-align:right;font-variant-numeric:tabular-nums}
table.layers tr.float td{background:#fff4ec}table.layers tr.sel td{background:#dbeafe}
.tablewrap{max-height:560px;overflow:auto;border:1px solid #e3e3e3;background:#fff}
ul.notes{color:#8a4b00}
.empty{color:#777;font-style:italic}
"#;

/// The page's script. It reads the embedded JSON, draws the histogram and
/// weight-range charts of the selected layer, and sorts the table.
const SCRIPT: &str = r###"
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var COLORS = {kl: "#0072B2", mse: "#009E73", max: "#CC79A7", percentile9999: "#E69F00"};
  function el(tag, attrs, parent, text) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (text !== undefined) { e.textContent = text; }
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function fmt(v) {
    if (v === null || v === undefined) { return "-"; }
    if (v === 0) { return "0"; }
    var a = Math.abs(v);
    if (a > 0.99 && a < 1) { return v.toFixed(6); }
    return (a >= 1e-3 && a < 1e5) ? String(Number(v.toPrecision(4))) : v.toExponential(3);
  }
  var hists = {}, weights = {};
  D.histograms.forEach(function (h) { hists[h.tensor] = h; });
  D.weights.forEach(function (w) { weights[w.layer] = w; });
  var W = 1100, L = 64, R = 16, T = 26, H = 220, B = 42;

  function frame(id, title) {
    var svg = el("svg", {"class": "chart", "data-chart": id, viewBox: "0 0 " + W + " " + (T + H + B),
      width: W, height: T + H + B});
    el("rect", {x: 0, y: 0, width: "100%", height: "100%", fill: "#fff"}, svg);
    el("rect", {x: L, y: T, width: W - L - R, height: H, fill: "none", stroke: "#999"}, svg);
    el("text", {"class": "axis", x: L, y: 16}, svg, title);
    return svg;
  }

  function drawHistogram(h) {
    var svg = frame("histogram", "|x| of " + h.tensor + " (log count); min " + fmt(h.min) + ", max " + fmt(h.max));
    var n = h.counts.length, top = n * h.bin_width;
    h.thresholds.forEach(function (t) { top = Math.max(top, t.value); });
    if (h.chosen !== null) { top = Math.max(top, h.chosen); }
    top = top > 0 ? top * 1.03 : 1;
    var maxLog = 0;
    h.counts.forEach(function (c) { maxLog = Math.max(maxLog, Math.log10(c + 1)); });
    maxLog = maxLog > 0 ? maxLog : 1;
    var pw = W - L - R;
    function sx(x) { return L + x / top * pw; }
    function sy(c) { return T + H - Math.log10(c + 1) / maxLog * H; }
    for (var e = 0; e <= Math.ceil(maxLog); e++) {
      var y = T + H - e / maxLog * H;
      if (y < T - 1) { break; }
      el("line", {x1: L, x2: W - R, y1: y, y2: y, stroke: "#eee"}, svg);
      el("text", {"class": "tick", x: L - 4, y: y + 4, "text-anchor": "end"}, svg, "1e" + e);
    }
    var g = el("g", {"class": "bars"}, svg);
    h.counts.forEach(function (c, i) {
      if (c === 0) { return; }
      var x0 = sx(i * h.bin_width), x1 = sx((i + 1) * h.bin_width), y = sy(c);
      el("rect", {"class": "bar", x: x0.toFixed(1), y: y.toFixed(1), width: Math.max(0.8, x1 - x0 - 0.3).toFixed(1),
        height: (T + H - y).toFixed(1), fill: "#9db4c8"}, g);
    });
    var lines = h.thresholds.slice();
    if (h.chosen !== null) { lines.push({method: "chosen", value: h.chosen}); }
    lines.forEach(function (t, k) {
      var x = sx(t.value), chosen = t.method === "chosen";
      var c = chosen ? "#D55E00" : (COLORS[t.method] || "#555");
      el("line", {"class": chosen ? "th chosen" : "th", x1: x, x2: x, y1: T, y2: T + H, stroke: c,
        "stroke-width": chosen ? 3 : 1.5, "stroke-dasharray": chosen ? "" : "6,3"}, svg);
      el("text", {"class": "legend", x: L + 8 + k * 190, y: T + H + 36, fill: c}, svg,
        (chosen ? "chosen (table) " : t.method + " ") + fmt(t.value));
    });
    for (var k = 0; k <= 5; k++) {
      var v = top * k / 5;
      el("text", {"class": "tick", x: sx(v), y: T + H + 14, "text-anchor": "middle"}, svg, fmt(v));
    }
    return svg;
  }

  function drawWeights(w) {
    var svg = frame("weights", w.weight + " of " + w.layer + " (" + w.op_type + ", deployed " + w.scheme +
      "): min/max per output channel, dashed: per-tensor \u00b1max|w|");
    var n = w.channel_min.length, lim = w.tensor_abs_max > 0 ? w.tensor_abs_max * 1.05 : 1;
    var pw = W - L - R;
    function sx(i) { return L + (i + 0.5) / Math.max(n, 1) * pw; }
    function sy(v) { return T + H / 2 - v / lim * (H / 2); }
    [-w.tensor_abs_max, 0, w.tensor_abs_max].forEach(function (v, k) {
      el("line", {"class": k === 1 ? "zero" : "tensor-range", x1: L, x2: W - R, y1: sy(v), y2: sy(v),
        stroke: k === 1 ? "#ccc" : "#D55E00", "stroke-dasharray": k === 1 ? "" : "6,3"}, svg);
      el("text", {"class": "tick", x: L - 4, y: sy(v) + 4, "text-anchor": "end"}, svg, fmt(v));
    });
    var g = el("g", {"class": "channels"}, svg);
    for (var i = 0; i < n; i++) {
      el("line", {"class": "ch", x1: sx(i), x2: sx(i), y1: sy(w.channel_max[i]), y2: sy(w.channel_min[i]),
        stroke: "#0072B2", "stroke-width": Math.max(1, Math.min(4, pw / n * 0.6))}, g);
    }
    el("text", {"class": "axis", x: L + pw / 2, y: T + H + 30, "text-anchor": "middle"}, svg,
      n + " output channels");
    return svg;
  }

  var select = document.getElementById("layer-select");
  function show(name) {
    if (!select) { return; }
    select.value = name;
    var hbox = document.getElementById("hist"), wbox = document.getElementById("wr");
    hbox.textContent = ""; wbox.textContent = "";
    var layer = null;
    D.layers.forEach(function (l) { if (l.name === name) { layer = l; } });
    if (hists[name]) { hbox.appendChild(drawHistogram(hists[name])); }
    else { el("p", {}, null); hbox.innerHTML = '<p class="empty">no histogram for this tensor</p>'; }
    if (weights[name]) { wbox.appendChild(drawWeights(weights[name])); }
    else { wbox.innerHTML = '<p class="empty">no Conv/MatMul weight in this layer</p>'; }
    var info = document.getElementById("layer-info");
    if (info && layer) {
      info.textContent = layer.name + " (" + layer.op_type + ", " + layer.mode + ")" +
        (layer.threshold !== null ? ", threshold " + fmt(layer.threshold) : "") +
        (layer.cumulative ? ", cumulative cos " + fmt(layer.cumulative.cos) : "") +
        (layer.isolated ? ", isolated cos " + fmt(layer.isolated.cos) : "");
    }
    document.querySelectorAll("circle.pt.sel").forEach(function (c) { c.classList.remove("sel"); });
    if (layer) {
      document.querySelectorAll('svg[data-chart="layers"] circle.pt[data-i="' + layer.index + '"]')
        .forEach(function (c) { c.classList.add("sel"); });
    }
    document.querySelectorAll("table.layers tr.sel").forEach(function (r) { r.classList.remove("sel"); });
    var row = document.querySelector('table.layers tr[data-name="' + CSS.escape(name) + '"]');
    if (row) { row.classList.add("sel"); }
  }
  if (select) {
    select.addEventListener("change", function () { show(select.value); });
    document.querySelectorAll('svg[data-chart="layers"] circle.pt').forEach(function (c) {
      c.addEventListener("click", function () {
        var l = D.layers[Number(c.getAttribute("data-i"))];
        if (l && (hists[l.name] || weights[l.name])) { show(l.name); }
      });
    });
    show(select.value);
  }

  document.querySelectorAll("table.layers th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var table = th.closest("table"), body = table.tBodies[0];
      var dir = th.getAttribute("data-dir") === "asc" ? "desc" : "asc";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("data-dir"); });
      th.setAttribute("data-dir", dir);
      var numeric = th.getAttribute("data-type") === "num";
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute("data-v"), y = b.cells[col].getAttribute("data-v");
        var r;
        if (numeric) {
          var fx = x === "" ? -Infinity : Number(x), fy = y === "" ? -Infinity : Number(y);
          r = fx - fy;
        } else { r = x < y ? -1 : (x > y ? 1 : 0); }
        return dir === "asc" ? r : -r;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
})();
"###;

/// The JSON for a `<script type="application/json">`: `<` is escaped so the
/// text cannot close the element (it only occurs inside JSON strings).
fn embedded_json(report: &Report) -> Result<String, ReportError> {
    Ok(report.to_json()?.replace('<', "\\u003c"))
}

fn section(o: &mut String, title: &str, caption: &str) {
    let _ = write!(
        o,
        "<h2>{}</h2><p class=\"caption\">{}</p>",
        esc(title),
        caption
    );
}

fn header(o: &mut String, r: &Report) {
    let h = &r.header;
    let _ = write!(o, "<h1>qtune report: {}</h1>", esc(&h.title));
    o.push_str("<table class=\"kv\">");
    let mut row = |k: &str, v: String| {
        let _ = write!(o, "<tr><td>{}</td><td>{}</td></tr>", esc(k), v);
    };
    row(
        "command line",
        format!("<code class=\"cmd\">{}</code>", esc(&h.command_line)),
    );
    row("model", format!("<code>{}</code>", esc(&h.model)));
    row("processor", esc(&h.processor));
    row("dataset", format!("<code>{}</code>", esc(&h.dataset)));
    for e in &h.counts {
        row(&e.label, esc(&e.value));
    }
    for e in &h.versions {
        row(&e.label, esc(&e.value));
    }
    if !h.timings.is_empty() {
        let t: Vec<String> = h
            .timings
            .iter()
            .map(|t| format!("{} {:.2} s", esc(&t.stage), t.seconds))
            .collect();
        row("timings", t.join(", "));
    }
    if !h.outputs.is_empty() {
        let t: Vec<String> = h
            .outputs
            .iter()
            .map(|p| format!("<code>{}</code>", esc(p)))
            .collect();
        row("wrote", t.join(", "));
    }
    o.push_str("</table>");
    if !r.notes.is_empty() {
        o.push_str("<ul class=\"notes\">");
        for n in &r.notes {
            let _ = write!(o, "<li>{}</li>", esc(n));
        }
        o.push_str("</ul>");
    }
}

fn card(o: &mut String, svg: &str) {
    let _ = write!(o, "<div class=\"card\">{svg}</div>");
}

fn layer_section(o: &mut String, r: &Report) {
    section(
        o,
        "Per-layer similarity, int8 vs float",
        &format!(
            "Cosine and SQNR of each layer's output against the float model's, mean over {} sample(s). \
             <b>Cumulative</b>: the whole quantized model as deployed up to that layer (errors add up along the network). \
             <b>Isolated</b>: only that layer quantized, fed the float model's inputs (its own quantization error). \
             A Relu fused into its op (TPU-MLIR's do_relu) is part of that layer: the layer is measured after it. \
             Vertical marks: layers not run in INT8 (red: put in float by the qtable; grey: the chip's float ops). \
             Click a point to see that layer's histogram and weights below.",
            r.similarity_samples
        ),
    );
    if r.measured_layers().next().is_none() {
        o.push_str(
            "<p class=\"empty\">not measured in this run (no samples; see the notes above)</p>",
        );
        return;
    }
    card(o, &render(&layer_chart(r, 1100.0)));
}

fn selector_section(o: &mut String, r: &Report) {
    section(
        o,
        "Tensor distributions and weight ranges",
        &format!(
            "Pick a layer (or click one in the chart above). Histogram of |x| of its output, log counts, with the \
             thresholds of the methods (dashed: kl, max and percentile9999, and each method's own table in a search) and the threshold of the calibration table (solid red); \
             {}. Weights: each output channel's min and max against the per-tensor range, which is what a per-tensor \
             int8 weight (bm1684, Gemm/MatMul) must cover with 255 steps: a channel far inside it loses precision.",
            esc(&r.histogram_source)
        ),
    );
    let mut names: Vec<&str> = Vec::new();
    for l in &r.layers {
        let has = r.histograms.iter().any(|h| h.tensor == l.name)
            || r.weights.iter().any(|w| w.layer == l.name);
        if has {
            names.push(&l.name);
        }
    }
    if names.is_empty() {
        o.push_str("<p class=\"empty\">no histograms or weights in this report</p>");
        return;
    }
    // Start with the layer whose isolated SQNR is lowest: the one to look at.
    let start = r
        .layers
        .iter()
        .filter(|l| names.contains(&l.name.as_str()))
        .filter_map(|l| l.isolated.map(|s| (s.sqnr_db, l.name.as_str())))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map_or(names[0], |(_, n)| n);
    o.push_str("<div class=\"picker\"><label for=\"layer-select\">layer </label><select id=\"layer-select\">");
    for n in &names {
        let _ = write!(
            o,
            "<option value=\"{0}\"{1}>{0}</option>",
            esc(n),
            if *n == start { " selected" } else { "" }
        );
    }
    o.push_str("</select> <span id=\"layer-info\" class=\"mono\"></span></div>");
    o.push_str("<div class=\"card\" id=\"hist\"></div><div class=\"card\" id=\"wr\"></div>");
    if !r.weights.is_empty() {
        let points: Vec<(f64, f64, usize, String)> = r
            .weights
            .iter()
            .filter_map(|w| {
                let l = r.layers.iter().find(|l| l.name == w.layer)?;
                let s = w.spread();
                Some((
                    l.index as f64,
                    s,
                    l.index,
                    format!(
                        "{} ({}, {}): per-tensor max|w| = {} x the median channel's",
                        w.layer,
                        w.op_type,
                        w.scheme,
                        num(s)
                    ),
                ))
            })
            .collect();
        let chart = Chart {
            id: "weight-spread".into(),
            x_label: "layer (op order)".into(),
            x_range: (0.0, r.layers.len().saturating_sub(1).max(1) as f64),
            panels: vec![Panel {
                y_label: "tensor / median channel max|w|".into(),
                series: vec![Series {
                    label: "Conv / MatMul weights".into(),
                    color: COLORS[2],
                    points,
                    line: false,
                }],
                log_y: true,
                hlines: Vec::new(),
            }],
            marks: Vec::new(),
            width: 1100.0,
            panel_height: 160.0,
        };
        let _ = write!(
            o,
            "<p class=\"caption\">All Conv/MatMul layers: how many times the per-tensor range exceeds the median channel's (1 = every channel uses the whole range).</p>"
        );
        card(o, &render(&chart));
    }
}

fn search_section(o: &mut String, r: &Report) {
    let Some(s) = &r.search else { return };
    section(
        o,
        &format!("Search: {}", s.kind),
        &format!(
            "Similarities on {}. {}",
            esc(&s.scale),
            match (s.all_int8_cos, s.final_cos) {
                (Some(a), Some(f)) => format!(
                    "All-int8 output similarity {a:.6}, with the chosen float layers {f:.6}{}.",
                    s.expected_cos
                        .map(|e| format!(" (expected {e})"))
                        .unwrap_or_default()
                ),
                _ => String::new(),
            }
        ),
    );
    if !s.trajectory.is_empty() {
        let points = s
            .trajectory
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    p.float_layers as f64,
                    p.cos,
                    i,
                    format!(
                        "{}: {} float layer(s), similarity {:.6}",
                        p.label, p.float_layers, p.cos
                    ),
                )
            })
            .collect();
        let xmax = s
            .trajectory
            .iter()
            .map(|p| p.float_layers)
            .max()
            .unwrap_or(1);
        let chart = Chart {
            id: "trajectory".into(),
            x_label: "float layers".into(),
            x_range: (0.0, xmax.max(1) as f64),
            panels: vec![Panel {
                y_label: "output similarity".into(),
                series: vec![Series {
                    label: "configurations scored, in order".into(),
                    color: COLORS[0],
                    points,
                    line: true,
                }],
                log_y: false,
                hlines: s
                    .expected_cos
                    .map(|e| vec![(e, format!("expected {e}"))])
                    .unwrap_or_default(),
            }],
            marks: Vec::new(),
            width: 1100.0,
            panel_height: 180.0,
        };
        o.push_str("<p class=\"caption\">Trajectory: the output similarity of each configuration the search scored against its number of float layers.</p>");
        card(o, &render(&chart));
    }
    if !s.layers.is_empty() {
        let mut series = Vec::new();
        for (m, label) in s.methods.iter().enumerate() {
            let points = s
                .layers
                .iter()
                .enumerate()
                .filter_map(|(i, l)| {
                    let v = l.losses.get(m).copied().flatten()?;
                    Some((
                        i as f64,
                        v,
                        i,
                        format!("{} ({}), {label}: {v:.3e}", l.name, l.op_type),
                    ))
                })
                .collect();
            series.push(Series {
                label: label.clone(),
                color: COLORS[m % COLORS.len()],
                points,
                line: false,
            });
        }
        let marks = s
            .layers
            .iter()
            .enumerate()
            .filter(|(_, l)| s.float_layers.contains(&l.name))
            .map(|(i, l)| Mark {
                x: i as f64,
                color: "#D55E00",
                title: format!("{} kept in float", l.name),
            })
            .collect();
        let chart = Chart {
            id: "search-layers".into(),
            x_label: "searched layer (op order)".into(),
            x_range: (0.0, s.layers.len().saturating_sub(1).max(1) as f64),
            panels: vec![Panel {
                y_label: "loss".into(),
                series,
                log_y: true,
                hlines: Vec::new(),
            }],
            marks,
            width: 1100.0,
            panel_height: 200.0,
        };
        let _ = write!(
            o,
            "<p class=\"caption\">Per-layer losses of each method: {}. Red marks: the layers the search keeps in float.</p>",
            esc(&s.layer_loss)
        );
        card(o, &render(&chart));
        o.push_str("<div class=\"tablewrap\"><table class=\"layers search\"><thead><tr><th>#</th><th>layer</th><th>type</th><th>chosen method</th><th>threshold</th>");
        for m in &s.methods {
            let _ = write!(o, "<th data-type=\"num\">{}</th>", esc(m));
        }
        o.push_str("<th>float</th></tr></thead><tbody>");
        for (i, l) in s.layers.iter().enumerate() {
            let fl = s.float_layers.contains(&l.name);
            let _ = write!(
                o,
                "<tr{}><td data-v=\"{i}\">{i}</td><td data-v=\"{n}\">{n}</td><td data-v=\"{t}\">{t}</td><td data-v=\"{m}\">{m}</td><td class=\"num\" data-v=\"{th}\">{th}</td>",
                if fl { " class=\"float\"" } else { "" },
                n = esc(&l.name),
                t = esc(&l.op_type),
                m = esc(l.chosen_method.as_deref().unwrap_or("")),
                th = l.threshold.map(num).unwrap_or_default()
            );
            for v in &l.losses {
                let _ = write!(
                    o,
                    "<td class=\"num\" data-v=\"{}\">{}</td>",
                    v.map(|x| x.to_string()).unwrap_or_default(),
                    v.map(|x| format!("{x:.3e}")).unwrap_or_else(|| "-".into())
                );
            }
            let _ = write!(o, "<td>{}</td></tr>", if fl { "yes" } else { "" });
        }
        o.push_str("</tbody></table></div>");
    }
}

fn transform_section(o: &mut String, r: &Report) {
    for (k, t) in r.transforms.iter().enumerate() {
        section(
            o,
            &format!("--{}: before and after", t.kind),
            &esc(&t.caption),
        );
        if t.rows.is_empty() {
            o.push_str("<p class=\"empty\">nothing was changed</p>");
            continue;
        }
        let pts = |after: bool| -> Vec<(f64, f64, usize, String)> {
            t.rows
                .iter()
                .enumerate()
                .map(|(i, row)| {
                    let v = if after { row.after } else { row.before };
                    (
                        i as f64,
                        v,
                        i,
                        format!(
                            "{}: {} {} -> {}",
                            row.name,
                            t.quantity,
                            num(row.before),
                            num(row.after)
                        ),
                    )
                })
                .collect()
        };
        let chart = Chart {
            id: format!("transform-{k}"),
            x_label: "layer (in the order changed)".into(),
            x_range: (0.0, t.rows.len().saturating_sub(1).max(1) as f64),
            panels: vec![Panel {
                y_label: t.quantity.clone(),
                series: vec![
                    Series {
                        label: "before".into(),
                        color: COLORS[4],
                        points: pts(false),
                        line: false,
                    },
                    Series {
                        label: "after".into(),
                        color: COLORS[0],
                        points: pts(true),
                        line: false,
                    },
                ],
                log_y: false,
                hlines: Vec::new(),
            }],
            marks: Vec::new(),
            width: 1100.0,
            panel_height: 170.0,
        };
        card(o, &render(&chart));
    }
}

fn table_section(o: &mut String, r: &Report) {
    section(
        o,
        "Layers",
        "Every op in order. Click a column to sort; click again to reverse.",
    );
    o.push_str("<div class=\"tablewrap\"><table class=\"layers\" id=\"layer-table\"><thead><tr>\
        <th data-type=\"num\">#</th><th>layer</th><th>op type</th><th>mode</th>\
        <th data-type=\"num\">threshold</th><th data-type=\"num\">cum. cos</th><th data-type=\"num\">cum. SQNR dB</th>\
        <th data-type=\"num\">iso. cos</th><th data-type=\"num\">iso. SQNR dB</th></tr></thead><tbody>");
    let f = |v: Option<f64>, d: usize| -> (String, String) {
        match v {
            Some(x) => (x.to_string(), format!("{x:.d$}")),
            None => (String::new(), "-".into()),
        }
    };
    for l in &r.layers {
        let cells = [
            f(l.threshold, 4),
            f(l.cumulative.map(|s| s.cos), 6),
            f(l.cumulative.map(|s| s.sqnr_db), 2),
            f(l.isolated.map(|s| s.cos), 6),
            f(l.isolated.map(|s| s.sqnr_db), 2),
        ];
        let mode = match &l.float_reason {
            Some(reason) => format!("{} ({reason})", l.mode),
            None => l.mode.clone(),
        };
        let _ = write!(
            o,
            "<tr data-name=\"{n}\"{cls}><td class=\"num\" data-v=\"{i}\">{i}</td><td data-v=\"{n}\">{n}</td><td data-v=\"{t}\">{t}</td><td data-v=\"{m}\">{m}</td>",
            n = esc(&l.name),
            cls = if l.mode != "INT8" {
                " class=\"float\""
            } else {
                ""
            },
            i = l.index,
            t = esc(&l.op_type),
            m = esc(&mode),
        );
        for (v, shown) in cells {
            let _ = write!(o, "<td class=\"num\" data-v=\"{v}\">{shown}</td>");
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table></div>");
}

/// The whole page.
pub fn to_html(report: &Report) -> Result<String, ReportError> {
    let mut o = String::with_capacity(1 << 20);
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>qtune report: {}</title><style>{CSS}{SVG_STYLE}</style></head><body><main>",
        esc(&report.header.title)
    );
    header(&mut o, report);
    layer_section(&mut o, report);
    selector_section(&mut o, report);
    search_section(&mut o, report);
    transform_section(&mut o, report);
    table_section(&mut o, report);
    let _ = writeln!(
        o,
        "</main><script type=\"application/json\" id=\"report-data\">{}</script><script>{SCRIPT}</script></body></html>",
        embedded_json(report)?
    );
    Ok(o)
}

/// Writes the report to `path` (atomically).
pub fn write_html(report: &Report, path: &Path) -> Result<(), ReportError> {
    crate::write_file(path, to_html(report)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Histogram, Layer, Similarity};

    #[test]
    fn json_cannot_close_the_script() {
        let r = Report {
            layers: vec![Layer {
                name: "a</script><b".into(),
                mode: "INT8".into(),
                cumulative: Some(Similarity {
                    cos: 1.0,
                    sqnr_db: 10.0,
                }),
                ..Layer::default()
            }],
            histograms: vec![Histogram {
                tensor: "a</script><b".into(),
                bin_width: 1.0,
                counts: vec![1, 2],
                ..Histogram::default()
            }],
            ..Report::default()
        };
        let html = to_html(&r).unwrap();
        assert_eq!(
            html.matches("</script>").count(),
            2,
            "only the two real closings"
        );
        let start = html.find("id=\"report-data\">").unwrap() + 17;
        let end = start + html[start..].find("</script>").unwrap();
        let v: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
        assert_eq!(v["layers"][0]["name"], "a</script><b");
    }
}
