//! Quantize table, "qtable" (spec §2.2): per-op precision overrides.

use crate::error::QuantError;
use std::io::Write;
use std::path::Path;

/// Precision of one op: the modes of TPU-MLIR's `module::Mode` that a
/// qtable row may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantMode {
    F32,
    F16,
    BF16,
    Int8,
    Int4,
    W4Int8,
    /// Weight-only: int8 MatMul/Gemm weights, F16 activations.
    W8F16,
    /// Weight-only: int8 MatMul/Gemm weights, BF16 activations.
    W8BF16,
    /// Weight-only: int4 MatMul/Gemm weights, F16 activations.
    W4F16,
    /// Weight-only: int4 MatMul/Gemm weights, BF16 activations.
    W4BF16,
    F8E4M3,
    F8E4M3F16Dyn,
    F8E4M3BF16Dyn,
    F4F16Dyn,
    F4BF16Dyn,
}

impl QuantMode {
    pub const ALL: [QuantMode; 15] = [
        QuantMode::F32,
        QuantMode::F16,
        QuantMode::BF16,
        QuantMode::Int8,
        QuantMode::Int4,
        QuantMode::W4Int8,
        QuantMode::W8F16,
        QuantMode::W8BF16,
        QuantMode::W4F16,
        QuantMode::W4BF16,
        QuantMode::F8E4M3,
        QuantMode::F8E4M3F16Dyn,
        QuantMode::F8E4M3BF16Dyn,
        QuantMode::F4F16Dyn,
        QuantMode::F4BF16Dyn,
    ];

    /// The spelling in qtable files.
    pub fn name(self) -> &'static str {
        match self {
            QuantMode::F32 => "F32",
            QuantMode::F16 => "F16",
            QuantMode::BF16 => "BF16",
            QuantMode::Int8 => "INT8",
            QuantMode::Int4 => "INT4",
            QuantMode::W4Int8 => "W4INT8",
            QuantMode::W8F16 => "W8F16",
            QuantMode::W8BF16 => "W8BF16",
            QuantMode::W4F16 => "W4F16",
            QuantMode::W4BF16 => "W4BF16",
            QuantMode::F8E4M3 => "F8E4M3",
            QuantMode::F8E4M3F16Dyn => "F8E4M3F16DYN",
            QuantMode::F8E4M3BF16Dyn => "F8E4M3BF16DYN",
            QuantMode::F4F16Dyn => "F4F16DYN",
            QuantMode::F4BF16Dyn => "F4BF16DYN",
        }
    }

    /// The mode spelled `s`, in any case: TPU-MLIR's lowering upper-cases a
    /// qtable's mode before looking it up (`ConvertTopToTpu::qmode`), so
    /// `f16` and `F16` are the same mode.
    pub fn parse(s: &str) -> Option<Self> {
        QuantMode::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
    }

    /// The weight-only modes (`W8F16`, `W8BF16`, `W4F16`, `W4BF16`):
    /// quantized weights, float activations.
    pub fn is_weight_only(self) -> bool {
        matches!(
            self,
            QuantMode::W8F16 | QuantMode::W8BF16 | QuantMode::W4F16 | QuantMode::W4BF16
        )
    }
}

impl std::fmt::Display for QuantMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The lists and header of `QuantizeTable.dump`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizeTable {
    /// `# generated time:` text; `None` omits the line (reproducible files).
    pub time: Option<String>,
    pub sample_number: usize,
    pub chip: String,
    /// `(mode, custom operator types)` of `--part_quantize`, written as the
    /// `# # part_quant_mode:` line.
    pub part_quant_mode: Option<(String, Vec<String>)>,
    /// MatchPattern log lines (`# <line>` block).
    pub extra_info: Vec<String>,
    pub shape_layers: Vec<String>,
    pub shape_mode: QuantMode,
    pub pattern_layers: Vec<String>,
    pub pattern_mode: QuantMode,
    /// In insertion order; duplicates allowed.
    pub custom_layers: Vec<(String, QuantMode)>,
}

