//! The elementwise unary family: one registration per op.
//!
//! Every op of the family is one entry of the `unary_family!` table below.
//! An entry names the [`Op`] variant and its `f32`
//! attributes with their ONNX defaults, and holds what every crate needs to
//! know about the op:
//!
//! - its ONNX op type ([`UnarySpec::onnx`]; `None` for qtune ops ONNX lacks,
//!   which the exporter decomposes) and its Top dialect op
//!   ([`UnarySpec::top`], attributes spelled as in ONNX, plus the fixed
//!   attributes TPU-MLIR prints, [`UnarySpec::top_fixed`]);
//! - its scalar definition ([`UnarySpec::reference`]), which the executor
//!   runs when `qtune-kernels` has no vectorised kernel for the op, and which
//!   the kernel tests compare the fast kernels against;
//! - how the TPU profiles quantize it ([`UnarySpec::int8`],
//!   [`UnarySpec::output_range`]).
//!
//! From the table come [`Op::unary`], [`UNARY_OPS`], [`by_onnx`],
//! [`by_top`], and the pattern
//! macro [`unary_op!`](crate::unary_op).
//!
//! The family's code is in this file too, one section per concern (ONNX
//! import and export, Top reading and writing, shape inference,
//! evaluation, the TPU lowering's rules), registered once in
//! `crate::families`, through which the other crates reach it;
//! `docs/adding-an-op.md` says how to add an op.
//!
//! Why here: `qtune-ir` is the lowest crate that knows [`Op`], and every
//! crate that handles ops depends on it. It cannot see `qtune-kernels` (the
//! numerics know nothing of graphs), so the registry carries a plain scalar
//! function; `qtune-exec` maps the ops that have a vectorised kernel to it
//! (`fast_kernel` in `eval.rs`, a speed-up only) and runs the scalar function
//! for the others.

use qtune_kernels as k;
use qtune_tensor::Tensor;

use crate::eval_cx::EvalCx;
use crate::mlir::reader::{TopIn, f32_of};
use crate::mlir::writer::{TopOp, TopOut, mk};
use crate::mlir::{MlirAttr, MlirError};
use crate::onnx_node::{ExportInputs, NodeError, OnnxIn, OnnxOut};
use crate::shape_infer::{Ctx, one};
use crate::tpu::{RangeFlow, TpuChip, TpuFloat};
use crate::{ClipAttrs, InferredOutput, IrError, Op};
use crate::{Graph, NodeId};

/// The most `f32` attributes an op of the family has.
pub const MAX_UNARY_ATTRS: usize = 2;

/// One `f32` attribute: its name (the same in ONNX and in the Top dialect)
/// and its ONNX default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnaryAttr {
    pub name: &'static str,
    pub default: f32,
}

/// A Top attribute that TPU-MLIR prints with one value qtune supports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TopFixed {
    F64(f64),
    Bool(bool),
}

impl std::fmt::Display for TopFixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TopFixed::F64(v) => write!(f, "{v}"),
            TopFixed::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// How the TPU profiles (bm1684x, bm1684, cv18xx) quantize the op. The
/// runtime profile keeps every op of the family in float (only weight layers
/// are int8 there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Rule {
    /// int8 with its own output threshold: input and output each keep
    /// their calibrated one. For the activations this is TPU-MLIR's lookup
    /// table lowering (`create_lookup_table`, e.g. Sigmoid, Tanh, Elu on
    /// every chip); Neg is a MulConst(-1) there, with the same thresholds
    /// rule.
    Table,
    /// int8, and the output takes the input's range: forward and backward
    /// range propagation (spec "Range propagation" steps 4 and 7) pass
    /// through it (Relu, Abs, LeakyRelu). With `cv18xx = false` the CV18xx
    /// family does not propagate through it (TPU-MLIR's rule for
    /// LeakyRelu/PRelu).
    SharesRange { cv18xx: bool },
}

