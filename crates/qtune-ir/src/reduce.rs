//! The reduction family: one registration per op.
//!
//! Every op of the family (ONNX's `Reduce*`: one data input, the axes as an
//! attribute or, from an opset on, as input 1, `keepdims` and
//! `noop_with_empty_axes`, all in [`ReduceAttrs`]) is one entry of the
//! `reduce_family!` table at the end of this file, which holds what every
//! crate needs to know about it:
//!
//! - its ONNX op type (the entry's name) and the opset from which ONNX
//!   takes its axes as an input ([`ReduceSpec::axes_input_from`]);
//! - its definition as a fold ([`ReduceSpec::init`], [`ReduceSpec::map`],
//!   [`ReduceSpec::combine`], [`ReduceSpec::finish`]), which the executor
//!   runs when `qtune-kernels` has no kernel for the op, and which the
//!   kernel tests compare the kernels against;
//! - its Top dialect mode (`top.Reduce` with `mode = "ReduceMean"`, ...);
//! - whether a TPU profile lowers it to int8 ([`ReduceSpec::cv18xx_int8`]:
//!   the BM168x families keep every reduction in float).
//!
//! From the table come [`Op::reduce`], [`REDUCE_OPS`], [`by_onnx`],
//! [`by_top_mode`], and the
//! pattern macro [`reduce_op!`](crate::reduce_op) that the other crates'
//! `match`es use for the whole family. Shape inference, the ONNX import and
//! export, the `.mlir` reader and writer, the executor and the deploy plan
//! consult the registry; `docs/adding-an-op.md` says what is left per crate.

use crate::{Op, ReduceAttrs};

/// Everything qtune knows about one op of the family.
#[derive(Debug)]
pub struct ReduceSpec {
    /// The IR and ONNX op type, the variant's name.
    pub name: &'static str,
    /// The opset from which ONNX takes `axes` as input 1 instead of an
    /// attribute (13 for ReduceSum, 18 for the others).
    pub axes_input_from: i64,
    /// The `mode` of TPU-MLIR's `top.Reduce` for it.
    pub top_mode: &'static str,
    /// The fold's start value.
    pub init: f64,
    /// Applied to each element before the fold (`|x|` for ReduceL1).
    pub map: fn(f64) -> f64,
    /// The fold.
    pub combine: fn(f64, f64) -> f64,
    /// Applied to the fold's result, given the number of elements reduced
    /// (the mean's division, the L2 norm's square root).
    pub finish: fn(f64, usize) -> f64,
    /// TPU-MLIR's CV18xx lowering has an int8 form of it (the BM168x
    /// families keep every reduction in float: `chip_float` in
    /// `qtune-deploy/src/plan.rs`).
    pub cv18xx_int8: bool,
    /// Notes for the Top op table (`docs/tpu-mlir-top-ops.md`).
    pub top_notes: &'static str,
    /// The op with these attributes.
    pub build: fn(ReduceAttrs) -> Op,
}

impl ReduceSpec {
    /// The definition over `values` (the elements of one output position),
    /// in f64: the reference the kernels are checked against.
    pub fn reference(&self, values: impl IntoIterator<Item = f32>) -> f32 {
        let mut n = 0;
        let acc = values.into_iter().fold(self.init, |acc, x| {
            n += 1;
            (self.combine)(acc, (self.map)(f64::from(x)))
        });
        (self.finish)(acc, n) as f32
    }
}

/// The registration of the op whose ONNX type is `onnx`, if any.
pub fn by_onnx(onnx: &str) -> Option<&'static ReduceSpec> {
    REDUCE_OPS.iter().find(|s| s.name == onnx)
}

/// The registration of `top.Reduce` with mode `mode`, if any.
pub fn by_top_mode(mode: &str) -> Option<&'static ReduceSpec> {
    REDUCE_OPS.iter().find(|s| s.top_mode == mode)
}

/// The `top.Reduce` row of the Top op table (its modes from the registry).
pub(crate) fn top_rows() -> impl Iterator<Item = [String; 5]> {
    let modes: Vec<&str> = REDUCE_OPS.iter().map(|s| s.top_mode).collect();
    let names: Vec<&str> = REDUCE_OPS.iter().map(|s| s.name).collect();
    let notes: Vec<&str> = REDUCE_OPS
        .iter()
        .map(|s| s.top_notes)
        .filter(|n| !n.is_empty())
        .collect();
    std::iter::once([
        "top.Reduce".to_string(),
        "input".to_string(),
        format!(
            "axes, keepdims, noop_with_empty_axes, mode ({})",
            modes.join(", ")
        ),
        names.join(" / "),
        notes.join("; "),
    ])
}

