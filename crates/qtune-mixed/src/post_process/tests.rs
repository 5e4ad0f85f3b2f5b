//! These tests run the real `python3` (with numpy), as CI installs it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use qtune_tensor::{Tensor, TensorData};

use super::*;

/// A scratch folder per test, removed when the guard drops.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("qtune-pp-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, body).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn f32_tensor(dims: &[usize], data: Vec<f32>) -> Tensor {
    Tensor::from_f32(dims.to_vec(), data).unwrap()
}

fn bits_equal(a: &Tensor, b: &Tensor) -> bool {
    a.dims() == b.dims()
        && match (a.data(), b.data()) {
            (TensorData::F32(x), TensorData::F32(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y.iter())
                        .all(|(p, q)| p.to_bits() == q.to_bits())
            }
            (x, y) => x == y,
        }
}

fn names(list: &[(String, Tensor)]) -> Vec<&str> {
    list.iter().map(|(n, _)| n.as_str()).collect()
}

const IDENTITY: &str = "def PostProcess(data):\n    return data\n";

#[test]
fn identity_returns_the_same_arrays_bit_for_bit() {
    let scratch = Scratch::new("identity");
    let script = scratch.script("identity.py", IDENTITY);
    let mut pp = PostProcess::start(&script).unwrap();
    assert!(pp.version().starts_with("Python 3"), "{}", pp.version());
    let outputs = vec![
        (
            "logits".to_string(),
            f32_tensor(
                &[2, 3],
                vec![
                    f32::NAN,
                    -0.0,
                    f32::INFINITY,
                    f32::MIN_POSITIVE / 4.0,
                    1e-30,
                    -7.25,
                ],
            ),
        ),
        (
            "ids".to_string(),
            Tensor::from_i64(vec![3], vec![i64::MIN, 0, i64::MAX]).unwrap(),
        ),
        (
            "mask".to_string(),
            Tensor::from_bool(vec![1, 2], vec![true, false]).unwrap(),
        ),
        ("scalar".to_string(), f32_tensor(&[], vec![3.5])),
        ("empty".to_string(), f32_tensor(&[0, 5], vec![])),
        (
            "q".to_string(),
            Tensor::new(vec![2], TensorData::I8(vec![-128, 127].into())).unwrap(),
        ),
    ];
    let back = pp.apply(&outputs).unwrap();
    assert_eq!(names(&back), names(&outputs));
    for ((name, a), (_, b)) in outputs.iter().zip(&back) {
        assert!(bits_equal(a, b), "`{name}`: {a:?} came back as {b:?}");
    }
}

#[test]
fn transforms_rename_and_reorder_keys_in_the_returned_order() {
    let scratch = Scratch::new("transform");
    let script = scratch.script(
        "softmax_pp.py",
        r#"
import numpy as np

def PostProcess(data):
    x = data["logits"].astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    out = {}
    out["z_prob"] = e / e.sum(axis=-1, keepdims=True)  # float64, read as f32
    out["a_class"] = np.argmax(x, axis=-1)              # int64
    out["m_box"] = data["boxes"][:, :2] * 2
    out["top"] = np.float32(x.max())                    # numpy scalar
    out["t_logits"] = data["logits"].T                  # not C-contiguous
    out["big_endian"] = data["logits"].astype(">f4")
    return out
"#,
    );
    let mut pp = PostProcess::start(&script).unwrap();
    let outputs = vec![
        (
            "boxes".to_string(),
            f32_tensor(&[2, 4], (0..8).map(|i| i as f32).collect()),
        ),
        (
            "logits".to_string(),
            f32_tensor(&[2, 3], vec![1.0, 3.0, 2.0, 0.5, 0.25, 4.0]),
        ),
    ];
    let back = pp.apply(&outputs).unwrap();
    assert_eq!(
        names(&back),
        [
            "z_prob",
            "a_class",
            "m_box",
            "top",
            "t_logits",
            "big_endian"
        ]
    );
    let prob = back[0].1.as_f32().unwrap();
    for row in prob.chunks(3) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "softmax row {row:?}");
    }
    assert_eq!(back[1].1, Tensor::from_i64(vec![2], vec![1, 2]).unwrap());
    assert_eq!(back[2].1, f32_tensor(&[2, 2], vec![0.0, 2.0, 8.0, 10.0]));
    assert_eq!(back[3].1, f32_tensor(&[], vec![4.0]));
    assert_eq!(
        back[4].1,
        f32_tensor(&[3, 2], vec![1.0, 0.5, 3.0, 0.25, 2.0, 4.0])
    );
    assert_eq!(back[5].1, outputs[1].1);
}

