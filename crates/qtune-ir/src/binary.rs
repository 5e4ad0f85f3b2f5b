//! The elementwise binary family: one registration per op.
//!
//! Every op of the family (two inputs broadcast against each other, one
//! output of the broadcast shape, no attributes) is one entry of the
//! `binary_family!` table at the end of this file, which holds what every
//! crate needs to know about it:
//!
//! - its ONNX op type (the entry's name: every op of the family is an ONNX
//!   op);
//! - its scalar definitions ([`BinaryKind`]: for `f32` and `i64` operands,
//!   or the comparison or logic function), which the executor runs when
//!   `qtune-kernels` has no vectorised kernel for the op, and which the
//!   kernel tests compare the fast kernels against;
//! - how TPU-MLIR spells it in the Top dialect ([`TopBinary`]): the op for
//!   two tensors, and the `*Const` forms for a one-element constant operand
//!   (`top.AddConst`, `top.Reciprocal`, `top.CompareConst`, ...), which the
//!   `.mlir` writer chooses and the reader accepts;
//! - how the TPU profiles propagate its range ([`BinaryRange`]).
//!
//! From the table come [`Op::binary`], [`BINARY_OPS`], [`by_onnx`],
//! [`by_top`], and the pattern
//! macro [`binary_op!`](crate::binary_op) that the other crates' `match`es
//! use for the whole family. Shape inference, the ONNX import and export, the
//! `.mlir` reader and writer, the executor and the deploy plan's range rules
//! consult the registry; `docs/adding-an-op.md` says what is left per crate.
//! The unary family's registry ([`crate::unary`]) is the model.

use crate::Op;

/// What the op computes, by operand type.
#[derive(Debug, Clone, Copy)]
pub enum BinaryKind {
    /// Numbers in, a number of the same type out (Add, Sub, ..., Max).
    Arith {
        /// On `f32` operands.
        f32: fn(f32, f32) -> f32,
        /// On `i64` operands (shape arithmetic): the value, or why there is
        /// none (division by zero, a negative exponent).
        i64: fn(i64, i64) -> Result<i64, &'static str>,
    },
    /// Numbers (or booleans, when `bool` is given) in, a boolean out.
    Compare {
        f32: fn(f32, f32) -> bool,
        i64: fn(i64, i64) -> bool,
        bool: Option<fn(bool, bool) -> bool>,
    },
    /// Booleans in, a boolean out.
    Logic(fn(bool, bool) -> bool),
}

impl BinaryKind {
    /// Whether the output is boolean (comparisons and logic).
    pub fn is_bool(&self) -> bool {
        !matches!(self, BinaryKind::Arith { .. })
    }
}

/// A Top op that carries one operand as an F64 attribute (`top.AddConst`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopConst {
    /// The op (`top.AddConst`).
    pub op: &'static str,
    /// The attribute holding the constant (`const_val`, `exponent`).
    pub attr: &'static str,
    /// Its value when the attribute is absent (read).
    pub default: f64,
    /// The constant is the left operand (`c op x`) when `reverse` is not set
    /// (`top.Reciprocal`: `c / x`).
    pub left: bool,
    /// The boolean attribute that, true, puts the constant on the other
    /// side (`is_reverse`, `inversed`).
    pub reverse: Option<&'static str>,
    /// Written with `-c` (TPU-MLIR writes `x - c` as `AddConst(-c)`); such
    /// a form is never read as this op (the reader reads the op it names).
    pub negated: bool,
    /// The op carries `do_relu` (written false; read as a fused Relu).
    pub relu: bool,
}

impl TopConst {
    /// A `const_val` form with the constant on the right, `do_relu`, and
    /// `is_reverse` to put it on the left (`top.AddConst`).
    const fn rhs(op: &'static str) -> TopConst {
        TopConst {
            op,
            attr: "const_val",
            default: 0.0,
            left: false,
            reverse: Some("is_reverse"),
            negated: false,
            relu: true,
        }
    }

    /// Whether the form reads `inversed`/`is_reverse` as true, given where
    /// the constant must go: `None` when the form cannot put it there.
    fn reverse_for(&self, left: bool) -> Option<bool> {
        match (self.left == left, self.reverse) {
            (true, _) => Some(false),
            (false, Some(_)) => Some(true),
            (false, None) => None,
        }
    }
}

