//! The elementwise binary family: one registration per op.
//!
//! Every op of the family (two inputs broadcast against each other, one
//! output of the broadcast shape, no attributes) is one entry of the
//! `binary_family!` table below, which holds what every
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
//! macro [`binary_op!`](crate::binary_op).
//!
//! The family's code is in this file too, one section per concern (ONNX
//! import and export, Top reading and writing, shape inference,
//! evaluation, the TPU lowering's rules), registered once in
//! `crate::families`, through which the other crates reach it;
//! `docs/adding-an-op.md` says how to add an op.
//! The unary family's registry ([`crate::unary`]) is the model.

use std::sync::Arc;

use qtune_kernels as k;
use qtune_tensor::{DType, Shape, Tensor, TensorData};

use crate::eval_cx::EvalCx;
use crate::mlir::reader::{TopIn, f32_of};
use crate::mlir::writer::{Operand, TopOp, TopOut, mk};
use crate::mlir::{MlirAttr, MlirError};
use crate::onnx_node::{ExportInputs, NodeError, OnnxIn, OnnxOut};
use crate::shape_infer::{Ctx, one};
use crate::tpu::{KeepFloat, RangeFlow, TpuChip, TpuFloat};
use crate::tpu::{is_const, is_scalar_const};
use crate::{Graph, NodeId};
use crate::{InferredOutput, IrError, Op, ValueId, broadcast_shapes};

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

// ---------------------------------------------------------------------------
// ONNX (called from `qtune-onnx`; `crate::onnx_node`). The family has no
// attributes, so the export writes none.

/// The IR op of a binary ONNX node ([`by_onnx`]): two inputs, no
/// attributes.
pub fn import(cx: &mut OnnxIn) -> Result<Op, NodeError> {
    let Some(spec) = by_onnx(cx.op_type) else {
        return Err(cx.node_err("internal: not in the binary registry"));
    };
    cx.arity(2, 2)?;
    cx.check_known(&[])?;
    Ok((spec.build)())
}

/// The family has no attributes: nothing to write.
pub fn export(_op: &Op, _inputs: &ExportInputs, _out: &mut OnnxOut) -> Result<(), NodeError> {
    Ok(())
}

// ---------------------------------------------------------------------------
// The Top dialect (called from the `.mlir` reader and writer).

/// The IR op of a binary Top op ([`is_top`]): the two-tensor form (a
/// longer operand list of a variadic op is a left-to-right chain), or a
/// `*Const` form whose attribute is the constant operand. Its inputs are
/// set on `r`.
pub(crate) fn read_top(r: &mut TopIn) -> Result<Op, MlirError> {
    let name = r.op.name.as_str();
    let loc = r.loc.clone();
    let mode = r.a.str("mode");
    let read = by_top(name, mode, r.op.operands.len());
    match read {
        Some(TopRead::Tensors(spec)) => {
            if let Some(c) = r.a.get("coeff").and_then(MlirAttr::as_f64_vec)
                && c.iter().any(|&x| x != 1.0)
            {
                return r.err(format!("`{}` with coeff {c:?} is not supported", r.op.name));
            }
            r.fuse_relu = spec.top.relu && r.a.bool_or("do_relu", false);
            let mut ops: Vec<ValueId> = (0..r.op.operands.len())
                .map(|i| r.req(i))
                .collect::<Result<_, _>>()?;
            if ops.len() > 2 && !spec.top.variadic {
                return r.err(format!(
                    "`{}` takes two operands, not {}",
                    r.op.name,
                    ops.len()
                ));
            }
            if r.a.bool_or("is_reverse", false) {
                ops.swap(0, 1);
            }
            let base = (spec.build)();
            let mut acc = ops[0];
            for (k, &next) in ops[1..ops.len() - 1].iter().enumerate() {
                let name = format!("{loc}_part{k}");
                let mid = r.b.result_value(r.op, 0, &name)?;
                r.b.graph
                    .add_node(name, base.clone(), vec![Some(acc), Some(next)], vec![mid]);
                acc = mid;
            }
            r.inputs = vec![Some(acc), ops.last().copied()];
            Ok(base)
        }
        Some(TopRead::Const(spec, form)) => {
            let x = r.req(0)?;
            let c = r.b.f32_const(
                format!("{loc}_{}", form.attr),
                vec![],
                vec![f32_of(r.a.f64_or(form.attr, form.default))],
            )?;
            r.fuse_relu = form.relu && r.a.bool_or("do_relu", false);
            let reversed = form.reverse.is_some_and(|rev| r.a.bool_or(rev, false));
            r.inputs = if form.left != reversed {
                vec![Some(c), Some(x)]
            } else {
                vec![Some(x), Some(c)]
            };
            Ok((spec.build)())
        }
        None => {
            let what = match mode {
                Some(m) => format!("`{name}` mode `{m}`"),
                None => format!("`{name}`"),
            };
            r.err(format!(
                "{what} with {} operand(s) is not supported",
                r.op.operands.len()
            ))
        }
    }
}

