//! The Top ops qtune reads and writes, with their operands and attributes
//! as TPU-MLIR prints them. `docs/tpu-mlir-top-ops.md` is generated from
//! this list (a test keeps it current), and the reader refuses any other op
//! with an error naming it and its line.

/// One Top op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopOpSpec {
    /// `top.Conv`, ...
    pub name: &'static str,
    /// Operands in order; `?` marks one that may be `none`.
    pub operands: &'static str,
    /// The attributes qtune reads (and writes), as TPU-MLIR names them.
    pub attributes: &'static str,
    /// The IR op it becomes.
    pub ir: &'static str,
    /// What is not supported, or how it maps.
    pub notes: &'static str,
}

const fn op(
    name: &'static str,
    operands: &'static str,
    attributes: &'static str,
    ir: &'static str,
    notes: &'static str,
) -> TopOpSpec {
    TopOpSpec {
        name,
        operands,
        attributes,
        ir,
        notes,
    }
}

/// The Top ops the reader accepts that belong to no op family (the graph's
/// inputs, weights and `none`, and TPU-MLIR's `top.Scale`, read as a
/// BatchNormalization). The op families' Top ops come from their modules
/// ([`crate::unary`], [`crate::binary`], [`crate::reduce`], [`crate::pool`],
/// [`crate::movement`], [`crate::norm`], [`crate::activation`],
/// [`crate::linear`], [`crate::resize`], [`crate::logic`],
/// [`crate::convert`]).
pub const TOP_OPS: &[TopOpSpec] = &[
    op(
        "top.Input",
        "function argument",
        "preprocessing (pixel_format, channel_format, mean, scale, resize_dims, keep_aspect_ratio, keep_ratio_mode, pad_value, pad_type, ...)",
        "graph input",
        "",
    ),
    op("top.None", "", "", "(absent operand)", ""),
    op(
        "top.Scale",
        "input, scale, bias",
        "do_relu, relu_limit",
        "BatchNormalization (mean 0, variance 1, epsilon 0)",
        "written back as top.BatchNorm",
    ),
    op("top.Weight", "", "", "constant (from the weight file)", ""),
];

/// Whether the reader accepts this Top op (one of [`TOP_OPS`] or of the
/// unary, binary, reduction, pooling or data-movement family,
/// [`crate::unary`], [`crate::binary`], [`crate::reduce`], [`crate::pool`],
/// [`crate::movement`]).
pub fn is_supported(name: &str) -> bool {
    TOP_OPS.iter().any(|s| s.name == name)
        || crate::unary::by_top(name).is_some()
        || crate::binary::is_top(name)
        || name == "top.Reduce"
        || crate::pool::is_top(name)
        || crate::movement::is_top(name)
        || crate::norm::is_top(name)
        || crate::activation::is_top(name)
        || crate::resize::TOP_OPS.contains(&name)
        || crate::linear::is_top(name)
        || crate::convert::TOP_OPS.contains(&name)
        || name == "top.Where"
}

/// The table of [`TOP_OPS`] as Markdown (`docs/tpu-mlir-top-ops.md`).
pub fn top_ops_markdown() -> String {
    let mut s = String::from(
        "# Top ops qtune reads and writes\n\n\
         Generated from `crates/qtune-ir/src/mlir/ops.rs` (`TOP_OPS`) and the unary, binary, \
         reduction, pooling, data-movement, normalization, activation, weighted-layer, resize, \
         logic and conversion modules (`crates/qtune-ir/src/unary.rs`, `binary.rs`, `reduce.rs`, \
         `pool.rs`, `movement.rs`, `norm.rs`, `activation.rs`, `linear.rs`, `resize.rs`, \
         `logic.rs`, `convert.rs`); a test keeps this file \
         current. The reader accepts exactly these ops, with the attributes as TPU-MLIR prints \
         them (`include/tpu_mlir/Dialect/Top/IR/TopOps.td`); any other op is an error that names \
         it and its line. Attributes not listed are ignored (TPU-MLIR's optional attributes for \
         its backends, e.g. `weight_is_coeff`, `round_mode`).\n\n\
         | Top op | operands | attributes | IR op | notes |\n|---|---|---|---|---|\n",
    );
    let mut rows: Vec<[String; 5]> = TOP_OPS
        .iter()
        .map(|o| [o.name, o.operands, o.attributes, o.ir, o.notes].map(String::from))
        .chain(crate::unary::top_rows())
        .chain(crate::binary::top_rows())
        .chain(crate::reduce::top_rows())
        .chain(crate::pool::top_rows())
        .chain(crate::movement::top_rows())
        .chain(crate::norm::top_rows())
        .chain(crate::activation::top_rows())
        .chain(crate::resize::top_rows())
        .chain(crate::linear::top_rows())
        .chain(crate::logic::top_rows())
        .chain(crate::convert::top_rows())
        .collect();
    rows.sort();
    for [name, operands, attributes, ir, notes] in rows {
        s.push_str(&format!(
            "| `{name}` | {operands} | {attributes} | {ir} | {notes} |\n"
        ));
    }
    s
}