/// The table. Each entry: `Variant => { fields }`, the fields being those of
/// [`ReduceSpec`] but `name` and `build`, which come from the variant.
macro_rules! reduce_family {
    ($(
        $variant:ident => { $($key:ident : $val:expr),* $(,)? }
    ),* $(,)?) => {
        /// Every op of the reduction family.
        pub static REDUCE_OPS: &[ReduceSpec] = &[$(
            ReduceSpec {
                name: stringify!($variant),
                top_mode: stringify!($variant),
                build: Op::$variant,
                $($key: $val),*
            }
        ),*];

        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        enum Ix { $($variant),* }

        impl Op {
            /// This op's registration and attributes, when it belongs to
            /// the reduction family.
            pub fn reduce(&self) -> Option<(&'static ReduceSpec, &ReduceAttrs)> {
                let (ix, a) = match self {
                    $(Op::$variant(a) => (Ix::$variant as usize, a),)*
                    _ => return None,
                };
                Some((&REDUCE_OPS[ix], a))
            }
        }

        /// A pattern matching every [`Op`] of the reduction family
        /// (generated from the registry in `qtune-ir/src/reduce.rs`): a
        /// `match` arm `reduce_op!() => ...` keeps the match exhaustive
        /// whatever the family holds. Handle it through [`Op::reduce`].
        #[macro_export]
        macro_rules! reduce_op {
            () => { $($crate::Op::$variant(_))|* };
        }
    };
}

fn sum(a: f64, b: f64) -> f64 {
    a + b
}

fn same(x: f64) -> f64 {
    x
}

fn done(acc: f64, _: usize) -> f64 {
    acc
}

reduce_family! {
    ReduceMean => {
        axes_input_from: 18, init: 0.0, map: same, combine: sum,
        finish: |acc, n| acc / n as f64,
        cv18xx_int8: true, top_notes: "",
    },
    ReduceSum => {
        axes_input_from: 13, init: 0.0, map: same, combine: sum, finish: done,
        cv18xx_int8: true, top_notes: "",
    },
    ReduceL2 => {
        axes_input_from: 18, init: 0.0, map: |x| x * x, combine: sum,
        finish: |acc, _| acc.sqrt(),
        cv18xx_int8: false, top_notes: "",
    },
    ReduceMax => {
        axes_input_from: 18, init: f64::NEG_INFINITY, map: same,
        combine: |a, b| if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) },
        finish: done,
        cv18xx_int8: true, top_notes: "",
    },
    ReduceMin => {
        axes_input_from: 18, init: f64::INFINITY, map: same,
        combine: |a, b| if a.is_nan() || b.is_nan() { f64::NAN } else { a.min(b) },
        finish: done,
        cv18xx_int8: true, top_notes: "",
    },
    ReduceL1 => {
        axes_input_from: 18, init: 0.0, map: f64::abs, combine: sum, finish: done,
        cv18xx_int8: false, top_notes: "",
    },
    ReduceProd => {
        axes_input_from: 18, init: 1.0, map: same, combine: |a, b| a * b, finish: done,
        cv18xx_int8: false, top_notes: "",
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_round_trips_through_its_op() {
        for spec in REDUCE_OPS {
            let attrs = ReduceAttrs {
                axes: Some(vec![1, -1]),
                keepdims: false,
                noop_with_empty_axes: true,
            };
            let op = (spec.build)(attrs.clone());
            let (s, a) = op.reduce().expect("a registered op reduces");
            assert!(std::ptr::eq(s, spec), "{}", spec.name);
            assert_eq!(a, &attrs);
            assert_eq!(op.op_type(), spec.name);
            assert!(matches!(op, reduce_op!()), "{}", spec.name);
            assert!(std::ptr::eq(by_onnx(spec.name).unwrap(), spec));
            assert!(std::ptr::eq(by_top_mode(spec.top_mode).unwrap(), spec));
            assert!(crate::SUPPORTED_OPS.contains(&spec.name), "{}", spec.name);
        }
        assert!(Op::Softmax { axis: 1 }.reduce().is_none());
        assert!(by_onnx("Reduce").is_none());
    }

    /// TPU-MLIR's CV18xx lowering has int8 for these, BF16 for ReduceL2
    /// (`CV18xx/Reduce.cpp`; docs/tpu-mlir-int8-lowering.md).
    #[test]
    fn cv18xx_rules_follow_tpu_mlir() {
        let int8: Vec<&str> = REDUCE_OPS
            .iter()
            .filter(|s| s.cv18xx_int8)
            .map(|s| s.name)
            .collect();
        assert_eq!(int8, ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"]);
    }

    #[test]
    fn definitions_follow_onnx() {
        let r = |name: &str, v: &[f32]| by_onnx(name).unwrap().reference(v.iter().copied());
        let v = [3.0, -4.0, 1.0, 0.0];
        assert_eq!(r("ReduceMean", &v), 0.0);
        assert_eq!(r("ReduceSum", &v), 0.0);
        assert_eq!(r("ReduceL2", &v), 26f32.sqrt());
        assert_eq!(r("ReduceMax", &v), 3.0);
        assert_eq!(r("ReduceMin", &v), -4.0);
        assert!(r("ReduceMax", &[1.0, f32::NAN]).is_nan());
        // ONNX: the max of nothing is -inf (ReduceMax over an empty axis).
        assert_eq!(r("ReduceMax", &[]), f32::NEG_INFINITY);
    }
}