/// The Top op of a binary node: an operand that is a one-element
/// constant, beside a tensor of the output's dims, becomes the constant
/// attribute of the op's `*Const` form (`top.AddConst`, `top.Reciprocal`,
/// `top.Pow2`, `top.CompareConst`, ...), as TPU-MLIR's converter and
/// canonicalizer write them; else the two-tensor op.
pub(crate) fn write_top(w: &TopOut) -> Result<TopOp, MlirError> {
    use MlirAttr as A;
    let spec = w
        .node
        .op
        .binary()
        .ok_or_else(|| w.err("internal: not in the binary registry".into()))?;
    let scalar = |i: usize| -> Option<f32> {
        let t = w.g.constant_of(w.input(i)?)?;
        let other = w.input(1 - i)?;
        (t.numel() == 1
            && t.dtype() == qtune_tensor::DType::F32
            && w.g.constant_of(other).is_none()
            && w.dims(other).ok()? == w.out_dims(0).ok()?)
        .then(|| t.to_f32_vec()[0])
    };
    let mode = spec.top.mode.map(|m| ("mode", A::Str(m.to_string())));
    let constant = match (scalar(1), scalar(0)) {
        (Some(c), _) => spec.const_form(false).map(|f| (f, c, 0)),
        (None, Some(c)) => spec.const_form(true).map(|f| (f, c, 1)),
        (None, None) => None,
    };
    match constant {
        Some(((form, reversed), c, tensor)) => {
            let c = if form.negated { -c } else { c };
            let attrs = mode
                .into_iter()
                .chain([(form.attr, A::F64(f64::from(c)))])
                .chain(
                    form.reverse
                        .filter(|_| reversed)
                        .map(|r| (r, A::Bool(true))),
                )
                .chain(form.relu.then_some(("do_relu", A::Bool(false))))
                .collect();
            Ok(mk(form.op, vec![Operand::Value(w.x(tensor)?)], attrs))
        }
        None => {
            let attrs = mode
                .into_iter()
                .chain(spec.top.relu.then_some(("do_relu", A::Bool(false))))
                .collect();
            Ok(mk(spec.top.op, w.values(2)?, attrs))
        }
    }
}

// ---------------------------------------------------------------------------
// Shape inference (called from `crate::infer_node`).

/// Numpy broadcasting; a comparison or logic op gives booleans.
pub(crate) fn infer(cx: &Ctx) -> Result<Vec<InferredOutput>, IrError> {
    let a = cx.shape(0)?;
    let b = cx.shape(1)?;
    let out = broadcast_shapes(&a, &b).ok_or_else(|| IrError::Broadcast {
        node: cx.node.name.clone(),
        op: cx.op(),
        a: Shape(a.clone()),
        b: Shape(b.clone()),
    })?;
    let dtype = if cx.node.op.binary().is_some_and(|b| b.kind.is_bool()) {
        DType::Bool
    } else {
        cx.dtype(0)?
    };
    one(out, dtype)
}

// ---------------------------------------------------------------------------
// Evaluation (called from `qtune-exec`).

/// Evaluates a binary node: an arithmetic op on its kernel or by its
/// definitions, a comparison or logic op by its definitions.
pub fn eval(mut cx: EvalCx) -> Result<Vec<Tensor>, IrError> {
    match cx.node.op.binary().map(|b| b.kind) {
        Some(BinaryKind::Arith { f32, i64 }) => eval_binary(&mut cx, f32, i64),
        Some(kind) => eval_compare(&cx, kind),
        None => Err(cx.err("internal: not in the binary registry")),
    }
}

/// The vectorised kernel of an arithmetic op of the binary family, when
/// `qtune-kernels` has one (a speed-up only: the registry's scalar
/// definition is the reference, `fast_binary_kernels_match_the_registry`).
pub fn fast_binary(op: &Op) -> Option<k::BinaryOp> {
    Some(match op {
        Op::Add => k::BinaryOp::Add,
        Op::Sub => k::BinaryOp::Sub,
        Op::Mul => k::BinaryOp::Mul,
        Op::Div => k::BinaryOp::Div,
        Op::Pow => k::BinaryOp::Pow,
        _ => return None,
    })
}

