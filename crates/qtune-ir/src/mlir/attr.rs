//! Attribute values of Top-dialect ops, and how MLIR prints them.

use std::fmt::{self, Write as _};

/// An MLIR attribute value, as far as Top ops use them.
///
/// Integers print as `1 : i64` (or `1 : si32` for the signed 32-bit axes
/// TPU-MLIR uses), floats as `6.000000e+00 : f64`, arrays as `[1, 2]` or
/// `[1.000000e+00, 2.000000e+00]`. `Opaque` keeps any other attribute (for
/// example a `#top<...>` enum) verbatim.
#[derive(Debug, Clone, PartialEq)]
pub enum MlirAttr {
    Bool(bool),
    I64(i64),
    SI32(i32),
    F64(f64),
    Str(String),
    I64Array(Vec<i64>),
    F64Array(Vec<f64>),
    StrArray(Vec<String>),
    /// `unit` attributes (a name alone) and anything else, printed as is.
    Opaque(String),
}

impl MlirAttr {
    /// The value as an integer, if it is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            MlirAttr::I64(v) => Some(*v),
            MlirAttr::SI32(v) => Some(i64::from(*v)),
            MlirAttr::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }
    /// The value as a float; integers convert.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            MlirAttr::F64(v) => Some(*v),
            MlirAttr::I64(v) => Some(*v as f64),
            MlirAttr::SI32(v) => Some(f64::from(*v)),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            MlirAttr::Bool(b) => Some(*b),
            MlirAttr::I64(v) => Some(*v != 0),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MlirAttr::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The value as an integer list; an empty float list is an empty list.
    pub fn as_i64_array(&self) -> Option<&[i64]> {
        match self {
            MlirAttr::I64Array(v) => Some(v),
            MlirAttr::F64Array(v) if v.is_empty() => Some(&[]),
            _ => None,
        }
    }
    /// The value as a float list; integer lists convert.
    pub fn as_f64_vec(&self) -> Option<Vec<f64>> {
        match self {
            MlirAttr::F64Array(v) => Some(v.clone()),
            MlirAttr::I64Array(v) => Some(v.iter().map(|&x| x as f64).collect()),
            _ => None,
        }
    }
}

/// Formats a float the way the MLIR printer does: `%e` with six digits when
/// that reads back to the same value, otherwise the shortest exact decimal;
/// infinities and NaN as the hexadecimal bit pattern.
pub fn format_f64(v: f64) -> String {
    if !v.is_finite() {
        return format!("0x{:016X}", v.to_bits());
    }
    let short = format_exp6(v);
    if short.parse::<f64>().ok() == Some(v) {
        return short;
    }
    let mut s = format!("{v:?}");
    if !s.contains(['.', 'e', 'E']) {
        s.push_str(".0");
    }
    s
}

/// `1.500000e+00`, as C's `%e`.
fn format_exp6(v: f64) -> String {
    let s = format!("{v:.6e}");
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    format!("{mant}e{sign}{digits:0>2}")
}

/// Quotes a string with MLIR's escapes.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\{b:02X}");
            }
        }
    }
    // Non-ASCII bytes were escaped one by one, which the reader undoes.
    out.push('"');
    out
}

impl fmt::Display for MlirAttr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MlirAttr::Bool(b) => write!(f, "{b}"),
            MlirAttr::I64(v) => write!(f, "{v} : i64"),
            MlirAttr::SI32(v) => write!(f, "{v} : si32"),
            MlirAttr::F64(v) => write!(f, "{} : f64", format_f64(*v)),
            MlirAttr::Str(s) => f.write_str(&quote(s)),
            MlirAttr::I64Array(v) => {
                let items: Vec<String> = v.iter().map(i64::to_string).collect();
                write!(f, "[{}]", items.join(", "))
            }
            MlirAttr::F64Array(v) => {
                let items: Vec<String> = v.iter().map(|x| format_f64(*x)).collect();
                write!(f, "[{}]", items.join(", "))
            }
            MlirAttr::StrArray(v) => {
                let items: Vec<String> = v.iter().map(|s| quote(s)).collect();
                write!(f, "[{}]", items.join(", "))
            }
            MlirAttr::Opaque(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_mlir_and_read_back() {
        assert_eq!(format_f64(6.0), "6.000000e+00");
        assert_eq!(format_f64(1e-5), "1.000000e-05");
        assert_eq!(format_f64(f64::INFINITY), "0x7FF0000000000000");
        for v in [0.1f32, 1.0 / 6.0, 1e-3, -3.5e20] {
            let s = format_f64(f64::from(v));
            assert_eq!(s.parse::<f64>().ok(), Some(f64::from(v)), "{s}");
        }
    }
}