#[test]
fn prints_from_post_process_do_not_corrupt_the_protocol() {
    let scratch = Scratch::new("prints");
    let script = scratch.script(
        "noisy.py",
        r#"
import os, sys
print("imported noisy")
def PostProcess(data):
    print("in post process")
    sys.stdout.write("more text\n" * 3)
    os.write(1, b"raw bytes on fd 1\n")
    return data
"#,
    );
    let mut pp = PostProcess::start(&script).unwrap();
    let outputs = vec![(
        "y".to_string(),
        f32_tensor(&[1, 4], vec![1.0, 2.0, 3.0, 4.0]),
    )];
    for _ in 0..3 {
        assert_eq!(pp.apply(&outputs).unwrap(), outputs);
    }
}

#[test]
fn many_calls_on_one_process_stay_fast() {
    let scratch = Scratch::new("many");
    let script = scratch.script("identity.py", IDENTITY);
    let started = Instant::now();
    let mut pp = PostProcess::start(&script).unwrap();
    let start_time = started.elapsed();
    let outputs = vec![(
        "prob".to_string(),
        f32_tensor(&[1, 1000], (0..1000).map(|i| i as f32 * 0.001).collect()),
    )];
    const CALLS: u32 = 200;
    let started = Instant::now();
    for _ in 0..CALLS {
        let back = pp.apply(&outputs).unwrap();
        assert!(bits_equal(&back[0].1, &outputs[0].1));
    }
    let per_call = started.elapsed() / CALLS;
    eprintln!("post_process: start {start_time:?}, {per_call:?} per call (1x1000 f32, identity)");
    // Generous for a shared 2-core machine; a call is about 0.1 ms when idle.
    assert!(per_call.as_millis() < 20, "{per_call:?} per call");
}

#[test]
fn post_process_can_move_to_a_worker_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<PostProcess>();
}

#[test]
fn module_state_persists_between_calls() {
    // Imported once: the module-level counter keeps counting (TPU-MLIR
    // re-imports per sample and would return 1 every time).
    let scratch = Scratch::new("state");
    let script = scratch.script(
        "counter.py",
        "import numpy as np\nn = 0\ndef PostProcess(data):\n    global n\n    n += 1\n    return {'n': np.array([n])}\n",
    );
    let mut pp = PostProcess::start(&script).unwrap();
    for expected in 1..=3 {
        let back = pp.apply(&[]).unwrap();
        assert_eq!(
            back[0].1,
            Tensor::from_i64(vec![1], vec![expected]).unwrap()
        );
    }
}

/// Every error names the script and says what was expected.
struct ErrorCase {
    name: &'static str,
    script: &'static str,
    /// Fragments the message must contain.
    expect: &'static [&'static str],
    /// Whether the error comes from `start` (else from the first `apply`).
    at_start: bool,
    /// Whether the child still serves a good request afterwards (the
    /// script's `PostProcess` returns `data` for a `ok` input).
    still_serves: bool,
}

