//! Calibration table (spec §2.1, `ActivationCalibrator.dump_cali_table`,
//! `CalibrationTable.parse`).
//!
//! Number format: Python's `'{:.7f}'.format(v)` of the float64 value. NumPy
//! float32 thresholds are widened to a Python float (exactly) before
//! formatting, so formatting `f64::from(f32)` gives the same text. Rust's
//! `{:.7}` rounds the exact binary value correctly, like Python; a binary
//! float can never be an exact tie at 7 decimals, so the tie rule never
//! matters. NaN and infinities are spelled as Python spells them.

use crate::error::QuantError;
use std::io::Write;
use std::path::Path;

/// `'{:.7f}'.format(v)`.
pub fn format_7f(v: f64) -> String {
    if v.is_nan() {
        "nan".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{v:.7}")
    }
}

/// The `# genetated time:` line.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum TimeLine {
    /// Written as given (TPU-MLIR writes `str(datetime.now())`).
    Text(String),
    /// Left out, for reproducible files.
    #[default]
    Omit,
}

/// The fourth header line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistogramLine {
    /// `# histogram number: <n>`.
    Bins(usize),
    /// `#tpu-mlir-fp8 caliration table` (sic), fp8 mode.
    Fp8,
}

/// One row: `name th min max`.
#[derive(Clone, Debug, PartialEq)]
pub struct CalibrationRow {
    pub name: String,
    pub threshold: f64,
    pub min: f64,
    pub max: f64,
}

impl CalibrationRow {
    pub fn new(name: impl Into<String>, threshold: f64, min: f64, max: f64) -> Self {
        CalibrationRow {
            name: name.into(),
            threshold,
            min,
            max,
        }
    }
}

/// A calibration table with its header fields and trailing sections.
#[derive(Clone, Debug, PartialEq)]
pub struct CalibrationTable {
    /// `pymlir.__version__`.
    pub mlir_version: String,
    /// The mlir path as given.
    pub mlir_file: String,
    pub time: TimeLine,
    /// `kl`, or the list repr `['kl']` for tuned tables.
    pub method: String,
    pub histogram: HistogramLine,
    /// Number of calibration batches.
    pub sample_number: usize,
    pub tune_number: i64,
    pub rows: Vec<CalibrationRow>,
    /// `#int4_th` section.
    pub int4_rows: Vec<CalibrationRow>,
    /// `#asym_op` section.
    pub asym_ops: Vec<String>,
    /// `# symmetric_op` comment section.
    pub symmetric_ops: Vec<String>,
    /// `#int4_op` section.
    pub int4_ops: Vec<String>,
    /// `#weight_scale` / `#weight_scale_fp8` section (tables from MQBench):
    /// `<consumer op>_weight` and its per-channel scales. Read so that such
    /// tables parse; TPU-MLIR's own writer never writes it, nor does qtune.
    pub weight_scales: Vec<(String, Vec<f64>)>,
    /// Rows set aside on reading because a number is not finite (see
    /// [`set_aside_non_finite`]), in file order.
    pub non_finite_rows: Vec<CalibrationRow>,
    /// Header lines as read (`#` lines before the stop marker), for callers
    /// that need what this struct does not parse.
    pub raw_headers: Vec<String>,
}

impl Default for CalibrationTable {
    fn default() -> Self {
        CalibrationTable {
            mlir_version: String::new(),
            mlir_file: String::new(),
            time: TimeLine::Omit,
            method: "kl".to_string(),
            histogram: HistogramLine::Bins(2048),
            sample_number: 0,
            tune_number: 5,
            rows: Vec::new(),
            int4_rows: Vec::new(),
            asym_ops: Vec::new(),
            symmetric_ops: Vec::new(),
            int4_ops: Vec::new(),
            weight_scales: Vec::new(),
            non_finite_rows: Vec::new(),
            raw_headers: Vec::new(),
        }
    }
}

fn write_row(out: &mut String, r: &CalibrationRow) {
    out.push_str(&format!(
        "{} {} {} {}\n",
        r.name,
        format_7f(r.threshold),
        format_7f(r.min),
        format_7f(r.max)
    ));
}

