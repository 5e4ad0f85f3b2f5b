// Hand-written in the form model_transform prints (Top dialect, after
// shape inference and top canonicalization: ReLU6 fused into the Conv).
#loc = loc(unknown)
module @Conv2dRelu attributes {module.chip = "ALL", module.platform = "ONNX", module.state = "TOP_F32", module.top_run_mode = "STATIC", module.weight_file = "conv2drelu_top_f32_all_weight.npz"} {
  func.func @main(%arg0: tensor<1x3x4x4xf32> loc(unknown)) -> tensor<1x2xf32> {
    %0 = "top.None"() : () -> none loc(#loc)
    %1 = "top.Input"(%arg0) {channel_format = "nchw", keep_aspect_ratio = false, mean = [0.000000e+00, 0.000000e+00, 0.000000e+00], pixel_format = "rgb", scale = [1.000000e+00, 1.000000e+00, 1.000000e+00]} : (tensor<1x3x4x4xf32>) -> tensor<1x3x4x4xf32> loc(#loc1)
    %2 = "top.Weight"() : () -> tensor<2x3x3x3xf32> loc(#loc2)
    %3 = "top.Weight"() : () -> tensor<2xf32> loc(#loc3)
    %4 = "top.Conv"(%1, %2, %3) {dilations = [1, 1], do_relu = true, group = 1 : i64, kernel_shape = [3, 3], pads = [1, 1, 1, 1], relu_limit = 6.000000e+00 : f64, strides = [2, 2]} : (tensor<1x3x4x4xf32>, tensor<2x3x3x3xf32>, tensor<2xf32>) -> tensor<1x2x2x2xf32> loc(#loc4)
    %5 = "top.AvgPool"(%4) {count_include_pad = true, keepdims = true, kernel_shape = [], pads = [], strides = []} : (tensor<1x2x2x2xf32>) -> tensor<1x2x1x1xf32> loc(#loc5)
    %6 = "top.Reshape"(%5) {shape = [1, 2]} : (tensor<1x2x1x1xf32>) -> tensor<1x2xf32> loc(#loc6)
    %7 = "top.MulConst"(%6) {const_val = 5.000000e-01 : f64, do_relu = false, relu_limit = -1.000000e+00 : f64} : (tensor<1x2xf32>) -> tensor<1x2xf32> loc(#loc7)
    return %7 : tensor<1x2xf32> loc(#loc)
  } loc(#loc)
} loc(#loc)
#loc1 = loc("input")
#loc2 = loc("conv.weight")
#loc3 = loc("conv.bias")
#loc4 = loc("3_Conv")
#loc5 = loc("4_GlobalAveragePool")
#loc6 = loc("output_Reshape")
#loc7 = loc("output_Mul")
