//! The ONNX side of an op family's registration, without protobuf.
//!
//! `qtune-onnx` is the only crate that reads or writes ONNX files. What an
//! op family's ONNX mapping needs of a node (its attributes, typed and
//! checked; its input and output counts; the model's opset) it gets through
//! [`OnnxIn`], and what it writes (attributes, integer lists ONNX takes as
//! inputs) it leaves in [`OnnxOut`], so that the mapping lives in the
//! family's module beside its shape inference, evaluation and Top mapping
//! (`crate::movement`), and `qtune-onnx` only carries the values to and
//! from protobuf.

use qtune_tensor::{DType, Tensor};

use crate::AutoPad;

/// A node the ONNX mapping rejects. `qtune-onnx` adds the node's name and
/// op type.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeError {
    /// An attribute's value (or presence) is wrong.
    Attribute { attribute: String, message: String },
    /// The node as a whole is wrong (inputs, outputs).
    Node { message: String },
}

/// Typed, checked access to a node's attributes (implemented by
/// `qtune-onnx` over the protobuf node): a wrong type is an error naming the
/// attribute.
pub trait OnnxAttrs {
    fn has(&self, name: &str) -> bool;
    fn int(&self, name: &str) -> Result<Option<i64>, NodeError>;
    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, NodeError>;
    fn string(&self, name: &str) -> Result<Option<String>, NodeError>;
    fn float(&self, name: &str) -> Result<Option<f32>, NodeError>;
    /// The ONNX name of element type `code` (`DOUBLE`), for messages.
    fn type_name(&self, code: i64) -> String;
    /// The names of the attributes the node carries.
    fn names(&self) -> Vec<String>;
}

/// One ONNX node as an op family's import sees it.
pub struct OnnxIn<'a> {
    pub op_type: &'a str,
    /// The model's default-domain opset.
    pub opset: i64,
    /// The number of inputs (omitted optional ones included).
    pub inputs: usize,
    pub outputs: usize,
    pub attrs: &'a dyn OnnxAttrs,
    /// Constant inputs the import appends (legacy attributes that later
    /// opsets moved to inputs): the suffix of their name and their value.
    pub appended: Vec<(String, Tensor)>,
    /// Set by the import when only the first output is computed: what the
    /// others are, for the error when the model uses them.
    pub first_output_only: Option<&'static str>,
}