/// How the Top dialect spells one op of the family.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopBinary {
    /// The op for two tensor operands (`top.Add`, `top.Pow3`, `top.Compare`).
    pub op: &'static str,
    /// Other ops read as the two-tensor form when they have two operands
    /// (`top.Pow`).
    pub also: &'static [&'static str],
    /// The `mode` attribute, for ops that share one Top op (`top.Compare`);
    /// the `*Const` forms carry it too.
    pub mode: Option<&'static str>,
    /// The op carries `do_relu` (written false; read as a fused Relu).
    pub relu: bool,
    /// More than two operands are read as a left-to-right chain
    /// (TPU-MLIR's variadic `top.Add`, `top.Mul`, `top.Max`, ...).
    pub variadic: bool,
    /// The forms with a one-element constant operand, in the writer's order
    /// of preference (the first that can put the constant where it is).
    pub consts: &'static [TopConst],
}

/// How the TPU profiles treat the op's range (spec "Range propagation").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryRange {
    /// The inputs and the output keep their own calibrated ranges (Add,
    /// Mul, ...); the sign rules of Mul and Sub are the plan's.
    Own,
    /// A boolean output: not quantized (comparisons, And, Or).
    Boolean,
    /// The output is one of the inputs (Max, Min): the inputs take the
    /// output's range (step 3, as Concat's), and with a one-element constant
    /// operand (TPU-MLIR's `MaxConst`/`MinConst`) the output takes the
    /// other input's range (step 7).
    Selects,
}

/// Everything qtune knows about one op of the family.
#[derive(Debug)]
pub struct BinarySpec {
    /// The IR and ONNX op type, the variant's name.
    pub name: &'static str,
    /// What it computes.
    pub kind: BinaryKind,
    /// `a op b == b op a` (the writer may swap a constant to the right).
    pub commutative: bool,
    /// Its Top dialect forms.
    pub top: TopBinary,
    /// Range propagation on the TPU profiles.
    pub range: BinaryRange,
    /// Notes for the Top op table (`docs/tpu-mlir-top-ops.md`).
    pub top_notes: &'static str,
    /// The op.
    pub build: fn() -> Op,
}

/// The registration of the op whose ONNX type is `onnx`, if any.
pub fn by_onnx(onnx: &str) -> Option<&'static BinarySpec> {
    BINARY_OPS.iter().find(|s| s.name == onnx)
}

