//! qtune-onnx