impl Default for QuantizeTable {
    fn default() -> Self {
        QuantizeTable {
            time: None,
            sample_number: 0,
            chip: "bm1684x".to_string(),
            part_quant_mode: None,
            extra_info: Vec::new(),
            shape_layers: Vec::new(),
            shape_mode: QuantMode::F32,
            pattern_layers: Vec::new(),
            pattern_mode: QuantMode::F32,
            custom_layers: Vec::new(),
        }
    }
}

impl QuantizeTable {
    /// The text of `QuantizeTable.dump`. Priority custom > shape > pattern:
    /// pattern layers also in the custom or shape lists, and shape layers
    /// also in the custom list, are not repeated.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        if let Some(t) = &self.time {
            s.push_str(&format!("# generated time: {t}\n"));
        }
        s.push_str(&format!("# sample number: {}\n", self.sample_number));
        s.push_str(&format!("# chip: {}\n", self.chip));
        let total = self.shape_layers.len() + self.pattern_layers.len() + self.custom_layers.len();
        s.push_str(&format!("# total layers: {total} (unique list blow)\n"));
        s.push_str(&format!(
            "# number of shape layers: {}\n",
            self.shape_layers.len()
        ));
        s.push_str(&format!(
            "# number of pattern layers: {}\n",
            self.pattern_layers.len()
        ));
        s.push_str(&format!(
            "# number of custom layers: {}\n",
            self.custom_layers.len()
        ));
        if let Some((mode, ops)) = &self.part_quant_mode {
            if ops.is_empty() {
                s.push_str(&format!("# # part_quant_mode: {mode}\n"));
            } else {
                s.push_str(&format!(
                    "# # part_quant_mode: {mode}, custom_operator: {}\n",
                    ops.join(",")
                ));
            }
        }
        s.push_str("###\n");
        if !self.extra_info.is_empty() {
            for l in &self.extra_info {
                s.push_str(&format!("# {l}\n"));
            }
            s.push_str("###\n");
        }
        s.push_str("# op_name   quantize_mode\n");
        let in_custom = |n: &str| self.custom_layers.iter().any(|(c, _)| c == n);
        s.push_str("# pattern layers\n");
        for l in &self.pattern_layers {
            if !in_custom(l) && !self.shape_layers.contains(l) {
                s.push_str(&format!("{l} {}\n", self.pattern_mode));
            }
        }
        s.push_str("# shape layers\n");
        for l in &self.shape_layers {
            if !in_custom(l) {
                s.push_str(&format!("{l} {}\n", self.shape_mode));
            }
        }
        s.push_str("# custom layers\n");
        for (l, m) in &self.custom_layers {
            s.push_str(&format!("{l} {m}\n"));
        }
        s
    }

    pub fn write(&self, path: &Path) -> Result<(), QuantError> {
        let text = self.to_text();
        qtune_tensor::write_atomic(path, |w| w.write_all(text.as_bytes())).map_err(|source| {
            QuantError::Io {
                path: path.to_path_buf(),
                source,
            }
        })
    }
}

/// One `op_name mode` row of a qtable file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QtableRow {
    /// 1-based line number in the file.
    pub line: usize,
    pub name: String,
    pub mode: QuantMode,
}

/// A qtable file as read: its rows, and the lines TPU-MLIR skips.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QtableFile {
    pub rows: Vec<QtableRow>,
    /// `(line number, text)` of the lines holding one token, which
    /// TPU-MLIR's lowering skips (`init_qtable`: a line matching `\S+`).
    pub one_token_lines: Vec<(usize, String)>,
}

impl QtableFile {
    /// The rows as `(name, mode)` pairs, in file order.
    pub fn pairs(&self) -> Vec<(String, QuantMode)> {
        self.rows.iter().map(|r| (r.name.clone(), r.mode)).collect()
    }
}