const ERROR_CASES: &[ErrorCase] = &[
    ErrorCase {
        name: "raises_on_import",
        script: "import numpy\nraise ValueError('bad config')\n",
        expect: &[
            "importing the script raised",
            "raises_on_import.py\", line 2, in <module>",
            "ValueError: bad config",
        ],
        at_start: true,
        still_serves: false,
    },
    ErrorCase {
        name: "syntax_error",
        script: "def PostProcess(data)\n    return data\n",
        expect: &["importing the script raised", "SyntaxError"],
        at_start: true,
        still_serves: false,
    },
    ErrorCase {
        name: "no_function",
        script: "def post_process(data):\n    return data\n",
        expect: &["callable `PostProcess(data)`", "defines no `PostProcess`"],
        at_start: true,
        still_serves: false,
    },
    ErrorCase {
        name: "not_callable",
        script: "PostProcess = 3\n",
        expect: &["`PostProcess` is of type int, not a function"],
        at_start: true,
        still_serves: false,
    },
    ErrorCase {
        name: "raises",
        script: "def PostProcess(data):\n    if 'ok' in data:\n        return data\n    return data['missing_output']\n",
        expect: &[
            "PostProcess raised",
            "KeyError: 'missing_output'",
            "line 4, in PostProcess",
        ],
        at_start: false,
        still_serves: true,
    },
    ErrorCase {
        name: "returns_list",
        script: "def PostProcess(data):\n    if 'ok' in data:\n        return data\n    return list(data.values())\n",
        expect: &[
            "must return a dict",
            "returned a value of type list, not a dict",
        ],
        at_start: false,
        still_serves: true,
    },
    ErrorCase {
        name: "value_not_array",
        script: "def PostProcess(data):\n    if 'ok' in data:\n        return data\n    return {'x': [1, 2]}\n",
        expect: &[
            "must return a dict",
            "value of `x` is of type list, not a numpy array",
        ],
        at_start: false,
        still_serves: true,
    },
    ErrorCase {
        name: "key_not_str",
        script: "import numpy as np\ndef PostProcess(data):\n    if 'ok' in data:\n        return data\n    return {0: np.zeros(2)}\n",
        expect: &["must return a dict", "key 0 is of type int, not str"],
        at_start: false,
        still_serves: true,
    },
    ErrorCase {
        name: "float16",
        script: "import numpy as np\ndef PostProcess(data):\n    if 'ok' in data:\n        return data\n    return {'half': np.zeros(2, np.float16)}\n",
        expect: &["output `half` has dtype float16", "expected float32"],
        at_start: false,
        still_serves: true,
    },
    ErrorCase {
        name: "object_array",
        script: "import numpy as np\ndef PostProcess(data):\n    if 'ok' in data:\n        return data\n    return {'o': np.array([None, 1])}\n",
        expect: &["output `o` has dtype object"],
        at_start: false,
        still_serves: true,
    },
    ErrorCase {
        name: "dies_mid_run",
        script: "import os\ndef PostProcess(data):\n    os._exit(3)\n",
        expect: &["python3 process exited with status 3 during PostProcess"],
        at_start: false,
        still_serves: false,
    },
    ErrorCase {
        name: "killed_mid_run",
        script: "import os, signal\ndef PostProcess(data):\n    os.kill(os.getpid(), signal.SIGKILL)\n",
        expect: &["killed by signal 9"],
        at_start: false,
        still_serves: false,
    },
    ErrorCase {
        name: "sys_exit_mid_run",
        // SystemExit is an exception like any other: reported, not fatal.
        script: "import sys\ndef PostProcess(data):\n    if 'ok' in data:\n        return data\n    sys.exit(1)\n",
        expect: &["PostProcess raised", "SystemExit: 1"],
        at_start: false,
        still_serves: true,
    },
];

#[test]
fn each_error_names_the_script() {
    let scratch = Scratch::new("errors");
    let input = vec![("y".to_string(), f32_tensor(&[2], vec![1.0, 2.0]))];
    let ok_input = vec![("ok".to_string(), f32_tensor(&[1], vec![1.0]))];
    let mut failures = Vec::new();
    for case in ERROR_CASES {
        let script = scratch.script(&format!("{}.py", case.name), case.script);
        let error = match (PostProcess::start(&script), case.at_start) {
            (Err(e), true) => e,
            (Ok(mut pp), false) => match pp.apply(&input) {
                Err(e) => {
                    let served = pp.apply(&ok_input);
                    match (case.still_serves, served) {
                        (true, Ok(back)) if back == ok_input => {}
                        (false, Err(later))
                            if matches!(case.name, "dies_mid_run" | "killed_mid_run") =>
                        {
                            if !later.to_string().contains("earlier") {
                                failures.push(format!("{}: later call said `{later}`", case.name));
                            }
                        }
                        (false, Err(_)) => {}
                        (expected, got) => failures.push(format!(
                            "{}: still serving expected {expected}, got {got:?}",
                            case.name
                        )),
                    }
                    e
                }
                Ok(back) => {
                    failures.push(format!("{}: apply succeeded with {back:?}", case.name));
                    continue;
                }
            },
            (Ok(_), true) => {
                failures.push(format!("{}: start succeeded", case.name));
                continue;
            }
            (Err(e), false) => {
                failures.push(format!("{}: start failed: {e}", case.name));
                continue;
            }
        };
        let message = error.to_string();
        eprintln!("{}:\n{message}\n", case.name);
        let mut expect = vec![script.to_string_lossy().into_owned()];
        expect.extend(case.expect.iter().map(|s| s.to_string()));
        for fragment in expect {
            if !message.contains(&fragment) {
                failures.push(format!(
                    "{}: `{fragment}` missing from:\n{message}",
                    case.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn missing_script_is_reported_before_starting_python() {
    let err = PostProcess::start(Path::new("/nonexistent/pp.py")).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("/nonexistent/pp.py") && message.contains("does not exist"),
        "{message}"
    );
}

#[test]
fn missing_python_is_reported() {
    let scratch = Scratch::new("nopython");
    let script = scratch.script("identity.py", IDENTITY);
    let err = PostProcess::start_with(OsStr::new("/nonexistent/python3"), &script).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&*script.to_string_lossy())
            && message.contains("cannot start the Python interpreter `/nonexistent/python3`")
            && message.contains("needs python3 with numpy"),
        "{message}"
    );
}

#[cfg(unix)]
#[test]
fn missing_numpy_is_reported() {
    use std::os::unix::fs::PermissionsExt;
    // An interpreter wrapper whose PYTHONPATH holds a `numpy` that fails to
    // import, as a python3 without numpy would.
    let scratch = Scratch::new("nonumpy");
    let fake = scratch.0.join("fake");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::write(
        fake.join("numpy.py"),
        "raise ImportError('No module named numpy')\n",
    )
    .unwrap();
    let wrapper = scratch.0.join("python-without-numpy");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nPYTHONPATH='{}' exec python3 \"$@\"\n",
            fake.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = scratch.script("identity.py", IDENTITY);
    let err = PostProcess::start_with(wrapper.as_os_str(), &script).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&*script.to_string_lossy())
            && message.contains("cannot import numpy")
            && message.contains("pip install numpy"),
        "{message}"
    );
}

#[test]
fn an_interpreter_that_is_not_python_fails_cleanly() {
    // `true` exits at once without a word: start-up must not hang.
    let scratch = Scratch::new("notpython");
    let script = scratch.script("identity.py", IDENTITY);
    let err = PostProcess::start_with(OsStr::new("true"), &script).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("exited with status 0 while starting"),
        "{message}"
    );
}