/// A Top op read as an op of the family.
#[derive(Debug, Clone, Copy)]
pub enum TopRead {
    /// Two (or, variadic, more) tensor operands.
    Tensors(&'static BinarySpec),
    /// One tensor operand and a constant attribute.
    Const(&'static BinarySpec, &'static TopConst),
}

/// The registration of Top op `op` (with its `mode` attribute, if any)
/// written with `operands` operands.
pub fn by_top(op: &str, mode: Option<&str>, operands: usize) -> Option<TopRead> {
    BINARY_OPS
        .iter()
        .filter(|s| s.top.mode == mode)
        .find_map(|s| {
            if operands >= 2 && (s.top.op == op || s.top.also.contains(&op)) {
                return Some(TopRead::Tensors(s));
            }
            let c = s.top.consts.iter().find(|c| !c.negated && c.op == op)?;
            (operands == 1).then_some(TopRead::Const(s, c))
        })
}

/// Whether `op` is a Top op of the family (in any of its forms).
pub fn is_top(op: &str) -> bool {
    BINARY_OPS.iter().any(|s| {
        s.top.op == op || s.top.also.contains(&op) || s.top.consts.iter().any(|c| c.op == op)
    })
}

impl BinarySpec {
    /// The form to write a one-element constant operand with, and whether
    /// its `reverse` flag is set; `left`: the constant is the left operand.
    /// `None`: the op has no form for it (written as two tensors).
    pub fn const_form(&self, left: bool) -> Option<(&'static TopConst, bool)> {
        // A commutative op writes `c op x` as `x op c`.
        let left = left && !self.commutative;
        self.top
            .consts
            .iter()
            .find_map(|c| c.reverse_for(left).map(|r| (c, r)))
    }
}

/// `Top op | operands | attributes | IR op | notes` of each Top form of the
/// family, for the Top op table.
pub(crate) fn top_rows() -> impl Iterator<Item = [String; 5]> {
    BINARY_OPS.iter().flat_map(|s| {
        let mode = s.top.mode.map(|m| format!("mode ({m})"));
        let relu = s.top.relu.then(|| "do_relu, relu_limit".to_string());
        let mut attrs: Vec<String> = mode.iter().chain(&relu).cloned().collect();
        let mut notes = vec![];
        if s.top.variadic {
            notes.push(format!("more than two inputs are a chain of {}s", s.name));
        }
        if !s.top_notes.is_empty() {
            notes.push(s.top_notes.to_string());
        }
        if !s.commutative && s.top.relu {
            attrs.push("is_reverse".into());
        }
        if s.top.op == "top.Add" || s.top.op == "top.Sub" || s.top.op == "top.Mul" {
            attrs.push("coeff (all 1)".into());
            notes.push("coeff other than 1 is an error".into());
        }
        let tensors = std::iter::once(s.top.op)
            .chain(s.top.also.iter().copied())
            .map(move |op| {
                [
                    op.to_string(),
                    "lhs, rhs".to_string(),
                    attrs.join(", "),
                    s.name.to_string(),
                    notes.join("; "),
                ]
            });
        let consts = s.top.consts.iter().filter(|c| !c.negated).map(move |c| {
            let attrs: Vec<String> = s
                .top
                .mode
                .map(|m| format!("mode ({m})"))
                .into_iter()
                .chain([c.attr.to_string()])
                .chain(c.reverse.map(str::to_string))
                .chain(c.relu.then(|| "do_relu, relu_limit".to_string()))
                .collect();
            let form = match (c.left, c.reverse) {
                (false, Some(r)) => format!("x {} c; c {} x with {r}", s.name, s.name),
                (true, Some(r)) => format!("c {} x; x {} c with {r}", s.name, s.name),
                (false, None) => format!("x {} c", s.name),
                (true, None) => format!("c {} x", s.name),
            };
            [
                c.op.to_string(),
                "input".to_string(),
                attrs.join(", "),
                format!("{} (scalar constant)", s.name),
                form,
            ]
        });
        tensors.chain(consts)
    })
}

/// The table. Each entry: `Variant => { fields }`, the fields being those of
/// [`BinarySpec`] but `name` and `build`, which come from the variant.
macro_rules! binary_family {
    ($(
        $variant:ident => { $($key:ident : $val:expr),* $(,)? }
    ),* $(,)?) => {
        /// Every op of the elementwise binary family.
        pub static BINARY_OPS: &[BinarySpec] = &[$(
            BinarySpec {
                name: stringify!($variant),
                build: || Op::$variant,
                $($key: $val),*
            }
        ),*];

        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        enum Ix { $($variant),* }

        impl Op {
            /// This op's registration, when it belongs to the elementwise
            /// binary family.
            pub fn binary(&self) -> Option<&'static BinarySpec> {
                let ix = match self {
                    $(Op::$variant => Ix::$variant as usize,)*
                    _ => return None,
                };
                Some(&BINARY_OPS[ix])
            }
        }

        /// A pattern matching every [`Op`] of the elementwise binary family
        /// (generated from the registry in `qtune-ir/src/binary.rs`): a
        /// `match` arm `binary_op!() => ...` keeps the match exhaustive
        /// whatever the family holds. Handle it through [`Op::binary`].
        #[macro_export]
        macro_rules! binary_op {
            () => { $($crate::Op::$variant)|* };
        }
    };
}

const ARITH_TOP: TopBinary = TopBinary {
    op: "",
    also: &[],
    mode: None,
    relu: true,
    variadic: true,
    consts: &[],
};

const fn compare(mode: &'static str) -> TopBinary {
    TopBinary {
        op: "top.Compare",
        also: &[],
        mode: Some(mode),
        relu: false,
        variadic: false,
        consts: &[TopConst {
            op: "top.CompareConst",
            attr: "const_val",
            default: 0.0,
            left: false,
            reverse: Some("inversed"),
            negated: false,
            relu: false,
        }],
    }
}