/// Reads a qtable as TPU-MLIR's lowering does (`ConvertTopToTpu::init_qtable`,
/// with `QuantizeTable.read`'s token rule): blank lines and `#` lines are
/// skipped; a line with one token is skipped (kept in
/// [`QtableFile::one_token_lines`] so that callers can say so); otherwise
/// the first two whitespace-separated tokens are `name mode`, the mode in any
/// case. A mode TPU-MLIR does not know is an error, as it is there (its
/// lowering aborts on it). Whether a name is an op of the model is for the
/// caller, which knows the model.
pub fn parse_qtable(text: &str, path: &Path) -> Result<QtableFile, QuantError> {
    let mut file = QtableFile::default();
    for (idx, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut it = line.split_whitespace();
        let name = it.next().unwrap_or_default();
        let Some(mode) = it.next() else {
            file.one_token_lines.push((idx + 1, line.to_string()));
            continue;
        };
        let Some(mode) = QuantMode::parse(mode) else {
            let known: Vec<&str> = QuantMode::ALL.iter().map(|m| m.name()).collect();
            return Err(QuantError::Parse {
                path: path.to_path_buf(),
                line: idx + 1,
                message: format!(
                    "op `{name}`: unknown quantize mode `{mode}` (expected one of {}, in any case)",
                    known.join(", ")
                ),
            });
        };
        file.rows.push(QtableRow {
            line: idx + 1,
            name: name.to_string(),
            mode,
        });
    }
    Ok(file)
}

/// Reads a qtable file (see [`parse_qtable`]).
pub fn read_qtable(path: &Path) -> Result<QtableFile, QuantError> {
    let text = fs_err::read_to_string(path).map_err(|source| QuantError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_qtable(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_layout_and_priority() {
        let t = QuantizeTable {
            sample_number: 3,
            shape_layers: vec!["shape1".into(), "both".into()],
            pattern_layers: vec!["pat1".into(), "both".into(), "cust".into()],
            custom_layers: vec![("cust".into(), QuantMode::F16)],
            ..QuantizeTable::default()
        };
        let want = "# sample number: 3\n# chip: bm1684x\n# total layers: 6 (unique list blow)\n# number of shape layers: 2\n# number of pattern layers: 3\n# number of custom layers: 1\n###\n# op_name   quantize_mode\n# pattern layers\npat1 F32\n# shape layers\nshape1 F32\nboth F32\n# custom layers\ncust F16\n";
        assert_eq!(t.to_text(), want);
        let rows = parse_qtable(want, Path::new("q")).unwrap().pairs();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[3], ("cust".to_string(), QuantMode::F16));
    }

    #[test]
    fn unknown_mode_is_an_error() {
        let e = parse_qtable("# x\nconv1 INT9\n", Path::new("q.txt")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("q.txt, line 2: op `conv1`: unknown quantize mode `INT9`")
        );
    }

    #[test]
    fn modes_in_any_case_and_one_token_lines_kept_apart() {
        let text = "# c\n\nconv1 f16\n  relu1\tbf16 extra\nlonely\nfc W8f16\n\tw4BF16\n";
        let f = parse_qtable(text, Path::new("q")).unwrap();
        let want = [
            (3, "conv1", QuantMode::F16),
            (4, "relu1", QuantMode::BF16),
            (6, "fc", QuantMode::W8F16),
        ];
        assert_eq!(f.rows.len(), want.len());
        for (row, (line, name, mode)) in f.rows.iter().zip(want) {
            assert_eq!((row.line, row.name.as_str(), row.mode), (line, name, mode));
        }
        assert_eq!(
            f.one_token_lines,
            vec![(5, "lonely".to_string()), (7, "w4BF16".to_string())]
        );
        for m in QuantMode::ALL {
            assert_eq!(QuantMode::parse(&m.name().to_ascii_lowercase()), Some(m));
            assert_eq!(
                m.is_weight_only(),
                m.name().starts_with("W8")
                    || m.name().starts_with("W4") && m.name().ends_with("16")
            );
        }
    }
}