/// Everything qtune knows about one op of the family.
#[derive(Debug)]
pub struct UnarySpec {
    /// The IR op type ([`Op::op_type`]), the variant's name.
    pub name: &'static str,
    /// The ONNX op type; `None` when ONNX has no such op (the exporter then
    /// writes a decomposition, `qtune-onnx/src/export.rs`).
    pub onnx: Option<&'static str>,
    /// The Top dialect op (`top.Relu`).
    pub top: &'static str,
    /// The op's `f32` attributes, in the variant's field order.
    pub attrs: &'static [UnaryAttr],
    /// Top attributes written with this value; the reader rejects others.
    pub top_fixed: &'static [(&'static str, TopFixed)],
    /// The scalar definition, `f(x, attrs)` (attributes in [`Self::attrs`]
    /// order), following the ONNX operator specification.
    pub reference: fn(f32, &[f32]) -> f32,
    /// How the TPU profiles quantize it.
    pub int8: Int8Rule,
    /// The output's range when the op fixes it (Sigmoid: `[0, 1]`); the
    /// deploy plan quantizes such an output to that range, not to the
    /// calibrated threshold.
    pub output_range: Option<(f32, f32)>,
    /// Notes for the Top op table (`docs/tpu-mlir-top-ops.md`).
    pub top_notes: &'static str,
    /// Builds the op from its attributes (in [`Self::attrs`] order; a
    /// missing one takes its default).
    pub build: fn(&[f32]) -> Op,
}

/// The attribute values of one op of the family, in [`UnarySpec::attrs`]
/// order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnaryParams {
    vals: [f32; MAX_UNARY_ATTRS],
    len: usize,
}

impl UnaryParams {
    fn new(v: &[f32]) -> UnaryParams {
        let mut vals = [0.0; MAX_UNARY_ATTRS];
        vals[..v.len()].copy_from_slice(v);
        UnaryParams { vals, len: v.len() }
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.vals[..self.len]
    }
}

/// An op of the family seen through the registry: [`Op::unary`].
#[derive(Debug, Clone, Copy)]
pub struct Unary {
    pub spec: &'static UnarySpec,
    pub params: UnaryParams,
}

impl Unary {
    /// `f(x)` by the registry's scalar definition.
    pub fn eval(&self, x: f32) -> f32 {
        (self.spec.reference)(x, self.params.as_slice())
    }

    /// `(name, value)` of each attribute, in [`UnarySpec::attrs`] order.
    pub fn attrs(&self) -> impl Iterator<Item = (&'static str, f32)> + '_ {
        self.spec
            .attrs
            .iter()
            .zip(self.params.as_slice())
            .map(|(a, v)| (a.name, *v))
    }
}

/// The registration of an op whose ONNX type is `onnx`, if any.
pub fn by_onnx(onnx: &str) -> Option<&'static UnarySpec> {
    UNARY_OPS.iter().find(|s| s.onnx == Some(onnx))
}

/// The registration of the op written as Top op `top`, if any.
pub fn by_top(top: &str) -> Option<&'static UnarySpec> {
    UNARY_OPS.iter().find(|s| s.top == top)
}

/// `Top op | operands | attributes | IR op | notes` of each op of the
/// family, for the Top op table.
pub(crate) fn top_rows() -> impl Iterator<Item = [String; 5]> {
    UNARY_OPS.iter().map(|s| {
        let attrs: Vec<String> = s
            .attrs
            .iter()
            .map(|a| a.name.to_string())
            .chain(s.top_fixed.iter().map(|(n, v)| format!("{n} ({v})")))
            .collect();
        [
            s.top.to_string(),
            "input".to_string(),
            attrs.join(", "),
            s.name.to_string(),
            s.top_notes.to_string(),
        ]
    })
}

/// The table. Each entry: `Variant { attr = default, ... } => { fields }`,
/// the fields being those of [`UnarySpec`] but `name`, `attrs` and `build`,
/// which come from the variant.
macro_rules! unary_family {
    ($(
        $variant:ident { $($field:ident = $default:expr),* $(,)? } => { $($key:ident : $val:expr),* $(,)? }
    ),* $(,)?) => {
        /// Every op of the elementwise unary family.
        pub static UNARY_OPS: &[UnarySpec] = &[$(
            UnarySpec {
                name: stringify!($variant),
                attrs: &[$(UnaryAttr { name: stringify!($field), default: $default }),*],
                build: |p: &[f32]| {
                    #[allow(unused_mut, unused_variables)]
                    let mut it = p.iter().copied();
                    Op::$variant { $($field: it.next().unwrap_or($default)),* }
                },
                $($key: $val),*
            }
        ),*];

        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        enum Ix { $($variant),* }

        impl Op {
            /// This op through the unary registry, when it belongs to the
            /// elementwise unary family.
            pub fn unary(&self) -> Option<Unary> {
                let (ix, params) = match self {
                    $(Op::$variant { $($field,)* } => {
                        (Ix::$variant as usize, UnaryParams::new(&[$(*$field),*]))
                    })*
                    _ => return None,
                };
                Some(Unary { spec: &UNARY_OPS[ix], params })
            }
        }

        /// A pattern matching every [`Op`] of the elementwise unary family
        /// (generated from the registry in `qtune-ir/src/unary.rs`): a
        /// `match` arm `unary_op!() => ...` keeps the match exhaustive
        /// whatever the family holds. Handle it through [`Op::unary`].
        #[macro_export]
        macro_rules! unary_op {
            () => { $($crate::Op::$variant { .. })|* };
        }
    };
}