#[test]
fn compare_layers_parse() {
    struct Case {
        text: &'static str,
        expect: Result<&'static [(&'static str, f64)], &'static str>,
    }
    let cases = [
        Case {
            text: "",
            expect: Ok(&[]),
        },
        Case {
            text: "a,b",
            expect: Ok(&[("a", 1.0), ("b", 1.0)]),
        },
        Case {
            text: " a , b ",
            expect: Ok(&[("a", 1.0), ("b", 1.0)]),
        },
        Case {
            text: "a:0.3,b:0.7",
            expect: Ok(&[("a", 0.3), ("b", 0.7)]),
        },
        // TPU-MLIR rejects this one (0.1 + 0.2 + 0.7 != 1.0 in floats).
        Case {
            text: "a:0.1,b:0.2,c:0.7",
            expect: Ok(&[("a", 0.1), ("b", 0.2), ("c", 0.7)]),
        },
        Case {
            text: "x:0:1",
            expect: Ok(&[("x:0", 1.0)]),
        },
        Case {
            text: "a:0.3,b",
            expect: Err("`b` has none"),
        },
        Case {
            text: "a:0.3,b:0.6",
            expect: Err("the rates sum to 0.8999"),
        },
        Case {
            text: "a:x",
            expect: Err("rate `x` of layer `a` is not a number"),
        },
        Case {
            text: "a:-0.5,b:1.5",
            expect: Err("must be a finite number >= 0"),
        },
        Case {
            text: "a:nan",
            expect: Err("must be a finite number >= 0"),
        },
        Case {
            text: "a,,b",
            expect: Err("empty layer name"),
        },
        Case {
            text: ":1",
            expect: Err("empty layer name"),
        },
        Case {
            text: "a,a",
            expect: Err("layer `a` is listed twice"),
        },
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let got = parse_compare_layers(case.text);
        let ok = match (&got, &case.expect) {
            (Ok(list), Ok(want)) => {
                list.len() == want.len()
                    && list
                        .iter()
                        .zip(want.iter())
                        .all(|((n, r), (wn, wr))| n == wn && r == wr)
            }
            (Err(e), Err(fragment)) => e.contains(fragment) && e.contains(case.text),
            _ => false,
        };
        if !ok {
            failures.push(format!("`{}`: got {got:?}", case.text));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_seed_example_runs_verbatim() {
    // `post_process_func.py` as the seed's quantization guide writes it.
    let scratch = Scratch::new("seed");
    let script = scratch.script(
        "post_process_func.py",
        "def PostProcess(data):\n    print(\"in post process\")\n    return data\n",
    );
    let mut pp = PostProcess::start(&script).unwrap();
    let outputs = vec![("output".to_string(), f32_tensor(&[1, 2], vec![0.25, 0.75]))];
    assert_eq!(pp.apply(&outputs).unwrap(), outputs);
}