/// An arithmetic op of the binary family: its vectorised kernel on float32
/// operands when it has one (in place over an operand this node holds the
/// only reference to), else the registry's scalar definitions on the
/// broadcast operands.
fn eval_binary(
    cx: &mut EvalCx,
    f32_def: fn(f32, f32) -> f32,
    i64_def: fn(i64, i64) -> Result<i64, &'static str>,
) -> Result<Vec<Tensor>, IrError> {
    let od = cx.out_dims(0)?;
    if let Some(op) = fast_binary(&cx.node.op) {
        // Float operands: when one of them has the output's dims and this node holds its
        // only reference, the result is written over it (no new buffer, no zero-fill).
        for (i, side) in [(0, k::InPlace::Left), (1, k::InPlace::Right)] {
            let fits = |t: &Tensor| t.dims() == od.as_slice() && t.dtype() == DType::F32;
            let other_f32 = cx.input(1 - i)?.dtype() == DType::F32;
            if !other_f32 || !fits(cx.input(i)?) {
                continue;
            }
            match cx.take(i)?.into_unshared_f32_vec() {
                Ok(mut target) => {
                    let other = cx.input(1 - i)?;
                    let (ov, odims) = (
                        other.as_f32().map_err(|e| cx.err(e.to_string()))?,
                        other.dims(),
                    );
                    k::binary_in_place(op, side, &mut target, &od, ov, odims, cx.par);
                    return cx.f32_out(od, target);
                }
                // Shared: put it back and try the other operand, or compute into a new buffer.
                Err(t) => cx.inputs[i] = Some(t),
            }
        }
        let (a, b) = (cx.input(0)?, cx.input(1)?);
        if let (TensorData::F32(av), TensorData::F32(bv)) = (a.data(), b.data()) {
            let mut out = k::zeroed(od.iter().product(), cx.par);
            k::binary(op, av, a.dims(), bv, b.dims(), &mut out, cx.par);
            return cx.f32_out(od, out);
        }
    }
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    match (a.data(), b.data()) {
        (TensorData::F32(av), TensorData::F32(bv)) => {
            let (ea, eb) = (
                broadcast_to(av, a.dims(), &od),
                broadcast_to(bv, b.dims(), &od),
            );
            let out = ea.iter().zip(&eb).map(|(&x, &y)| f32_def(x, y)).collect();
            cx.f32_out(od, out)
        }
        (TensorData::I64(av), TensorData::I64(bv)) => {
            let (ea, eb) = (
                broadcast_to(av, a.dims(), &od),
                broadcast_to(bv, b.dims(), &od),
            );
            let out = ea
                .iter()
                .zip(&eb)
                .map(|(&x, &y)| i64_def(x, y))
                .collect::<Result<Vec<i64>, _>>()
                .map_err(|e| cx.err(e))?;
            Ok(vec![cx.tensor(od, TensorData::I64(Arc::new(out)))?])
        }
        _ => Err(cx.err(format!(
            "unsupported input types {} and {} (float32 or int64 pairs are supported)",
            a.dtype(),
            b.dtype()
        ))),
    }
}

/// Broadcasts a small tensor's buffer to `out_dims` (for the integer and
/// boolean ops, which only see shape-sized tensors).
fn broadcast_to<T: Copy>(v: &[T], dims: &[usize], out_dims: &[usize]) -> Vec<T> {
    let n: usize = out_dims.iter().product();
    match v.first() {
        Some(&first) if n > 0 => {
            let mut out = vec![first; n];
            k::expand(v, dims, out_dims, &mut out);
            out
        }
        _ => Vec::new(),
    }
}

/// A comparison or logic op of the binary family, by its registry
/// definitions.
fn eval_compare(cx: &EvalCx, kind: BinaryKind) -> Result<Vec<Tensor>, IrError> {
    use BinaryKind as K;
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    let od = cx.out_dims(0)?;
    fn apply<T: Copy>(
        (a, ad): (&[T], &[usize]),
        (b, bd): (&[T], &[usize]),
        od: &[usize],
        f: impl Fn(T, T) -> bool,
    ) -> Vec<bool> {
        let (ea, eb) = (broadcast_to(a, ad, od), broadcast_to(b, bd, od));
        ea.iter().zip(&eb).map(|(&x, &y)| f(x, y)).collect()
    }
    let (ad, bd) = (a.dims(), b.dims());
    let out: Vec<bool> = match (a.data(), b.data(), kind) {
        (TensorData::Bool(av), TensorData::Bool(bv), K::Logic(f))
        | (TensorData::Bool(av), TensorData::Bool(bv), K::Compare { bool: Some(f), .. }) => {
            apply((av, ad), (bv, bd), &od, f)
        }
        (TensorData::I64(av), TensorData::I64(bv), K::Compare { i64: f, .. }) => {
            apply((av, ad), (bv, bd), &od, f)
        }
        (TensorData::F32(av), TensorData::F32(bv), K::Compare { f32: f, .. }) => {
            apply((av, ad), (bv, bd), &od, f)
        }
        _ => {
            return Err(cx.err(format!(
                "unsupported input types {} and {}",
                a.dtype(),
                b.dtype()
            )));
        }
    };
    Ok(vec![cx.tensor(od, TensorData::Bool(Arc::new(out)))?])
}

