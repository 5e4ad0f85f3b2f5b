//! Typed, checked access to a node's attributes. Every error speaks in one
//! voice: `node conv1 (Conv), attribute 'pads': expected 4 values, got 2`.

use qtune_ir::onnx_node::{NodeError, OnnxAttrs};

use crate::OnnxError;
use crate::proto::attribute_proto::AttributeType;
use crate::proto::{AttributeProto, TensorProto};

/// One ONNX node as the importer sees it: its final (unique) name, op type,
/// attributes and the model's default-domain opset.
pub(crate) struct NodeCx<'a> {
    pub name: &'a str,
    pub op_type: &'a str,
    pub attrs: &'a [AttributeProto],
    pub opset: i64,
}

impl NodeCx<'_> {
    pub fn attr_err(&self, attribute: &str, message: impl Into<String>) -> OnnxError {
        OnnxError::Attribute {
            node: self.name.to_string(),
            op_type: self.op_type.to_string(),
            attribute: attribute.to_string(),
            message: message.into(),
        }
    }

    pub fn node_err(&self, message: impl Into<String>) -> OnnxError {
        OnnxError::Node {
            node: self.name.to_string(),
            op_type: self.op_type.to_string(),
            message: message.into(),
        }
    }

    /// Rejects attributes that the op's specification (any opset) does not
    /// define, as the ONNX checker does: a misspelt or foreign attribute
    /// would otherwise be silently ignored.
    pub fn check_known(&self, known: &[&str]) -> Result<(), OnnxError> {
        let names = self.attrs.iter().map(|a| a.name.as_deref().unwrap_or(""));
        match qtune_ir::onnx_node::unknown_attribute(names, known, self.op_type) {
            Some((name, message)) => Err(self.attr_err(name, message)),
            None => Ok(()),
        }
    }

    fn get(&self, name: &str) -> Option<&AttributeProto> {
        // The last occurrence wins, as in onnxruntime; duplicates are rare.
        self.attrs
            .iter()
            .rev()
            .find(|a| a.name.as_deref() == Some(name))
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The attribute's declared type; models written before the `type` field
    /// existed leave it unset, so then it is guessed from the filled field.
    fn kind(a: &AttributeProto) -> AttributeType {
        match a.r#type.and_then(|t| AttributeType::try_from(t).ok()) {
            Some(t) if t != AttributeType::Undefined => t,
            _ => {
                if a.f.is_some() {
                    AttributeType::Float
                } else if a.i.is_some() {
                    AttributeType::Int
                } else if a.s.is_some() {
                    AttributeType::String
                } else if a.t.is_some() {
                    AttributeType::Tensor
                } else if !a.floats.is_empty() {
                    AttributeType::Floats
                } else if !a.ints.is_empty() {
                    AttributeType::Ints
                } else if !a.strings.is_empty() {
                    AttributeType::Strings
                } else {
                    AttributeType::Undefined
                }
            }
        }
    }

    fn typed(&self, name: &str, want: AttributeType) -> Result<Option<&AttributeProto>, OnnxError> {
        let Some(a) = self.get(name) else {
            return Ok(None);
        };
        let kind = Self::kind(a);
        // An empty list is indistinguishable from "no value" in old models
        // that omit the type, so an untyped empty attribute fits any list.
        let empty_list_ok = kind == AttributeType::Undefined
            && matches!(want, AttributeType::Ints | AttributeType::Floats);
        if kind != want && !empty_list_ok {
            return Err(self.attr_err(
                name,
                format!(
                    "expected type {}, got {}",
                    want.as_str_name(),
                    kind.as_str_name()
                ),
            ));
        }
        Ok(Some(a))
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, OnnxError> {
        Ok(self
            .typed(name, AttributeType::Int)?
            .map(|a| a.i.unwrap_or(0)))
    }

    pub fn int_or(&self, name: &str, default: i64) -> Result<i64, OnnxError> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    pub fn float(&self, name: &str) -> Result<Option<f32>, OnnxError> {
        Ok(self
            .typed(name, AttributeType::Float)?
            .map(|a| a.f.unwrap_or(0.0)))
    }

    pub fn float_or(&self, name: &str, default: f32) -> Result<f32, OnnxError> {
        Ok(self.float(name)?.unwrap_or(default))
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, OnnxError> {
        Ok(self
            .typed(name, AttributeType::Ints)?
            .map(|a| a.ints.clone()))
    }

    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>, OnnxError> {
        Ok(self
            .typed(name, AttributeType::Floats)?
            .map(|a| a.floats.clone()))
    }

    pub fn string(&self, name: &str) -> Result<Option<String>, OnnxError> {
        let Some(a) = self.typed(name, AttributeType::String)? else {
            return Ok(None);
        };
        let bytes = a.s.clone().unwrap_or_default();
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| self.attr_err(name, "expected a UTF-8 string"))
    }

    pub fn tensor(&self, name: &str) -> Result<Option<&TensorProto>, OnnxError> {
        Ok(self
            .typed(name, AttributeType::Tensor)?
            .and_then(|a| a.t.as_ref()))
    }

    /// The present attribute among `names`, insisting there is exactly one.
    pub fn exactly_one<'n>(&self, names: &[&'n str]) -> Result<&'n str, OnnxError> {
        let present: Vec<&str> = names.iter().copied().filter(|n| self.has(n)).collect();
        match present.as_slice() {
            [one] => Ok(one),
            _ => Err(self.node_err(format!(
                "expected exactly one of the attributes {}, got {}",
                names.join(", "),
                if present.is_empty() {
                    "none".to_string()
                } else {
                    present.join(", ")
                }
            ))),
        }
    }
}

/// The attributes as an op family's ONNX mapping reads them
/// ([`qtune_ir::onnx_node`]); its errors come back through
/// [`NodeCx::ir_err`] with the same message.
impl OnnxAttrs for NodeCx<'_> {
    fn has(&self, name: &str) -> bool {
        NodeCx::has(self, name)
    }
    fn int(&self, name: &str) -> Result<Option<i64>, NodeError> {
        NodeCx::int(self, name).map_err(node_error)
    }
    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, NodeError> {
        NodeCx::ints(self, name).map_err(node_error)
    }
    fn string(&self, name: &str) -> Result<Option<String>, NodeError> {
        NodeCx::string(self, name).map_err(node_error)
    }
    fn float(&self, name: &str) -> Result<Option<f32>, NodeError> {
        NodeCx::float(self, name).map_err(node_error)
    }
    fn type_name(&self, code: i64) -> String {
        crate::tensor::onnx_type_name(i32::try_from(code).unwrap_or(-1))
    }
    fn names(&self) -> Vec<String> {
        self.attrs
            .iter()
            .map(|a| a.name.clone().unwrap_or_default())
            .collect()
    }
}

fn node_error(e: OnnxError) -> NodeError {
    match e {
        OnnxError::Attribute {
            attribute, message, ..
        } => NodeError::Attribute { attribute, message },
        OnnxError::Node { message, .. } => NodeError::Node { message },
        other => NodeError::Node {
            message: other.to_string(),
        },
    }
}

impl NodeCx<'_> {
    /// An op family's error, named with this node.
    pub fn ir_err(&self, e: NodeError) -> OnnxError {
        match e {
            NodeError::Attribute { attribute, message } => self.attr_err(&attribute, message),
            NodeError::Node { message } => self.node_err(message),
        }
    }
}
