use qtune_tensor::{Tensor, read_npz, write_npz};

use crate::common::*;

#[test]
fn run_matches_golden_and_dump_all_keeps_every_tensor() {
    let dir = scratch("run_golden");
    let w = workloads();
    let out_path = dir.join("out.npz");
    let out = qtune()
        .args(["run"])
        .arg(model("mobilenetv2_nsfw"))
        .arg("--input")
        .arg(w.join("golden/mobilenetv2_nsfw/input.npz"))
        .arg("-o")
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let cmp = qtune()
        .arg("compare")
        .arg(&out_path)
        .arg(w.join("golden/mobilenetv2_nsfw/output.npz"))
        .args(["--tolerance", "0.99999,0.999"])
        .output()
        .unwrap();
    assert!(cmp.status.success(), "{}", stdout_of(&cmp));
    assert!(stdout_of(&cmp).contains("1 passed"));

    let all_path = dir.join("all.npz");
    let out = qtune()
        .args(["run", "--dump_all", "--threads", "1"])
        .arg(model("mobilenetv2_nsfw"))
        .arg("--input")
        .arg(w.join("golden/mobilenetv2_nsfw/input.npz"))
        .arg("-o")
        .arg(&all_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let all = read_npz(&all_path).unwrap();
    // input + 52 Conv + 52 BN + 35 Clip + 10 Add + 3 Gemm + 2 Relu + pool, flatten, softmax
    assert_eq!(all.len(), 1 + 52 + 52 + 35 + 10 + 3 + 2 + 3);
    assert_eq!(all[0].0, "input_1");
    assert_eq!(all.last().unwrap().0, "dense_3");
    let outputs = read_npz(&out_path).unwrap();
    assert_eq!(
        all.last().unwrap().1,
        outputs[0].1,
        "dump_all and plain runs agree bit for bit"
    );
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let dir = scratch("run_threads");
    let w = workloads();
    let mut outs = Vec::new();
    for threads in ["1", "2", "3"] {
        let p = dir.join(format!("out{threads}.npz"));
        let out = qtune()
            .args(["run", "--threads", threads])
            .arg(model("yolov8n_320"))
            .arg("--input")
            .arg(w.join("golden/yolov8n_320/input.npz"))
            .arg("-o")
            .arg(&p)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        outs.push(std::fs::read(&p).unwrap());
    }
    assert_eq!(outs[0], outs[1], "1 vs 2 threads");
    assert_eq!(outs[0], outs[2], "1 vs 3 threads");
}

#[test]
fn one_sample_runs_like_a_stacked_batch() {
    let dir = scratch("run_split");
    let w = workloads();
    let input = read_npz(&w.join("golden/efficientnet_lite0/input.npz")).unwrap();
    let second: Vec<(String, Tensor)> = input
        .iter()
        .map(|(n, t)| (n.clone(), t.slice_outer(1, 2).unwrap()))
        .collect();
    write_npz(&dir.join("second.npz"), &second).unwrap();
    let run = |inp: &std::path::Path, out: &std::path::Path| {
        let o = qtune()
            .arg("run")
            .arg(model("efficientnet_lite0"))
            .arg("--input")
            .arg(inp)
            .arg("-o")
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
        read_npz(out).unwrap()
    };
    let both = run(
        &w.join("golden/efficientnet_lite0/input.npz"),
        &dir.join("both.npz"),
    );
    let one = run(&dir.join("second.npz"), &dir.join("one.npz"));
    assert_eq!(both[0].1.slice_outer(1, 2).unwrap(), one[0].1);
}

/// `qtune bench --profile --profile_nodes N` lists the N slowest nodes (all with 0), each
/// line naming a node of the model; the flag is refused without `--profile`.
#[test]
fn bench_profile_lists_the_requested_number_of_nodes() {
    let w = workloads();
    let bench = |extra: &[&str]| {
        qtune()
            .args(["bench", "--threads", "1", "--iters", "1", "--warmup", "0"])
            .arg(model("mobilenetv2_nsfw"))
            .arg("--input")
            .arg(w.join("golden/mobilenetv2_nsfw/input.npz"))
            .args(extra)
            .output()
            .unwrap()
    };
    // Node lines: indented, a time, a name, the op type in parentheses.
    let node_lines = |text: &str| {
        text.lines()
            .filter(|l| {
                l.starts_with("  ")
                    && l.contains(" (")
                    && l.trim_start().starts_with(|c: char| c.is_ascii_digit())
            })
            .count()
    };
    let out = bench(&["--profile", "--profile_nodes", "5"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(node_lines(&stderr_of(&out)), 5, "{}", stderr_of(&out));
    let out = bench(&["--profile"]);
    assert_eq!(node_lines(&stderr_of(&out)), 12, "{}", stderr_of(&out));
    // All: one line per node the executor ran, which the per-op-type lines count too.
    let out = bench(&["--profile", "--profile_nodes", "0"]);
    let text = stderr_of(&out);
    let per_type: usize = text
        .lines()
        .filter(|l| l.ends_with(" nodes"))
        .map(|l| {
            l.split_whitespace()
                .rev()
                .nth(1)
                .and_then(|n| n.parse::<usize>().ok())
                .expect("a node count")
        })
        .sum();
    assert!(per_type > 12, "{text}");
    assert_eq!(node_lines(&text), per_type, "{text}");
    let refused = bench(&["--profile_nodes", "5"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr_of(&refused));
    assert!(
        stderr_of(&refused).contains("--profile"),
        "{}",
        stderr_of(&refused)
    );
}
