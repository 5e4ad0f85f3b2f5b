//! Executor behaviour on a real model: hooks, kept values, and re-running
//! only what is downstream of a changed node.

use std::path::PathBuf;

use qtune_exec::{
    Executor, FnHook, Keep, NoHook, Parallelism, PrepareOptions, RunOptions, ValueHook, Values,
};
use qtune_ir::{Graph, NodeId, ValueId};
use qtune_tensor::{Tensor, read_npz};

fn mobilenet() -> (Executor, Vec<(ValueId, Tensor)>) {
    let root = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/workloads"
    ));
    assert!(
        root.is_dir(),
        "{} is missing: run scripts/fetch-workloads.sh",
        root.display()
    );
    let graph = qtune_onnx::import_onnx(
        &root.join("models/mobilenetv2_nsfw.onnx"),
        &Default::default(),
    )
    .unwrap();
    let (exec, _) = Executor::from_graph(graph, &PrepareOptions::default()).unwrap();
    let input = read_npz(&root.join("golden/mobilenetv2_nsfw/input.npz")).unwrap();
    let x = input[0].1.slice_outer(0, 1).unwrap();
    let id = exec.graph().inputs[0];
    (exec, vec![(id, x)])
}

/// Halves the output of one value: stands in for a precision change.
struct Perturb(ValueId, usize);

impl ValueHook for Perturb {
    fn on_value(
        &mut self,
        _: &Graph,
        value: ValueId,
        t: &mut Tensor,
    ) -> Result<(), qtune_exec::ExecError> {
        self.1 += 1;
        if value == self.0 {
            let v: Vec<f32> = t.as_f32().unwrap().iter().map(|x| x * 0.5).collect();
            *t = Tensor::from_f32(t.dims().to_vec(), v).unwrap();
        }
        Ok(())
    }
}

#[test]
fn downstream_rerun_equals_full_rerun_and_skips_upstream() {
    let (exec, inputs) = mobilenet();
    let opts_all = RunOptions::new(Keep::All, Parallelism::Sequential);
    let cache = exec.run(inputs.clone(), &opts_all, &mut NoHook).unwrap();
    assert_eq!(
        cache.len(),
        exec.graph().value_count() - count_constants(exec.graph())
    );

    let changed = NodeId::from_index(exec.graph().node_count() / 2);
    let target = exec.graph().node(changed).outputs[0];
    let mut full_hook = Perturb(target, 0);
    let full = exec.run(inputs, &opts_all, &mut full_hook).unwrap();
    let mut part_hook = Perturb(target, 0);
    let part = exec
        .run_downstream(&cache, &[changed], &opts_all, &mut part_hook)
        .unwrap();

    let out = exec.graph().outputs[0];
    assert_eq!(full.get(out), part.get(out), "bit-identical outputs");
    assert_ne!(
        cache.get(out),
        part.get(out),
        "the perturbation reached the output"
    );
    let downstream = exec
        .downstream_of(&[changed])
        .iter()
        .filter(|&&d| d)
        .count();
    assert_eq!(part_hook.1, downstream, "only downstream nodes ran");
    assert!(downstream < exec.graph().node_count() * 2 / 3);
    // Values upstream of the change were not recomputed.
    assert!(
        part.get(exec.graph().node(NodeId::from_index(0)).outputs[0])
            .is_none()
    );
}

#[test]
fn plain_run_keeps_only_outputs_and_hook_sees_every_value() {
    let (exec, inputs) = mobilenet();
    let mut seen = 0usize;
    let values: Values = exec
        .run(
            inputs,
            &RunOptions::default(),
            &mut FnHook(|_: &Graph, _: ValueId, _: &mut Tensor| seen += 1),
        )
        .unwrap();
    assert_eq!(values.len(), exec.graph().outputs.len());
    assert_eq!(
        seen,
        1 + exec.graph().node_count(),
        "input plus one output per node"
    );
}

#[test]
fn parallel_samples_equal_sequential_runs() {
    let (exec, inputs) = mobilenet();
    let samples = vec![inputs.clone(), inputs.clone(), inputs.clone()];
    let par = exec
        .run_samples(samples, &Keep::Outputs, |_| NoHook)
        .unwrap();
    let seq = exec
        .run(
            inputs,
            &RunOptions::new(Keep::Outputs, Parallelism::Sequential),
            &mut NoHook,
        )
        .unwrap();
    let out = exec.graph().outputs[0];
    for (v, _) in &par {
        assert_eq!(v.get(out), seq.get(out));
    }
}