impl OnnxIn<'_> {
    pub fn attr_err(&self, attribute: &str, message: impl Into<String>) -> NodeError {
        NodeError::Attribute {
            attribute: attribute.to_string(),
            message: message.into(),
        }
    }

    pub fn node_err(&self, message: impl Into<String>) -> NodeError {
        NodeError::Node {
            message: message.into(),
        }
    }

    /// Rejects attributes that the op's specification (any opset) does not
    /// define, as the ONNX checker does: a misspelt or foreign attribute
    /// would otherwise be silently ignored.
    pub fn check_known(&self, known: &[&str]) -> Result<(), NodeError> {
        let names = self.attrs.names();
        match unknown_attribute(names.iter().map(String::as_str), known, self.op_type) {
            Some((name, message)) => Err(self.attr_err(name, message)),
            None => Ok(()),
        }
    }

    /// Checks the number of inputs.
    pub fn arity(&self, min: usize, max: usize) -> Result<(), NodeError> {
        match arity_error(self.inputs, min, max) {
            None => Ok(()),
            Some(m) => Err(self.node_err(m)),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.attrs.has(name)
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, NodeError> {
        self.attrs.int(name)
    }

    pub fn int_or(&self, name: &str, default: i64) -> Result<i64, NodeError> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    /// A 0/1 integer flag.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, NodeError> {
        match self.int(name)? {
            None => Ok(default),
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(v) => Err(self.attr_err(name, format!("expected 0 or 1, got {v}"))),
        }
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, NodeError> {
        self.attrs.ints(name)
    }

    pub fn float(&self, name: &str) -> Result<Option<f32>, NodeError> {
        self.attrs.float(name)
    }

    pub fn float_or(&self, name: &str, default: f32) -> Result<f32, NodeError> {
        Ok(self.attrs.float(name)?.unwrap_or(default))
    }

    /// A list of non-negative integers.
    pub fn usizes(&self, name: &str) -> Result<Option<Vec<usize>>, NodeError> {
        let Some(v) = self.ints(name)? else {
            return Ok(None);
        };
        v.iter()
            .map(|&x| {
                usize::try_from(x).map_err(|_| {
                    self.attr_err(name, format!("expected non-negative values, got {v:?}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub fn string(&self, name: &str) -> Result<Option<String>, NodeError> {
        self.attrs.string(name)
    }

    /// An integer-list attribute that later opsets pass as the optional
    /// input 1 instead (Squeeze/Unsqueeze axes, Split's split, Reduce* axes):
    /// read it before opset `since`; from `since` on, reject it as an
    /// attribute (the executor reads the input).
    pub fn ints_moved_to_input(
        &self,
        since: i64,
        name: &str,
    ) -> Result<Option<Vec<i64>>, NodeError> {
        if self.opset < since {
            self.arity(1, 1)?;
            return self.ints(name);
        }
        self.arity(1, 2)?;
        if self.has(name) {
            return Err(self.attr_err(
                name,
                format!(
                    "is an input, not an attribute, from opset {since} (model opset {})",
                    self.opset
                ),
            ));
        }
        Ok(None)
    }

    /// A list of positive integers (strides, dilations, kernel sizes);
    /// empty when absent.
    pub fn positives(&self, name: &str) -> Result<Vec<usize>, NodeError> {
        let v = self.usizes(name)?.unwrap_or_default();
        if v.contains(&0) {
            return Err(self.attr_err(name, format!("expected positive values, got {v:?}")));
        }
        Ok(v)
    }

    /// Checks that a list, when given, has `want` values.
    pub fn check_len(&self, what: &str, v: &[usize], want: usize) -> Result<(), NodeError> {
        if v.is_empty() || v.len() == want {
            Ok(())
        } else {
            Err(self.attr_err(what, format!("expected {want} values, got {}", v.len())))
        }
    }

    /// The `auto_pad` attribute.
    pub fn auto_pad(&self) -> Result<AutoPad, NodeError> {
        let s = self.string("auto_pad")?;
        let s = s.as_deref().unwrap_or("NOTSET");
        AutoPad::parse(s).ok_or_else(|| {
            self.attr_err(
                "auto_pad",
                format!("expected NOTSET, SAME_UPPER, SAME_LOWER or VALID, got '{s}'"),
            )
        })
    }

    /// The window attributes shared by convs and pools, with their lengths
    /// checked against the spatial rank (from `kernel_shape` when given).
    pub fn window(&self, kernel_required: bool) -> Result<WindowAttrs, NodeError> {
        let kernel_shape = self.positives("kernel_shape")?;
        if kernel_required && kernel_shape.is_empty() {
            return Err(self.attr_err("kernel_shape", "required attribute is missing"));
        }
        let strides = self.positives("strides")?;
        let dilations = self.positives("dilations")?;
        let pads = self.usizes("pads")?.unwrap_or_default();
        let auto_pad = self.auto_pad()?;
        let rank = [
            kernel_shape.len(),
            strides.len(),
            dilations.len(),
            pads.len() / 2,
        ]
        .into_iter()
        .find(|&r| r > 0);
        if let Some(rank) = rank {
            self.check_len("strides", &strides, rank)?;
            self.check_len("dilations", &dilations, rank)?;
            self.check_len("pads", &pads, 2 * rank)?;
        } else if !pads.is_empty() {
            return Err(self.attr_err(
                "pads",
                format!("expected an even number of values, got {}", pads.len()),
            ));
        }
        if auto_pad != AutoPad::NotSet && pads.iter().any(|&p| p != 0) {
            return Err(self.attr_err(
                "pads",
                "explicit pads cannot be combined with auto_pad (ONNX forbids it)",
            ));
        }
        Ok(WindowAttrs {
            kernel_shape,
            strides,
            pads,
            dilations,
            auto_pad,
        })
    }

    /// Rejects an axis list naming an axis twice.
    pub fn check_distinct(&self, what: &str, v: &[i64]) -> Result<(), NodeError> {
        match repeated_axis(v) {
            Some(a) => Err(self.attr_err(what, format!("axis {a} is given twice in {v:?}"))),
            None => Ok(()),
        }
    }

    /// Appends a constant int64 input named `<node>_<what>`.
    pub fn append_ints(&mut self, what: &str, values: Vec<i64>) -> Result<(), NodeError> {
        let t = Tensor::from_i64(vec![values.len()], values)
            .map_err(|e| self.attr_err(what, e.to_string()))?;
        self.appended.push((what.to_string(), t));
        Ok(())
    }
}

/// ONNX's `TensorProto.DataType` code of FLOAT16 (onnx.proto).
pub const ONNX_FLOAT16: i64 = 10;
/// ONNX's `TensorProto.DataType` code of BFLOAT16.
pub const ONNX_BFLOAT16: i64 = 16;

/// The element type of ONNX `TensorProto.DataType` code `code`, for the
/// types qtune runs.
pub fn dtype_of_onnx(code: i64) -> Option<DType> {
    Some(match code {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Bool,
        _ => return None,
    })
}

/// The ONNX `TensorProto.DataType` code of an element type.
pub fn onnx_of_dtype(d: DType) -> i64 {
    match d {
        DType::F32 => 1,
        DType::U8 => 2,
        DType::I8 => 3,
        DType::I32 => 6,
        DType::I64 => 7,
        DType::Bool => 9,
    }
}

/// The window attributes shared by convs and pools (empty lists: absent).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowAttrs {
    pub kernel_shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
    pub auto_pad: AutoPad,
}

/// The first of `names` that op type `op_type` does not define (`known`),
/// with the message naming what it does define.
pub fn unknown_attribute<'a>(
    names: impl IntoIterator<Item = &'a str>,
    known: &[&str],
    op_type: &str,
) -> Option<(&'a str, String)> {
    let name = names.into_iter().find(|n| !known.contains(n))?;
    let expected = if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    };
    Some((
        name,
        format!("not an attribute of {op_type} (known: {expected})"),
    ))
}

/// The message for `n` inputs where `min..=max` are expected, if wrong.
pub fn arity_error(n: usize, min: usize, max: usize) -> Option<String> {
    if (min..=max).contains(&n) {
        return None;
    }
    let expected = if min == max {
        format!("{min}")
    } else {
        format!("{min} to {max}")
    };
    Some(format!("expected {expected} inputs, got {n}"))
}

/// The first axis a list repeats.
pub fn repeated_axis(v: &[i64]) -> Option<i64> {
    v.iter()
        .enumerate()
        .find(|(i, a)| v[..*i].contains(a))
        .map(|(_, &a)| a)
}

/// An ONNX attribute value an op family writes.
#[derive(Debug, Clone, PartialEq)]
pub enum OnnxValue {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Str(String),
}

/// One present input of a node being exported.
#[derive(Debug)]
pub struct ExportInput {
    /// `None` when the graph does not know the shape.
    pub dims: Option<Vec<usize>>,
    pub dtype: DType,
    /// Its value, when it is a constant (the tensor shares the graph's
    /// buffer; a family converts what it reads).
    pub constant: Option<Tensor>,
}

/// The inputs of a node being exported: which are present, their dims when
/// the graph knows them, and their element types.
#[derive(Debug, Default)]
pub struct ExportInputs {
    /// One entry per input slot: `None` when the slot is empty.
    pub slots: Vec<Option<ExportInput>>,
    /// The default-domain opset the exporter writes.
    pub opset: i64,
}

impl ExportInputs {
    /// The number of input slots.
    pub fn count(&self) -> usize {
        self.slots.len()
    }
    pub fn present(&self, i: usize) -> bool {
        matches!(self.slots.get(i), Some(Some(_)))
    }
    /// The values of input `i`, when it is a constant of integers.
    pub fn constant_ints(&self, i: usize) -> Option<Vec<i64>> {
        self.slots
            .get(i)?
            .as_ref()?
            .constant
            .as_ref()?
            .to_i64_vec()
            .ok()
    }
    /// The element type of input `i`, when present.
    pub fn dtype(&self, i: usize) -> Option<DType> {
        self.slots.get(i)?.as_ref().map(|s| s.dtype)
    }
    /// The dims of input `i`, which must be present with a known shape.
    pub fn dims(&self, i: usize) -> Result<&[usize], NodeError> {
        match self.slots.get(i) {
            Some(Some(ExportInput { dims: Some(d), .. })) => Ok(d),
            Some(Some(_)) => Err(NodeError::Node {
                message: format!("input {i} has no known shape"),
            }),
            _ => Err(NodeError::Node {
                message: format!("input {i} is missing"),
            }),
        }
    }
}

/// What an op family's export writes for one node.
#[derive(Debug, Default)]
pub struct OnnxOut {
    pub attrs: Vec<(&'static str, OnnxValue)>,
    /// Constant inputs written into slots the node leaves empty: the slot,
    /// the suffix of the initializer's name and its value (an integer list
    /// the exporter's opsets take as an input, as Split's split; a default
    /// ONNX requires, as LayerNormalization's scale).
    pub constants: Vec<(usize, &'static str, Tensor)>,
    /// When set, the node keeps only its first inputs (an input the
    /// exporter's opset takes as an attribute is dropped).
    pub keep_inputs: Option<usize>,
}

impl OnnxOut {
    /// A list of non-negative integers, when not empty (empty lists mean
    /// "absent" in the IR, as on import).
    pub fn usizes(&mut self, name: &'static str, v: &[usize]) -> Result<(), NodeError> {
        if v.is_empty() {
            return Ok(());
        }
        let ints = v
            .iter()
            .map(|&x| {
                i64::try_from(x).map_err(|_| NodeError::Node {
                    message: format!("value {x} does not fit an int64"),
                })
            })
            .collect::<Result<_, _>>()?;
        self.ints(name, ints);
        Ok(())
    }
    /// `auto_pad`, when set.
    pub fn auto_pad(&mut self, a: AutoPad) {
        if a != AutoPad::NotSet {
            self.string("auto_pad", a.name());
        }
    }
    pub fn float(&mut self, name: &'static str, v: f32) {
        self.attrs.push((name, OnnxValue::Float(v)));
    }
    /// An integer list as the constant input `slot`; nothing when `None`.
    pub fn ints_input(
        &mut self,
        slot: usize,
        what: &'static str,
        values: Option<&Vec<i64>>,
    ) -> Result<(), NodeError> {
        let Some(v) = values else {
            return Ok(());
        };
        let t = Tensor::from_i64(vec![v.len()], v.clone()).map_err(|e| NodeError::Node {
            message: e.to_string(),
        })?;
        self.constants.push((slot, what, t));
        Ok(())
    }
    pub fn int(&mut self, name: &'static str, v: i64) {
        self.attrs.push((name, OnnxValue::Int(v)));
    }
    pub fn ints(&mut self, name: &'static str, v: Vec<i64>) {
        self.attrs.push((name, OnnxValue::Ints(v)));
    }
    pub fn string(&mut self, name: &'static str, v: &str) {
        self.attrs.push((name, OnnxValue::Str(v.to_string())));
    }
}
