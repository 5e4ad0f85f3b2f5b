//! Quantize table, "qtable" (spec §2.2): per-op precision overrides.

use crate::error::QuantError;
use std::io::Write;
use std::path::Path;

/// Precision of one op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantMode {
    F32,
    F16,
    BF16,
    Int8,
    Int4,
    W4Int8,
    F8E4M3,
    F8E4M3F16Dyn,
    F8E4M3BF16Dyn,
    F4F16Dyn,
    F4BF16Dyn,
}

impl QuantMode {
    pub const ALL: [QuantMode; 11] = [
        QuantMode::F32,
        QuantMode::F16,
        QuantMode::BF16,
        QuantMode::Int8,
        QuantMode::Int4,
        QuantMode::W4Int8,
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
            QuantMode::F8E4M3 => "F8E4M3",
            QuantMode::F8E4M3F16Dyn => "F8E4M3F16DYN",
            QuantMode::F8E4M3BF16Dyn => "F8E4M3BF16DYN",
            QuantMode::F4F16Dyn => "F4F16DYN",
            QuantMode::F4BF16Dyn => "F4BF16DYN",
        }
    }

    /// Exact (case-sensitive) match of the file spelling.
    pub fn parse(s: &str) -> Option<Self> {
        QuantMode::ALL.into_iter().find(|m| m.name() == s)
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

/// Reads qtable rows (`QuantizeTable.read`): `#` and blank lines skipped,
/// the first two whitespace-separated tokens are `name mode`.
pub fn parse_qtable(text: &str, path: &Path) -> Result<Vec<(String, QuantMode)>, QuantError> {
    let mut rows = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut it = line.split_whitespace();
        let name = it.next().unwrap_or_default();
        let Some(mode) = it.next() else {
            return Err(QuantError::Parse {
                path: path.to_path_buf(),
                line: idx + 1,
                message: format!("expected `op_name quantize_mode`, got `{line}`"),
            });
        };
        let Some(mode) = QuantMode::parse(mode) else {
            let known: Vec<&str> = QuantMode::ALL.iter().map(|m| m.name()).collect();
            return Err(QuantError::Parse {
                path: path.to_path_buf(),
                line: idx + 1,
                message: format!(
                    "op `{name}`: unknown quantize mode `{mode}` (expected one of {})",
                    known.join(", ")
                ),
            });
        };
        rows.push((name.to_string(), mode));
    }
    Ok(rows)
}

/// Reads a qtable file.
pub fn read_qtable(path: &Path) -> Result<Vec<(String, QuantMode)>, QuantError> {
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
        let rows = parse_qtable(want, Path::new("q")).unwrap();
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
}