fn count_constants(g: &Graph) -> usize {
    g.values().filter(|(_, v)| v.constant.is_some()).count()
        + g.values()
            .filter(|(id, v)| {
                v.constant.is_none() && v.producer.is_none() && !g.inputs.contains(id)
            })
            .count()
}

/// Conv + activation and Conv + SiLU run fused when nothing needs the
/// intermediate tensors; the results must be bit-identical to the unfused run.
#[test]
fn fused_activations_are_bit_identical() {
    let root = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/workloads"
    ));
    for (name, fold) in [
        ("yolox_det416", false),
        ("mobilenetv2_nsfw", true),
        ("ppocr_v4_det640", false),
    ] {
        let graph = qtune_onnx::import_onnx(
            &root.join(format!("models/{name}.onnx")),
            &Default::default(),
        )
        .unwrap();
        let mut opts = PrepareOptions::default();
        opts.fold_batchnorm = fold;
        let (exec, _) = Executor::from_graph(graph, &opts).unwrap();
        assert!(
            exec.fusion_count() >= 20,
            "{name}: {} fusions",
            exec.fusion_count()
        );
        let input = read_npz(&root.join(format!("golden/{name}/input.npz"))).unwrap();
        let inputs = vec![(
            exec.graph().inputs[0],
            input[0].1.slice_outer(0, 1).unwrap(),
        )];
        let run = RunOptions::new(Keep::Outputs, Parallelism::Rayon);
        let fused = exec.run(inputs.clone(), &run, &mut NoHook).unwrap();
        let mut seen = 0usize;
        let unfused = exec
            .run(
                inputs,
                &run,
                &mut FnHook(|_: &Graph, _: ValueId, _: &mut Tensor| seen += 1),
            )
            .unwrap();
        assert_eq!(
            seen,
            1 + exec.graph().node_count(),
            "{name}: the observing run is unfused"
        );
        for &o in &exec.graph().outputs {
            assert_eq!(
                fused.get(o),
                unfused.get(o),
                "{name}: fused and unfused outputs differ"
            );
        }
    }
}

/// Conv and Gemm weights packed once per model (the default) give the same bits as weights
/// packed per call, fused activations included, in pools of 1 and 2 threads; the packed
/// copies are made on the first run and used by the dense non-1x1 convolutions (the direct
/// kernel) and by the classifiers' batch-1 fully connected layers (the few-row product).
#[test]
fn packed_conv_weights_give_the_same_bits() {
    let root = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/workloads"
    ));
    for name in [
        "yolox_det416",
        "yolov8n_320",
        "mobilenetv2_nsfw",
        "efficientnet_lite0",
    ] {
        let graph = qtune_onnx::import_onnx(
            &root.join(format!("models/{name}.onnx")),
            &Default::default(),
        )
        .unwrap();
        let mut opts = PrepareOptions::default();
        opts.fold_batchnorm = true;
        let (exec, _) = Executor::from_graph(graph, &opts).unwrap();
        let per_call = exec.clone().with_packed_conv_weights(false);
        let input = read_npz(&root.join(format!("golden/{name}/input.npz"))).unwrap();
        let inputs = vec![(
            exec.graph().inputs[0],
            input[0].1.slice_outer(0, 1).unwrap(),
        )];
        let run = RunOptions::new(Keep::Outputs, Parallelism::Rayon);
        let results: Vec<Values> = [(&exec, 1), (&per_call, 2), (&exec, 2), (&per_call, 1)]
            .iter()
            .map(|&(e, threads)| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| e.run(inputs.clone(), &run, &mut NoHook).unwrap())
            })
            .collect();
        assert_eq!(per_call.packed_conv_count(), 0, "{name}");
        assert_eq!(per_call.packed_gemm_count(), 0, "{name}");
        // The classifiers' batch-1 fully connected layers (MobileNetV2: 3, EfficientNet: 1)
        // run on the few-row product, their weights packed once.
        // (None on a CPU without the kernel: nothing is packed there.)
        let gemms = match name {
            "mobilenetv2_nsfw" => 3,
            "efficientnet_lite0" => 1,
            _ => 0,
        };
        let gemms = if qtune_kernels::gemm_few_rows_applies(1, 1280, 256) {
            gemms
        } else {
            0
        };
        assert_eq!(
            exec.packed_gemm_count(),
            gemms,
            "{name}: packed Gemm weights"
        );
        let detector = !matches!(name, "mobilenetv2_nsfw" | "efficientnet_lite0");
        if detector
            && qtune_kernels::conv2d_uses_direct([1, 8, 8, 8], [8, 8, 3, 3], &Default::default())
        {
            assert!(
                exec.packed_conv_count() >= 20,
                "{name}: {} packed convolutions",
                exec.packed_conv_count()
            );
        }
        for &o in &exec.graph().outputs {
            for r in &results[1..] {
                assert_eq!(
                    results[0].get(o),
                    r.get(o),
                    "{name}: packed and per-call outputs differ"
                );
            }
        }
    }
}