impl CalibrationTable {
    /// The file text, line for line as `dump_cali_table` writes it.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "# mlir version: {} cali version 1.0\n",
            self.mlir_version
        ));
        s.push_str(&format!("# mlir: {}\n", self.mlir_file));
        if let TimeLine::Text(t) = &self.time {
            s.push_str(&format!("# genetated time: {t}\n"));
        }
        s.push_str(&format!(
            "# quantization threshold calculation method: {}\n",
            self.method
        ));
        match self.histogram {
            HistogramLine::Bins(n) => s.push_str(&format!("# histogram number: {n}\n")),
            HistogramLine::Fp8 => s.push_str("#tpu-mlir-fp8 caliration table\n"),
        }
        s.push_str(&format!("# sample number: {}\n", self.sample_number));
        s.push_str("###\n");
        s.push_str(&format!("# tune number: {}\n", self.tune_number));
        s.push_str("###\n");
        s.push_str("# op_name    threshold    min    max\n");
        for r in &self.rows {
            write_row(&mut s, r);
        }
        if !self.int4_rows.is_empty() {
            s.push_str("\n#int4_th\n");
            for r in &self.int4_rows {
                write_row(&mut s, r);
            }
        }
        if !self.asym_ops.is_empty() {
            s.push_str("\n#asym_op\n");
            for n in &self.asym_ops {
                s.push_str(&format!("{n}\n"));
            }
        }
        if !self.symmetric_ops.is_empty() {
            s.push_str("\n# symmetric_op\n");
            for n in &self.symmetric_ops {
                s.push_str(&format!("# {n}\n"));
            }
        }
        if !self.int4_ops.is_empty() {
            s.push_str("\n#int4_op\n");
            for n in &self.int4_ops {
                s.push_str(&format!("{n}\n"));
            }
        }
        s
    }

    /// Writes the table atomically.
    pub fn write(&self, path: &Path) -> Result<(), QuantError> {
        let text = self.to_text();
        qtune_tensor::write_atomic(path, |w| w.write_all(text.as_bytes())).map_err(|source| {
            QuantError::Io {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// Reads a table file.
    pub fn read(path: &Path) -> Result<Self, QuantError> {
        let text = fs_err::read_to_string(path).map_err(|source| QuantError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses table text, accepting every variant TPU-MLIR writes or reads
    /// (the Python `CalibrationTable.parse` and the C++
    /// `ImportCalibrationTablePass`, `lib/Dialect/Top/Transforms/ImportCalibration.cpp`):
    ///
    /// - Headers: blank lines are skipped and `#` lines before the rows are
    ///   headers, whichever of them are present: the old 4-line header
    ///   (`# genetated time`, `# histogram number`, `# sample number`,
    ///   `# tune number`) and the newer one (`# mlir version`, `# mlir:`,
    ///   `# quantization threshold calculation method`) both read.
    /// - Rows are `name threshold min max`. The Python reader splits on
    ///   single spaces; the C++ importer (what `model_deploy` uses) takes any
    ///   whitespace (`\S+\s+[-0-9.e]+\s+[-0-9.e]+\s+[-0-9.e]+`), and so does
    ///   qtune. A row with another field count, or a field that is not a
    ///   number, is an error naming the line, as in the Python reader (the
    ///   C++ importer skips it silently).
    /// - A row whose threshold, min or max is not finite (`nan`, `inf`) is
    ///   set aside into [`CalibrationTable::non_finite_rows`]: the C++
    ///   importer's number pattern does not match those spellings, so
    ///   TPU-MLIR's `model_deploy` treats the tensor as uncalibrated. See
    ///   [`set_aside_non_finite`]; [`CalibrationTable::warnings`] says so.
    /// - Sections, switched by a `#` line holding a marker as the C++
    ///   importer does (`check_flag_line`): `#int4_th` (rows into
    ///   `int4_rows`), `#asym_op` and `#int4_op` (one op name per line),
    ///   `#weight_scale` / `#weight_scale_fp8` (`name n s1 .. sn`), and the
    ///   comment section `# symmetric_op` (`# name` lines) the Python writer
    ///   adds. The Python reader stops at `#asym_op` / `#int4_th`.
    /// - fp8 tables: `#tpu-mlir-fp8 caliration table` (sic; or MQBench's
    ///   `mqbench-fp8`) starts the fp8 block, and the C++ importer then
    ///   gives every following row the range `[-threshold, threshold]`
    ///   whatever its min and max columns say; qtune stores those rows with
    ///   `min = -threshold`, `max = threshold` (what TPU-MLIR's fp8 writer
    ///   writes today; older fp8 tables carry the observed min).
    ///
    /// `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, QuantError> {
        let mut table = CalibrationTable {
            method: String::new(),
            tune_number: 0,
            ..CalibrationTable::default()
        };
        let err = |line: usize, message: String| QuantError::Parse {
            path: path.to_path_buf(),
            line,
            message,
        };
        #[derive(PartialEq)]
        enum Section {
            Rows,
            Int4,
            Asym,
            Symmetric,
            Int4Ops,
            WeightScale,
        }
        let mut section = Section::Rows;
        let mut fp8 = false;
        for (idx, raw) in text.lines().enumerate() {
            let lineno = idx + 1;
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with('#') {
                // The C++ importer's markers are substrings of the line.
                if line.contains("#weight_scale") {
                    section = Section::WeightScale;
                    continue;
                }
                if line.contains("#int4_th") {
                    section = Section::Int4;
                    continue;
                }
                if line.contains("#tpu-mlir-fp8") || line.contains("mqbench-fp8") {
                    if line.starts_with("#tpu-mlir-fp8") {
                        table.histogram = HistogramLine::Fp8;
                    }
                    table.raw_headers.push(line.to_string());
                    section = Section::Rows;
                    fp8 = true;
                    continue;
                }
                if line.contains("asym_op") {
                    section = Section::Asym;
                    continue;
                }
                if line.contains("int4_op") {
                    section = Section::Int4Ops;
                    continue;
                }
                if line.starts_with("# symmetric_op") {
                    section = Section::Symmetric;
                    continue;
                }
                if section == Section::Symmetric {
                    table
                        .symmetric_ops
                        .push(line.trim_start_matches('#').trim().to_string());
                    continue;
                }
                if section == Section::Rows {
                    table.parse_header(line);
                    table.raw_headers.push(line.to_string());
                }
                continue;
            }
            match section {
                Section::Rows | Section::Int4 => {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    if fields.len() != 4 {
                        return Err(err(
                            lineno,
                            format!(
                                "expected 4 fields `name threshold min max`, got {}: `{line}`",
                                fields.len()
                            ),
                        ));
                    }
                    let num = |i: usize, what: &str| {
                        fields[i].parse::<f64>().map_err(|_| {
                            err(
                                lineno,
                                format!(
                                    "{what} of `{}` is not a number: `{}`",
                                    fields[0], fields[i]
                                ),
                            )
                        })
                    };
                    let mut row = CalibrationRow::new(
                        fields[0],
                        num(1, "threshold")?,
                        num(2, "min")?,
                        num(3, "max")?,
                    );
                    if section == Section::Rows {
                        if fp8 {
                            row.min = -row.threshold;
                            row.max = row.threshold;
                        }
                        table.rows.push(row);
                    } else {
                        table.int4_rows.push(row);
                    }
                }
                Section::WeightScale => {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let bad = || {
                        err(
                            lineno,
                            format!(
                                "expected `name n s1 .. sn` in the #weight_scale section, got `{line}`"
                            ),
                        )
                    };
                    let n: usize = fields.get(1).and_then(|n| n.parse().ok()).ok_or_else(bad)?;
                    if fields.len() != n.saturating_add(2) {
                        return Err(bad());
                    }
                    let scales = fields[2..]
                        .iter()
                        .map(|v| v.parse::<f64>())
                        .collect::<Result<Vec<f64>, _>>()
                        .map_err(|_| bad())?;
                    table.weight_scales.push((fields[0].to_string(), scales));
                }
                Section::Asym => table.asym_ops.push(line.to_string()),
                Section::Int4Ops => table.int4_ops.push(line.to_string()),
                Section::Symmetric => {}
            }
        }
        table.non_finite_rows = set_aside_non_finite(&mut table.rows);
        table
            .non_finite_rows
            .extend(set_aside_non_finite(&mut table.int4_rows));
        Ok(table)
    }

    /// What a reader of this table should be told: the rows set aside
    /// because a number is not finite. Empty for a clean table.
    pub fn warnings(&self) -> Vec<String> {
        if self.non_finite_rows.is_empty() {
            return Vec::new();
        }
        let list: Vec<String> = self
            .non_finite_rows
            .iter()
            .map(|r| {
                format!(
                    "{} ({} {} {})",
                    r.name,
                    format_7f(r.threshold),
                    format_7f(r.min),
                    format_7f(r.max)
                )
            })
            .collect();
        vec![format!(
            "{} row(s) with a number that is not finite are ignored, as TPU-MLIR's importer \
             ignores them (those tensors are uncalibrated; an INT8 op reading one needs it in \
             the qtable): {}",
            list.len(),
            list.join(", ")
        )]
    }

    fn parse_header(&mut self, line: &str) {
        let value = |prefix: &str| line.strip_prefix(prefix).map(|v| v.trim().to_string());
        if let Some(v) = value("# mlir version:") {
            self.mlir_version = v
                .strip_suffix("cali version 1.0")
                .unwrap_or(&v)
                .trim()
                .to_string();
        } else if let Some(v) = value("# mlir:") {
            self.mlir_file = v;
        } else if let Some(v) = value("# genetated time:") {
            self.time = TimeLine::Text(v);
        } else if let Some(v) = value("# quantization threshold calculation method:") {
            self.method = v;
        } else if let Some(v) = value("# histogram number:") {
            if let Ok(n) = v.parse() {
                self.histogram = HistogramLine::Bins(n);
            }
        } else if line.starts_with("#tpu-mlir-fp8") {
            self.histogram = HistogramLine::Fp8;
        } else if let Some(v) = value("# sample number:") {
            if let Ok(n) = v.parse() {
                self.sample_number = n;
            }
        } else if let Some(v) = value("# tune number:")
            && let Ok(n) = v.parse()
        {
            self.tune_number = n;
        }
    }

    /// Threshold, min and max of `name`.
    pub fn get(&self, name: &str) -> Option<&CalibrationRow> {
        self.rows.iter().find(|r| r.name == name)
    }
}

/// Takes the rows with a threshold, min or max that is not finite out of
/// `rows` and returns them. TPU-MLIR's C++ importer matches a row's numbers
/// with `[-0-9.e]+`, which `nan` and `inf` do not match, so such a row is
/// not a row there and its tensor stays uncalibrated; qtune does the same
/// (TPU-MLIR's own writer never writes a non-finite threshold: it clamps it
/// to 1e-5, but min and max can be `inf` or `nan`).
pub fn set_aside_non_finite(rows: &mut Vec<CalibrationRow>) -> Vec<CalibrationRow> {
    let finite =
        |r: &CalibrationRow| r.threshold.is_finite() && r.min.is_finite() && r.max.is_finite();
    let (kept, dropped): (Vec<_>, Vec<_>) = std::mem::take(rows).into_iter().partition(finite);
    *rows = kept;
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_matches_python() {
        // Values checked against CPython's '{:.7f}'.format.
        let cases: [(f64, &str); 8] = [
            (0.0, "0.0000000"),
            (-0.0, "-0.0000000"),
            (1.0, "1.0000000"),
            (-1e-9, "-0.0000000"),
            (f64::from(0.1f32), "0.1000000"),
            (2.675_000_05, "2.6750000"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (v, want) in cases {
            assert_eq!(format_7f(v), want, "value {v:e}");
        }
    }

    #[test]
    fn exact_layout() {
        let t = CalibrationTable {
            mlir_version: "v1.30.2".to_string(),
            mlir_file: "m.mlir".to_string(),
            time: TimeLine::Text("2024-01-01 00:00:00.000000".to_string()),
            sample_number: 4,
            rows: vec![CalibrationRow::new("conv1", 2.5, -1.0, 2.5)],
            ..CalibrationTable::default()
        };
        let want = "# mlir version: v1.30.2 cali version 1.0\n# mlir: m.mlir\n# genetated time: 2024-01-01 00:00:00.000000\n# quantization threshold calculation method: kl\n# histogram number: 2048\n# sample number: 4\n###\n# tune number: 5\n###\n# op_name    threshold    min    max\nconv1 2.5000000 -1.0000000 2.5000000\n";
        assert_eq!(t.to_text(), want);
        let back = CalibrationTable::parse(want, Path::new("t.txt")).unwrap();
        assert_eq!(back.rows, t.rows);
        assert_eq!(back.method, "kl");
        assert_eq!(back.sample_number, 4);
    }

    #[test]
    fn bad_row_names_file_and_line() {
        let text = "# header\n\nconv1 1.0 2.0\n";
        let e = CalibrationTable::parse(text, Path::new("cali.txt")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cali.txt, line 3: expected 4 fields `name threshold min max`, got 3: `conv1 1.0 2.0`"
        );
    }

    /// Every section TPU-MLIR's writer or importer knows, in one table:
    /// tab-separated rows, `#int4_th`, `#asym_op`, `# symmetric_op`,
    /// `#int4_op`, `#weight_scale`, and rows that are not finite.
    #[test]
    fn every_section_reads() {
        let text = "# mlir version: v1.30 cali version 1.0\n# mlir: m.mlir\n\
            # quantization threshold calculation method: ['kl']\n# histogram number: 2048\n\
            # sample number: 3\n###\n# tune number: 5\n###\n# op_name    threshold    min    max\n\
            a 1.5000000 -1.0000000 1.5000000\nb\t2.0  0.0\t3.0\r\n\
            c nan -1.0000000 1.0000000\nd 1.0000000 -inf 1.0000000\n\n\
            #int4_th\na 0.5000000 -0.5714286 0.5000000\ne inf 0.0 1.0\n\n\
            #asym_op\nsilu1\nconv2\n\n# symmetric_op\n# attn1\n\n#int4_op\nconv2\n\n\
            #weight_scale\nconv2_weight 3 0.1 0.2 0.3\n";
        let t = CalibrationTable::parse(text, Path::new("t")).unwrap();
        assert_eq!(t.method, "['kl']");
        assert_eq!(t.sample_number, 3);
        assert_eq!(t.tune_number, 5);
        assert_eq!(
            t.rows,
            vec![
                CalibrationRow::new("a", 1.5, -1.0, 1.5),
                CalibrationRow::new("b", 2.0, 0.0, 3.0),
            ]
        );
        assert_eq!(
            t.int4_rows,
            vec![CalibrationRow::new("a", 0.5, -0.5714286, 0.5)]
        );
        let dropped: Vec<&str> = t.non_finite_rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(dropped, ["c", "d", "e"]);
        assert_eq!(t.asym_ops, ["silu1", "conv2"]);
        assert_eq!(t.symmetric_ops, ["attn1"]);
        assert_eq!(t.int4_ops, ["conv2"]);
        assert_eq!(
            t.weight_scales,
            vec![("conv2_weight".to_string(), vec![0.1, 0.2, 0.3])]
        );
        let w = t.warnings();
        assert_eq!(w.len(), 1);
        assert!(
            w[0].starts_with("3 row(s) with a number that is not finite"),
            "{}",
            w[0]
        );
        assert!(w[0].contains("c (nan -1.0000000 1.0000000)"), "{}", w[0]);
        // A clean table has no warnings.
        let clean = CalibrationTable::parse("a 1.0 -1.0 1.0\n", Path::new("t")).unwrap();
        assert!(clean.warnings().is_empty());
    }

    /// The one small function that sets rows aside keeps the finite ones in
    /// order.
    #[test]
    fn set_aside_keeps_finite_rows_in_order() {
        let mut rows = vec![
            CalibrationRow::new("a", 1.0, -1.0, 1.0),
            CalibrationRow::new("b", f64::NAN, 0.0, 1.0),
            CalibrationRow::new("c", 2.0, 0.0, f64::INFINITY),
            CalibrationRow::new("d", 3.0, -3.0, 3.0),
        ];
        let dropped = set_aside_non_finite(&mut rows);
        let names = |r: &[CalibrationRow]| r.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&rows), ["a", "d"]);
        assert_eq!(names(&dropped), ["b", "c"]);
    }

    /// fp8 tables: every row after the marker gets `[-th, th]`, as the C++
    /// importer reads it; MQBench's marker too.
    #[test]
    fn fp8_rows_are_symmetric() {
        for marker in ["#tpu-mlir-fp8 caliration table", "# mqbench-fp8"] {
            let text =
                format!("# mlir: m.mlir\n{marker}\n# sample number: 2\n###\nx 2.0 -1.0 1.5\n");
            let t = CalibrationTable::parse(&text, Path::new("t")).unwrap();
            assert_eq!(
                t.rows,
                vec![CalibrationRow::new("x", 2.0, -2.0, 2.0)],
                "{marker}"
            );
            assert_eq!(t.sample_number, 2);
        }
    }

    #[test]
    fn bad_weight_scale_row_names_the_line() {
        let e = CalibrationTable::parse("#weight_scale\nw 3 0.1 0.2\n", Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t, line 2: expected `name n s1 .. sn`"),
            "{e}"
        );
    }
}