fn clip01(v: f32) -> f32 {
    v.clamp(0.0, 1.0)
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn erf(x: f32) -> f32 {
    // Abramowitz-Stegun 7.1.26 is too coarse for a reference; integrate the
    // series in f64 instead (|x| < 3), and the continued fraction beyond.
    let x = f64::from(x);
    let ax = x.abs();
    let r = if ax < 3.0 {
        let (mut term, mut sum, mut n) = (ax, ax, 0.0f64);
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -ax * ax / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(x) ~ exp(-x^2) / (x sqrt(pi)) * (1 - 1/(2x^2) + 3/(4x^4))
        let x2 = ax * ax;
        1.0 - (-x2).exp() / (ax * std::f64::consts::PI.sqrt())
            * (1.0 - 1.0 / (2.0 * x2) + 3.0 / (4.0 * x2 * x2))
    };
    (r.copysign(x)) as f32
}

unary_family! {
    Sqrt {} => {
        onnx: Some("Sqrt"), top: "top.Sqrt", top_fixed: &[],
        reference: |x, _| x.sqrt(),
        int8: Int8Rule::Table, output_range: None, top_notes: "",
    },
    Floor {} => {
        onnx: Some("Floor"), top: "top.Floor", top_fixed: &[],
        reference: |x, _| x.floor(),
        int8: Int8Rule::Table, output_range: None, top_notes: "",
    },
    Exp {} => {
        onnx: Some("Exp"), top: "top.Exp", top_fixed: &[],
        reference: |x, _| x.exp(),
        int8: Int8Rule::Table, output_range: None, top_notes: "",
    },
    Erf {} => {
        onnx: Some("Erf"), top: "top.Erf", top_fixed: &[],
        reference: |x, _| erf(x),
        int8: Int8Rule::Table, output_range: None, top_notes: "",
    },
    Tanh {} => {
        onnx: Some("Tanh"), top: "top.Tanh", top_fixed: &[],
        reference: |x, _| x.tanh(),
        int8: Int8Rule::Table, output_range: None, top_notes: "",
    },
    Neg {} => {
        onnx: Some("Neg"), top: "top.Neg", top_fixed: &[],
        reference: |x, _| -x,
        int8: Int8Rule::Table, output_range: None,
        top_notes: "TPU-MLIR's converter writes MulConst(-1) instead",
    },
    Abs {} => {
        onnx: Some("Abs"), top: "top.Abs", top_fixed: &[],
        reference: |x, _| x.abs(),
        int8: Int8Rule::SharesRange { cv18xx: true }, output_range: None, top_notes: "",
    },
    Relu {} => {
        onnx: Some("Relu"), top: "top.Relu",
        top_fixed: &[("relu_limit", TopFixed::F64(-1.0))],
        reference: |x, _| x.max(0.0),
        int8: Int8Rule::SharesRange { cv18xx: true }, output_range: None,
        top_notes: "a relu_limit > 0 reads as Clip(0, limit)",
    },
    LeakyRelu { alpha = 0.01 } => {
        onnx: Some("LeakyRelu"), top: "top.LeakyRelu", top_fixed: &[],
        reference: |x, a| if x >= 0.0 { x } else { a[0] * x },
        int8: Int8Rule::SharesRange { cv18xx: false }, output_range: None, top_notes: "",
    },
    Sigmoid {} => {
        onnx: Some("Sigmoid"), top: "top.Sigmoid",
        top_fixed: &[
            ("bias", TopFixed::F64(0.0)),
            ("log", TopFixed::Bool(false)),
            ("scale", TopFixed::F64(1.0)),
        ],
        reference: |x, _| sigmoid(x),
        int8: Int8Rule::Table, output_range: Some((0.0, 1.0)),
        top_notes: "other scale, bias or log is an error",
    },
    HardSigmoid { alpha = 0.2, beta = 0.5 } => {
        onnx: Some("HardSigmoid"), top: "top.HardSigmoid", top_fixed: &[],
        reference: |x, a| clip01(a[0] * x + a[1]),
        int8: Int8Rule::Table, output_range: None, top_notes: "",
    },
    HardSwish {} => {
        onnx: Some("HardSwish"), top: "top.HardSwish", top_fixed: &[],
        reference: |x, _| x * clip01(x / 6.0 + 0.5),
        int8: Int8Rule::Table, output_range: None, top_notes: "",
    },
    SiLU {} => {
        onnx: None, top: "top.SiLU", top_fixed: &[],
        reference: |x, _| x * sigmoid(x),
        int8: Int8Rule::Table, output_range: None,
        top_notes: "no ONNX op: exported as Sigmoid + Mul",
    },
    Elu { alpha = 1.0 } => {
        onnx: Some("Elu"), top: "top.Elu", top_fixed: &[],
        reference: |x, a| if x > 0.0 { x } else { a[0] * x.exp_m1() },
        int8: Int8Rule::Table, output_range: None,
        top_notes: "TPU-MLIR's ONNX converter defaults alpha to 0; qtune to ONNX's 1",
    },
}

// ---------------------------------------------------------------------------
// ONNX (called from `qtune-onnx`; `crate::onnx_node`).

/// The IR op of a unary ONNX node ([`by_onnx`]): one input, the listed
/// `f32` attributes with their ONNX defaults, any other attribute rejected.
pub fn import(cx: &mut OnnxIn) -> Result<Op, NodeError> {
    let Some(spec) = by_onnx(cx.op_type) else {
        return Err(cx.node_err("internal: not in the unary registry"));
    };
    cx.arity(1, 1)?;
    let names: Vec<&str> = spec.attrs.iter().map(|a| a.name).collect();
    cx.check_known(&names)?;
    let params = spec
        .attrs
        .iter()
        .map(|a| cx.float_or(a.name, a.default))
        .collect::<Result<Vec<f32>, _>>()?;
    Ok((spec.build)(&params))
}

/// The ONNX attributes of a unary node. An op ONNX lacks (SiLU) is written
/// by the exporter as the nodes it stands for and never reaches here.
pub fn export(op: &Op, _inputs: &ExportInputs, out: &mut OnnxOut) -> Result<(), NodeError> {
    match op.unary() {
        Some(u) if u.spec.onnx.is_some() => {
            for (n, v) in u.attrs() {
                out.float(n, v);
            }
            Ok(())
        }
        _ => Err(NodeError::Node {
            message: format!("internal: {} is written as a composite", op.op_type()),
        }),
    }
}

// ---------------------------------------------------------------------------
// The Top dialect (called from the `.mlir` reader and writer).

/// Whether the `.mlir` reader reads Top op `top` through [`read_top`].
pub(crate) fn reads_top(top: &str) -> bool {
    by_top(top).is_some()
}

/// The IR op of a unary Top op: attributes as F64 with their ONNX
/// defaults; the fixed ones must have their one supported value. A
/// `top.Relu` with a positive `relu_limit` is TPU-MLIR's ReLU6 form, a Clip
/// (`crate::activation`). Its input is set on `r`.
pub(crate) fn read_top(r: &mut TopIn) -> Result<Op, MlirError> {
    let name = r.op.name.as_str();
    if name == "top.Relu" {
        r.inputs = r.unary()?;
        let limit = r.a.f64_or("relu_limit", -1.0);
        return Ok(if limit > 0.0 {
            Op::Clip(ClipAttrs {
                min: Some(0.0),
                max: Some(f32_of(limit)),
            })
        } else {
            Op::Relu
        });
    }
    let Some(spec) = by_top(name) else {
        return r.err(format!("internal: `{name}` left the unary registry"));
    };
    for &(attr, value) in spec.top_fixed {
        let ok = match value {
            TopFixed::F64(v) => r.a.f64_or(attr, v) == v,
            TopFixed::Bool(b) => r.a.bool_or(attr, b) == b,
        };
        if !ok {
            return r.err(format!(
                "`{name}` with {attr} other than {value} is not supported"
            ));
        }
    }
    r.inputs = r.unary()?;
    let params: Vec<f32> = spec
        .attrs
        .iter()
        .map(|at| f32_of(r.a.f64_or(at.name, f64::from(at.default))))
        .collect();
    Ok((spec.build)(&params))
}

/// The Top op of a unary node: its attributes as F64, then the fixed ones.
/// (TPU-MLIR writes Neg as MulConst(-1); x * -1 is -x bit for bit, but a
/// separate op keeps the IR node type on the way back.)
pub(crate) fn write_top(w: &TopOut) -> Result<TopOp, MlirError> {
    use MlirAttr as A;
    let u = w
        .node
        .op
        .unary()
        .ok_or_else(|| w.err("internal: not in the unary registry".into()))?;
    let attrs = u
        .attrs()
        .map(|(n, v)| (n, A::F64(f64::from(v))))
        .chain(u.spec.top_fixed.iter().map(|&(n, v)| {
            (
                n,
                match v {
                    TopFixed::F64(f) => A::F64(f),
                    TopFixed::Bool(b) => A::Bool(b),
                },
            )
        }))
        .collect();
    Ok(mk(u.spec.top, w.values(1)?, attrs))
}

// ---------------------------------------------------------------------------
// Shape inference (called from `crate::infer_node`).

/// The output of a unary node: the input's shape and type.
pub(crate) fn infer(cx: &Ctx) -> Result<Vec<InferredOutput>, IrError> {
    one(cx.shape(0)?, cx.dtype(0)?)
}

// ---------------------------------------------------------------------------
// Evaluation (called from `qtune-exec`).

/// Evaluates a unary node: the vectorised kernel when there is one, else
/// the registry's scalar definition.
pub fn eval(cx: EvalCx) -> Result<Vec<Tensor>, IrError> {
    if let Some(kop) = fast_kernel(&cx.node.op) {
        return cx.unary(kop);
    }
    match cx.node.op.unary() {
        Some(u) => eval_scalar(cx, u),
        None => Err(cx.err("internal: not in the unary registry")),
    }
}

/// The `qtune-kernels` kernel of an op of the unary family, when it has
/// one. This is a speed-up, not a registration: an op missing here runs its
/// registry definition ([`eval_scalar`]); `fast_kernels_match_the_registry`
/// checks each kernel against that definition.
pub fn fast_kernel(op: &Op) -> Option<k::UnaryOp> {
    Some(match op {
        Op::Sqrt => k::UnaryOp::Sqrt,
        Op::Floor => k::UnaryOp::Floor,
        Op::Exp => k::UnaryOp::Exp,
        Op::Erf => k::UnaryOp::Erf,
        Op::Tanh => k::UnaryOp::Tanh,
        Op::Neg => k::UnaryOp::Neg,
        Op::Abs => k::UnaryOp::Abs,
        Op::Relu => k::UnaryOp::Relu,
        Op::Sigmoid => k::UnaryOp::Sigmoid,
        Op::HardSwish => k::UnaryOp::HardSwish,
        Op::SiLU => k::UnaryOp::Silu,
        Op::LeakyRelu { alpha } => k::UnaryOp::LeakyRelu { alpha: *alpha },
        Op::HardSigmoid { alpha, beta } => k::UnaryOp::HardSigmoid {
            alpha: *alpha,
            beta: *beta,
        },
        _ => return None,
    })
}

/// An op of the unary family by its registry definition, element by
/// element (in place when the input is not shared).
fn eval_scalar(cx: EvalCx, u: Unary) -> Result<Vec<Tensor>, IrError> {
    cx.map_f32(
        |x| x.iter_mut().for_each(|v| *v = u.eval(*v)),
        |x| x.iter().map(|&v| u.eval(v)).collect(),
    )
}

// ---------------------------------------------------------------------------
// The TPU profiles' lowering rules (`crate::tpu`, applied by the deploy plan).

/// No op of the family is kept in float by a chip.
pub fn tpu_float(_graph: &Graph, _node: NodeId, _chip: TpuChip) -> TpuFloat {
    None
}

/// The entry's range rule: an op whose output shares its input's range
/// ([`Int8Rule::SharesRange`]) passes it both ways; an op with a fixed
/// output range ([`UnarySpec::output_range`]) fixes it.
pub fn range_flow(graph: &Graph, node: NodeId, chip: TpuChip) -> RangeFlow {
    let Some(u) = graph.node(node).op.unary() else {
        return RangeFlow::default();
    };
    let shares = match u.spec.int8 {
        Int8Rule::Table => false,
        Int8Rule::SharesRange { cv18xx } => cv18xx || chip != TpuChip::Cv18xx,
    };
    RangeFlow {
        forwards: shares,
        backwards: shares,
        fixed: u
            .spec
            .output_range
            .map(|(lo, hi)| (f64::from(lo), f64::from(hi))),
        ..RangeFlow::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every vectorised kernel of the unary family computes what the
    /// registry defines (`qtune_ir::unary`), with default and with other
    /// attribute values (which also checks the attribute order).
    #[test]
    fn fast_kernels_match_the_registry() {
        let xs: Vec<f32> = (-800..=800).map(|i| i as f32 / 100.0).collect();
        let mut with_kernel = 0;
        for spec in crate::unary::UNARY_OPS {
            let defaults: Vec<f32> = spec.attrs.iter().map(|a| a.default).collect();
            let others: Vec<f32> = defaults.iter().map(|d| d * 1.5 + 0.125).collect();
            for params in [defaults, others] {
                let op = (spec.build)(&params);
                let Some(kop) = fast_kernel(&op) else {
                    continue;
                };
                with_kernel += 1;
                let u = op.unary().expect("registered");
                let mut got = xs.clone();
                k::unary(kop, &mut got, k::Parallelism::Sequential);
                for (x, g) in xs.iter().zip(&got) {
                    let want = u.eval(*x);
                    if want.is_nan() {
                        assert!(g.is_nan(), "{} at {x}: {g}", spec.name);
                        continue;
                    }
                    assert!(
                        (g - want).abs() <= 2e-6 * want.abs().max(1.0),
                        "{} {params:?} at {x}: kernel {g}, registry {want}",
                        spec.name
                    );
                }
            }
        }
        assert!(with_kernel >= 26, "{with_kernel}");
    }

    #[test]
    fn every_entry_round_trips_through_its_op() {
        for spec in UNARY_OPS {
            assert!(spec.attrs.len() <= MAX_UNARY_ATTRS, "{}", spec.name);
            let defaults: Vec<f32> = spec.attrs.iter().map(|a| a.default).collect();
            let op = (spec.build)(&defaults);
            let u = op.unary().expect("a registered op is unary");
            assert!(std::ptr::eq(u.spec, spec), "{}", spec.name);
            assert_eq!(u.params.as_slice(), &defaults[..], "{}", spec.name);
            assert_eq!(op.op_type(), spec.name);
            assert!(op.is_elementwise(), "{}", spec.name);
            assert!(matches!(op, unary_op!()), "{}", spec.name);
            if let Some(onnx) = spec.onnx {
                assert!(std::ptr::eq(by_onnx(onnx).unwrap(), spec));
                assert!(crate::SUPPORTED_OPS.contains(&onnx), "{onnx}");
            }
            assert!(std::ptr::eq(by_top(spec.top).unwrap(), spec));
        }
        assert!(Op::Softmax { axis: 1 }.unary().is_none());
        assert!(by_onnx("Softmax").is_none());
    }

    #[test]
    fn attributes_are_read_in_field_order() {
        let op = (by_onnx("HardSigmoid").unwrap().build)(&[0.25]);
        assert_eq!(
            op,
            Op::HardSigmoid {
                alpha: 0.25,
                beta: 0.5
            }
        );
        let u = op.unary().unwrap();
        assert_eq!(
            u.attrs().collect::<Vec<_>>(),
            [("alpha", 0.25), ("beta", 0.5)]
        );
        // 0.25 * 1 + 0.5, and the clip at 1.
        assert_eq!(u.eval(1.0), 0.75);
        assert_eq!(u.eval(10.0), 1.0);
    }

    #[test]
    fn reference_erf_matches_known_values() {
        // erf(0.5), erf(1), erf(2), erf(3.5) to 7 digits (Abramowitz-Stegun table 7.1).
        for (x, e) in [
            (0.5f32, 0.520_499_9f32),
            (1.0, 0.842_700_8),
            (2.0, 0.995_322_3),
            (3.5, 0.999_999_3),
        ] {
            assert!((erf(x) - e).abs() < 2e-7, "erf({x}) = {}", erf(x));
            assert!((erf(-x) + e).abs() < 2e-7);
        }
    }
}