/// A dense 3x3 Conv (on the direct kernel where the CPU has it) with a Relu
/// fused in the graph (the canonical graph's `do_relu` / `relu_limit`):
/// the packed and per-call weights, 1 and 2 threads, all give exactly the
/// Relu (`FusedRelu::apply`) of the same Conv without it, and both bounds
/// bite.
#[test]
fn packed_conv_applies_the_fused_relu() {
    use qtune_ir::{ConvAttrs, FusedRelu, Op};
    use qtune_tensor::DType;
    let (c, m, h, w) = (16, 24, 11, 13);
    let wave = |n: usize, seed: f32| -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.618 + seed).sin() * 43.758).fract() * 0.5)
            .collect()
    };
    let build = |relu: Option<FusedRelu>| {
        let mut g = Graph::new("conv_relu");
        let x = g.add_value("x", DType::F32, Some(vec![1, c, h, w].into()));
        g.inputs.push(x);
        let wt = g.add_constant(
            "w",
            Tensor::from_f32(vec![m, c, 3, 3], wave(m * c * 9, 0.5)).unwrap(),
        );
        let b = g.add_constant("b", Tensor::from_f32(vec![m], wave(m, 2.0)).unwrap());
        let y = g.add_value("y", DType::F32, Some(vec![1, m, h, w].into()));
        let attrs = ConvAttrs {
            pads: vec![1, 1, 1, 1],
            group: 1,
            ..Default::default()
        };
        g.add_node_with_relu(
            "conv",
            Op::Conv(attrs),
            vec![Some(x), Some(wt), Some(b)],
            vec![y],
            relu,
        );
        g.outputs.push(y);
        Executor::from_graph(g, &PrepareOptions::default())
            .unwrap()
            .0
    };
    let input = Tensor::from_f32(vec![1, c, h, w], wave(c * h * w, 1.0)).unwrap();
    let run = |e: &Executor, threads: usize| -> Vec<f32> {
        let id = e.graph().inputs[0];
        let out = e.graph().outputs[0];
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let opts = RunOptions::new(Keep::Outputs, Parallelism::Rayon);
                let v = e.run(vec![(id, input.clone())], &opts, &mut NoHook);
                v.unwrap().get(out).unwrap().to_f32_vec()
            })
    };
    let plain = build(None);
    let pre = run(&plain, 1);
    assert_eq!(pre, run(&plain.clone().with_packed_conv_weights(false), 2));
    for relu in [FusedRelu::RELU, FusedRelu { limit: Some(0.75) }] {
        let want: Vec<u32> = pre.iter().map(|&v| relu.apply(v).to_bits()).collect();
        assert!(pre.iter().any(|&v| v < 0.0) && pre.iter().any(|&v| v > 0.0));
        if let Some(l) = relu.limit {
            assert!(
                pre.iter().filter(|&&v| v > l).count() > 10,
                "the limit bites"
            );
        }
        let exec = build(Some(relu));
        let per_call = exec.clone().with_packed_conv_weights(false);
        for (e, threads) in [(&exec, 1), (&exec, 2), (&per_call, 1), (&per_call, 2)] {
            let got: Vec<u32> = run(e, threads).iter().map(|v| v.to_bits()).collect();
            assert!(got == want, "{relu:?}, {threads} threads");
        }
        let mut params = qtune_kernels::Conv2dParams::default();
        params.pads = [1; 4];
        let direct = qtune_kernels::conv2d_uses_direct([1, c, h, w], [m, c, 3, 3], &params);
        assert_eq!(exec.packed_conv_count(), usize::from(direct));
    }
}