// ---------------------------------------------------------------------------
// The TPU profiles' lowering rules (`crate::tpu`, applied by the deploy plan).

/// Div by a tensor has no int8 form on any chip; CV18xx keeps Add and Sub
/// with a constant operand in float.
pub fn tpu_float(graph: &Graph, node: NodeId, chip: TpuChip) -> TpuFloat {
    let n = graph.node(node);
    let div_by_tensor = matches!(n.op, Op::Div) && !is_scalar_const(graph, node, 1);
    let with_const = (0..n.inputs.len()).any(|i| is_const(graph, node, i));
    match chip {
        TpuChip::Bm1684x => {
            div_by_tensor.then_some((KeepFloat::F32, "Div by a tensor has no int8 form"))
        }
        TpuChip::Bm1684 => div_by_tensor.then_some((KeepFloat::F32, "Div has no int8 form")),
        TpuChip::Cv18xx if matches!(n.op, Op::Add | Op::Sub) && with_const => {
            Some((KeepFloat::Profile, "Add/Sub with a constant operand"))
        }
        TpuChip::Cv18xx => {
            div_by_tensor.then_some((KeepFloat::Profile, "Div by a tensor has no int8 form"))
        }
    }
}

/// An op that outputs one of its inputs ([`BinaryRange::Selects`]: Max,
/// Min): with a constant operand (TPU-MLIR's `MaxConst`) the output takes
/// the input's range (step 7); of two tensors the inputs take the output's
/// (step 3).
pub fn range_flow(graph: &Graph, node: NodeId, _chip: TpuChip) -> RangeFlow {
    let n = graph.node(node);
    let selects =
        n.op.binary()
            .is_some_and(|b| b.range == BinaryRange::Selects);
    if !selects {
        return RangeFlow::default();
    }
    let with_const = (0..n.inputs.len()).any(|i| is_const(graph, node, i));
    RangeFlow {
        forwards: with_const,
        into_inputs: !with_const,
        ..RangeFlow::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every vectorised kernel of the binary family computes what the
    /// registry defines (`qtune_ir::binary`), broadcast both ways.
    #[test]
    fn fast_binary_kernels_match_the_registry() {
        let a: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) / 7.0).collect();
        let b: Vec<f32> = (0..8).map(|i| (i as f32 - 3.5) / 2.0).collect();
        let (ad, bd) = ([8usize, 8], [8usize]);
        let mut with_kernel = 0;
        for spec in crate::binary::BINARY_OPS {
            let op = (spec.build)();
            let Some(kop) = fast_binary(&op) else {
                continue;
            };
            let crate::binary::BinaryKind::Arith { f32: def, .. } = spec.kind else {
                panic!("{} has a float kernel but is not arithmetic", spec.name);
            };
            with_kernel += 1;
            for swap in [false, true] {
                let ((x, xd), (y, yd)) = if swap {
                    ((&b, &bd[..]), (&a, &ad[..]))
                } else {
                    ((&a, &ad[..]), (&b, &bd[..]))
                };
                let mut got = vec![0.0; 64];
                k::binary(kop, x, xd, y, yd, &mut got, k::Parallelism::Sequential);
                for (i, g) in got.iter().enumerate() {
                    let (p, q) = (a[i], b[i % 8]);
                    let want = if swap { def(q, p) } else { def(p, q) };
                    assert!(
                        g.to_bits() == want.to_bits()
                            || (g.is_nan() && want.is_nan())
                            || (g - want).abs() <= 1e-6 * want.abs().max(1.0),
                        "{} at ({p}, {q}) swapped {swap}: kernel {g}, registry {want}",
                        spec.name
                    );
                }
            }
        }
        assert_eq!(with_kernel, 5);
    }

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
