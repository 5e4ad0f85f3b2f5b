//! The per-layer similarity as a compact text table, for the end of a run
//! in a terminal (when no `--report` is asked for).

use std::fmt::Write as _;

use crate::Report;

/// Longest layer name shown; longer names keep their end (the distinctive
/// part of TPU-MLIR op names).
const NAME_WIDTH: usize = 36;

fn short(name: &str) -> String {
    let n = name.chars().count();
    if n <= NAME_WIDTH {
        name.to_string()
    } else {
        let tail: String = name.chars().skip(n - (NAME_WIDTH - 1)).collect();
        format!("~{tail}")
    }
}

/// One line per measured layer: index, name, type, mode, cumulative and
/// isolated cosine and SQNR; then the worst layers by isolated SQNR.
pub fn layer_table(report: &Report) -> String {
    let mut o = String::new();
    let measured: Vec<_> = report.measured_layers().collect();
    if measured.is_empty() {
        return o;
    }
    let _ = writeln!(
        o,
        "per-layer similarity to the float model ({} sample(s)); cumulative = whole quantized model, isolated = only this layer quantized",
        report.similarity_samples
    );
    let _ = writeln!(
        o,
        "{:>4}  {:<w$}  {:<14} {:<5} {:>9} {:>9} {:>8} {:>8}",
        "#",
        "layer",
        "type",
        "mode",
        "cum cos",
        "iso cos",
        "cum dB",
        "iso dB",
        w = NAME_WIDTH
    );
    let cell = |v: Option<f64>, digits: usize| match v {
        Some(x) => format!("{x:.digits$}"),
        None => "-".to_string(),
    };
    for l in &measured {
        let _ = writeln!(
            o,
            "{:>4}  {:<w$}  {:<14} {:<5} {:>9} {:>9} {:>8} {:>8}",
            l.index,
            short(&l.name),
            l.op_type.trim_start_matches("top."),
            l.mode,
            cell(l.cumulative.map(|s| s.cos), 6),
            cell(l.isolated.map(|s| s.cos), 6),
            cell(l.cumulative.map(|s| s.sqnr_db), 2),
            cell(l.isolated.map(|s| s.sqnr_db), 2),
            w = NAME_WIDTH
        );
    }
    let mut worst: Vec<_> = measured
        .iter()
        .filter_map(|l| l.isolated.map(|s| (s.sqnr_db, *l)))
        .collect();
    worst.sort_by(|a, b| a.0.total_cmp(&b.0));
    if !worst.is_empty() {
        let names: Vec<String> = worst
            .iter()
            .take(5)
            .map(|(db, l)| format!("{} {:.1} dB", l.name, db))
            .collect();
        let _ = writeln!(o, "lowest isolated SQNR: {}", names.join(", "));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Layer, Similarity};

    #[test]
    fn table_lists_measured_layers() {
        let mut r = Report {
            similarity_samples: 2,
            ..Report::default()
        };
        for i in 0..3 {
            r.layers.push(Layer {
                index: i,
                name: format!("layer_with_a_rather_long_name_number_{i}"),
                op_type: "top.Conv".into(),
                mode: "INT8".into(),
                cumulative: (i != 1).then_some(Similarity {
                    cos: 0.99,
                    sqnr_db: 20.0 - i as f64,
                }),
                isolated: (i != 1).then_some(Similarity {
                    cos: 0.995,
                    sqnr_db: 30.0 - i as f64,
                }),
                ..Layer::default()
            });
        }
        let t = layer_table(&r);
        let lines: Vec<&str> = t.lines().collect();
        // Caption, header, two measured layers, the worst-layers line.
        assert_eq!(lines.len(), 5, "{t}");
        assert!(lines[2].contains("0.990000") && lines[2].contains("~"));
        assert!(
            lines[4].starts_with(
                "lowest isolated SQNR: layer_with_a_rather_long_name_number_2 28.0 dB"
            )
        );
    }
}