binary_family! {
    Add => {
        kind: BinaryKind::Arith { f32: |a, b| a + b, i64: |a, b| Ok(a.wrapping_add(b)) },
        commutative: true,
        top: TopBinary { op: "top.Add", consts: &[TopConst::rhs("top.AddConst")], ..ARITH_TOP },
        range: BinaryRange::Own, top_notes: "",
    },
    Sub => {
        kind: BinaryKind::Arith { f32: |a, b| a - b, i64: |a, b| Ok(a.wrapping_sub(b)) },
        commutative: false,
        top: TopBinary {
            op: "top.Sub",
            consts: &[
                // `x - c` as TPU-MLIR's converter writes it.
                TopConst { negated: true, reverse: None, ..TopConst::rhs("top.AddConst") },
                TopConst::rhs("top.SubConst"),
            ],
            ..ARITH_TOP
        },
        range: BinaryRange::Own,
        top_notes: "x - c is written as AddConst(-c), as TPU-MLIR's converter does",
    },
    Mul => {
        kind: BinaryKind::Arith { f32: |a, b| a * b, i64: |a, b| Ok(a.wrapping_mul(b)) },
        commutative: true,
        top: TopBinary { op: "top.Mul", consts: &[TopConst::rhs("top.MulConst")], ..ARITH_TOP },
        range: BinaryRange::Own, top_notes: "",
    },
    Div => {
        kind: BinaryKind::Arith {
            f32: |a, b| a / b,
            i64: |a, b| if b == 0 { Err("integer division by zero") } else { Ok(a.wrapping_div(b)) },
        },
        commutative: false,
        top: TopBinary {
            op: "top.Div",
            variadic: false,
            // `c / x` (TPU-MLIR's `convert_div_op`).
            consts: &[TopConst {
                op: "top.Reciprocal", default: 1.0, left: true, reverse: None,
                ..TopConst::rhs("")
            }],
            ..ARITH_TOP
        },
        range: BinaryRange::Own, top_notes: "",
    },
    Pow => {
        kind: BinaryKind::Arith {
            f32: f32::powf,
            i64: |a, b| u32::try_from(b).map(|e| a.wrapping_pow(e)).map_err(|_| "negative integer exponent"),
        },
        commutative: false,
        top: TopBinary {
            op: "top.Pow3",
            also: &["top.Pow"],
            relu: false,
            variadic: false,
            consts: &[
                TopConst {
                    op: "top.Pow", attr: "exponent", default: 1.0, reverse: None, relu: false,
                    ..TopConst::rhs("")
                },
                // `c ^ x`.
                TopConst {
                    op: "top.Pow2", default: 1.0, left: true, reverse: None, relu: false,
                    ..TopConst::rhs("")
                },
            ],
            ..ARITH_TOP
        },
        range: BinaryRange::Own, top_notes: "",
    },
    Max => {
        kind: BinaryKind::Arith {
            f32: |a, b| if a.is_nan() || b.is_nan() { f32::NAN } else { a.max(b) },
            i64: |a, b| Ok(a.max(b)),
        },
        commutative: true,
        top: TopBinary {
            op: "top.Max",
            relu: false,
            consts: &[TopConst { reverse: None, relu: false, ..TopConst::rhs("top.MaxConst") }],
            ..ARITH_TOP
        },
        range: BinaryRange::Selects, top_notes: "NaN if either input is NaN",
    },
    Min => {
        kind: BinaryKind::Arith {
            f32: |a, b| if a.is_nan() || b.is_nan() { f32::NAN } else { a.min(b) },
            i64: |a, b| Ok(a.min(b)),
        },
        commutative: true,
        top: TopBinary {
            op: "top.Min",
            relu: false,
            consts: &[TopConst { reverse: None, relu: false, ..TopConst::rhs("top.MinConst") }],
            ..ARITH_TOP
        },
        range: BinaryRange::Selects, top_notes: "NaN if either input is NaN",
    },
    And => {
        kind: BinaryKind::Logic(|a, b| a && b),
        commutative: true, top: compare("And"), range: BinaryRange::Boolean, top_notes: "",
    },
    Or => {
        kind: BinaryKind::Logic(|a, b| a || b),
        commutative: true, top: compare("Or"), range: BinaryRange::Boolean, top_notes: "",
    },
    Equal => {
        kind: BinaryKind::Compare { f32: |a, b| a == b, i64: |a, b| a == b, bool: Some(|a, b| a == b) },
        commutative: true, top: compare("Equal"), range: BinaryRange::Boolean, top_notes: "",
    },
    Less => {
        kind: BinaryKind::Compare { f32: |a, b| a < b, i64: |a, b| a < b, bool: Some(|a, b| !a & b) },
        commutative: false, top: compare("Less"), range: BinaryRange::Boolean, top_notes: "",
    },
    Greater => {
        kind: BinaryKind::Compare { f32: |a, b| a > b, i64: |a, b| a > b, bool: Some(|a, b| a & !b) },
        commutative: false, top: compare("Greater"), range: BinaryRange::Boolean, top_notes: "",
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_round_trips_through_its_op() {
        for spec in BINARY_OPS {
            let op = (spec.build)();
            assert!(std::ptr::eq(op.binary().unwrap(), spec), "{}", spec.name);
            assert_eq!(op.op_type(), spec.name);
            assert!(matches!(op, binary_op!()), "{}", spec.name);
            assert!(std::ptr::eq(by_onnx(spec.name).unwrap(), spec));
            assert!(crate::SUPPORTED_OPS.contains(&spec.name), "{}", spec.name);
            assert_eq!(op.is_elementwise(), !spec.kind.is_bool(), "{}", spec.name);
            assert_eq!(spec.range == BinaryRange::Boolean, spec.kind.is_bool());
            // Every Top form reads back as this op, with the constant where
            // the writer put it.
            assert!(matches!(
                by_top(spec.top.op, spec.top.mode, 2),
                Some(TopRead::Tensors(s)) if std::ptr::eq(s, spec)
            ));
            for left in [false, true] {
                let Some((form, reversed)) = spec.const_form(left) else {
                    continue;
                };
                assert!(is_top(form.op));
                if form.negated {
                    continue;
                }
                let Some(TopRead::Const(s, c)) = by_top(form.op, spec.top.mode, 1) else {
                    panic!("{} {} does not read back", spec.name, form.op);
                };
                assert!(std::ptr::eq(s, spec), "{} {}", spec.name, form.op);
                assert_eq!(c, form);
                let reads_left = c.left != reversed;
                assert_eq!(
                    reads_left,
                    left && !spec.commutative,
                    "{} {}",
                    spec.name,
                    c.op
                );
            }
        }
        assert!(Op::Softmax { axis: 1 }.binary().is_none());
        assert!(Op::MatMul.binary().is_none());
        assert!(by_onnx("MatMul").is_none());
        assert!(by_top("top.Compare", Some("Not"), 1).is_none());
    }

    #[test]
    fn const_forms_follow_tpu_mlir() {
        let form = |name: &str, left: bool| {
            by_onnx(name)
                .unwrap()
                .const_form(left)
                .map(|(c, r)| (c.op, c.negated, r))
        };
        // `x - c` is AddConst(-c); `c - x` is SubConst with is_reverse.
        assert_eq!(form("Sub", false), Some(("top.AddConst", true, false)));
        assert_eq!(form("Sub", true), Some(("top.SubConst", false, true)));
        // `c + x` is written AddConst(c) on x, without is_reverse.
        assert_eq!(form("Add", true), Some(("top.AddConst", false, false)));
        // `x / c` has no constant form (two tensors); `c / x` is Reciprocal.
        assert_eq!(form("Div", false), None);
        assert_eq!(form("Div", true), Some(("top.Reciprocal", false, false)));
        assert_eq!(form("Pow", false), Some(("top.Pow", false, false)));
        assert_eq!(form("Pow", true), Some(("top.Pow2", false, false)));
        assert_eq!(form("Less", true), Some(("top.CompareConst", false, true)));
        // `top.Pow` with two operands is the two-tensor form.
        assert!(matches!(
            by_top("top.Pow", None, 2),
            Some(TopRead::Tensors(s)) if s.name == "Pow"
        ));
        // A negated form is not read as its writer's op.
        assert!(matches!(
            by_top("top.AddConst", None, 1),
            Some(TopRead::Const(s, _)) if s.name == "Add"
        ));
    }

    #[test]
    fn scalar_definitions() {
        let arith = |name: &str| match by_onnx(name).unwrap().kind {
            BinaryKind::Arith { f32, i64 } => (f32, i64),
            _ => panic!("{name} is not arithmetic"),
        };
        assert_eq!((arith("Sub").0)(1.0, 3.0), -2.0);
        assert_eq!((arith("Div").1)(7, 2), Ok(3));
        assert!((arith("Div").1)(7, 0).is_err());
        assert!((arith("Pow").1)(2, -1).is_err());
        assert_eq!((arith("Pow").1)(3, 3), Ok(27));
        let BinaryKind::Compare {
            bool: Some(less), ..
        } = by_onnx("Less").unwrap().kind
        else {
            panic!()
        };
        assert!(less(false, true) && !less(true, false) && !less(true, true));
    }
}