/// MatMul with the canonical graph's optional bias (third input, a fused MatMul + Add): the
/// same bits as a MatMul node followed by an Add node, on a plain, a batched and a broadcast
/// product with row and matrix biases, and close to an f64 product plus bias; a bias that
/// would widen the product is an error, not a panic.
#[test]
fn matmul_bias_equals_matmul_then_add() {
    use qtune_ir::Op;
    use qtune_tensor::DType;
    let wave = |n: usize, seed: f32| -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.618 + seed).sin() * 43.758).fract())
            .collect()
    };
    let numel = |d: &[usize]| d.iter().product::<usize>();
    // (a, b, bias, output) dims.
    type Case<'a> = (&'a [usize], &'a [usize], &'a [usize], &'a [usize]);
    let cases: [Case; 4] = [
        (&[5, 7], &[7, 9], &[9], &[5, 9]),
        (&[2, 5, 7], &[7, 9], &[5, 9], &[2, 5, 9]),
        (&[2, 3, 5, 7], &[3, 7, 9], &[9], &[2, 3, 5, 9]),
        (&[1, 4, 6, 8], &[1, 4, 8, 6], &[1, 4, 1, 6], &[1, 4, 6, 6]),
    ];
    let run = |g: Graph, a: &Tensor| -> Result<Vec<f32>, String> {
        let (e, _) =
            Executor::from_graph(g, &PrepareOptions::default()).map_err(|e| e.to_string())?;
        let opts = RunOptions::new(Keep::Outputs, Parallelism::Rayon);
        let out = e.graph().outputs[0];
        let v = e
            .run(vec![(e.graph().inputs[0], a.clone())], &opts, &mut NoHook)
            .map_err(|e| e.to_string())?;
        Ok(v.get(out).ok_or("no output")?.to_f32_vec())
    };
    for (ad, bd, cd, od) in cases {
        let (av, bv, cv) = (
            wave(numel(ad), 0.3),
            wave(numel(bd), 1.1),
            wave(numel(cd), 2.7),
        );
        let a = Tensor::from_f32(ad.to_vec(), av.clone()).unwrap();
        let build = |fused: bool| {
            let mut g = Graph::new("matmul_bias");
            let x = g.add_value("a", DType::F32, Some(ad.to_vec().into()));
            g.inputs.push(x);
            let b = g.add_constant("b", Tensor::from_f32(bd.to_vec(), bv.clone()).unwrap());
            let c = g.add_constant("c", Tensor::from_f32(cd.to_vec(), cv.clone()).unwrap());
            let y = g.add_value("y", DType::F32, Some(od.to_vec().into()));
            if fused {
                g.add_node("mm", Op::MatMul, vec![Some(x), Some(b), Some(c)], vec![y]);
            } else {
                let p = g.add_value("p", DType::F32, Some(od.to_vec().into()));
                g.add_node("mm", Op::MatMul, vec![Some(x), Some(b)], vec![p]);
                g.add_node("add", Op::Add, vec![Some(p), Some(c)], vec![y]);
            }
            g.outputs.push(y);
            g
        };
        let fused = run(build(true), &a).unwrap();
        let split = run(build(false), &a).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fused), bits(&split), "{ad:?} x {bd:?} + {cd:?}");
        // f64 product plus bias, every operand indexed by broadcasting over the output.
        let (m, kk, n) = (od[od.len() - 2], ad[ad.len() - 1], od[od.len() - 1]);
        let idx = |d: &[usize], o: &[usize]| -> usize {
            let off = o.len() - d.len();
            d.iter().enumerate().fold(0, |acc, (i, &di)| {
                acc * di + if di == 1 { 0 } else { o[off + i] }
            })
        };
        let mut o = vec![0usize; od.len()];
        for (flat, &got) in fused.iter().enumerate() {
            let mut r = flat;
            for i in (0..od.len()).rev() {
                o[i] = r % od[i];
                r /= od[i];
            }
            let mut want = f64::from(cv[idx(cd, &o)]);
            for p in 0..kk {
                let mut oa = o.clone();
                oa[od.len() - 1] = p;
                let mut ob = o.clone();
                ob[od.len() - 2] = p;
                want += f64::from(av[idx(ad, &oa)]) * f64::from(bv[idx(bd, &ob)]);
            }
            assert!(
                (f64::from(got) - want).abs() < 1e-5 * (1.0 + want.abs()),
                "{ad:?} x {bd:?} + {cd:?} at {o:?}: {got} vs {want} (m {m}, n {n})"
            );
        }
    }
    // A bias wider than the product: refused with an error naming the problem.
    let mut g = Graph::new("matmul_wide_bias");
    let x = g.add_value("a", DType::F32, Some(vec![5, 7].into()));
    g.inputs.push(x);
    let b = g.add_constant("b", Tensor::from_f32(vec![7, 9], wave(63, 1.1)).unwrap());
    let c = g.add_constant(
        "c",
        Tensor::from_f32(vec![3, 5, 9], wave(135, 2.7)).unwrap(),
    );
    let y = g.add_value("y", DType::F32, Some(vec![5, 9].into()));
    g.add_node("mm", Op::MatMul, vec![Some(x), Some(b), Some(c)], vec![y]);
    g.outputs.push(y);
    let a = Tensor::from_f32(vec![5, 7], wave(35, 0.3)).unwrap();
    assert!(run(g, &a).is_err(), "a widening bias is refused");
}
