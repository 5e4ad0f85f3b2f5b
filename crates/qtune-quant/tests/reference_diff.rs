//! Differential test against the numpy reference implementation in
//! `tests/reference/cali_reference.py`: every method's threshold (and the
//! table min/max columns) must agree within `REFERENCE_REL`.

use qtune_quant::{CalibrationMethod as M, PercentileSchedule, StatsConfig, TensorStats};
use qtune_tensor::{Tensor, write_npz};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

/// Relative tolerance between the Rust and numpy implementations: they
/// differ only in the summation order of f64 means.
const REFERENCE_REL: f64 = 1e-5;

/// Deterministic generator (splitmix64) so the test data never changes.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        let bits = u32::try_from(self.next_u64() >> 40).unwrap();
        (f64::from(bits) + 0.5) / f64::from(1u32 << 24)
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn to_f32(v: f64) -> f32 {
    // Test data only: narrowing to f32 is the point.
    #[allow(clippy::cast_possible_truncation)]
    let x = v as f32;
    x
}

struct Dataset {
    name: &'static str,
    op_index: usize,
    samples: Vec<Vec<f32>>,
}

fn datasets() -> Vec<Dataset> {
    let mut rng = Rng(20240601);
    let size = 4096;
    let mut make = |n: usize, f: &mut dyn FnMut(&mut Rng, usize) -> f64| -> Vec<Vec<f32>> {
        (0..n)
            .map(|s| (0..size).map(|_| to_f32(f(&mut rng, s))).collect())
            .collect()
    };
    vec![
        Dataset {
            name: "gauss",
            op_index: 0,
            samples: make(6, &mut |r, _| r.normal()),
        },
        Dataset {
            name: "heavy_tail",
            op_index: 3,
            // Student-t with 2 degrees of freedom: heavy tails.
            samples: make(6, &mut |r, _| {
                let z = r.normal();
                let chi = r.normal().powi(2) + r.normal().powi(2);
                z / (chi / 2.0).sqrt()
            }),
        },
        Dataset {
            name: "relu",
            op_index: 5,
            samples: make(6, &mut |r, _| r.normal().max(0.0) * 3.0),
        },
        Dataset {
            name: "growing",
            op_index: 7,
            // The range grows with every sample, so the histogram extends.
            samples: make(6, &mut |r, s| {
                r.normal() * (1.0 + f64::from(u32::try_from(s).unwrap()) * 0.7)
            }),
        },
        Dataset {
            name: "huge_growth",
            op_index: 9,
            // 0.01 then ~1.5: about 300,000 bins, halved for KL.
            samples: make(3, &mut |r, s| {
                if s == 0 {
                    r.normal() * 0.003
                } else {
                    r.normal() * 0.4
                }
            }),
        },
    ]
}

#[test]
fn thresholds_match_numpy_reference() {
    let dir = std::env::temp_dir().join(format!("qtune-quant-ref-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sets = datasets();
    let op_count = 10;
    let npz = dir.join("tensors.npz");
    let tensors: Vec<(String, Tensor)> = sets
        .iter()
        .map(|d| {
            let flat: Vec<f32> = d.samples.concat();
            let shape = vec![d.samples.len(), d.samples[0].len()];
            (d.name.to_string(), Tensor::from_f32(shape, flat).unwrap())
        })
        .collect();
    write_npz(&npz, &tensors).unwrap();
    let spec = dir.join("spec.txt");
    let spec_text: String = sets
        .iter()
        .map(|d| {
            format!(
                "{} {} {} {}\n",
                d.name,
                d.op_index,
                op_count,
                d.samples.len()
            )
        })
        .collect();
    std::fs::write(&spec, spec_text).unwrap();

    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/cali_reference.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&npz)
        .arg(&spec)
        .output()
        .expect("python3 must be installed to run the reference");
    assert!(
        out.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut reference: HashMap<(String, String), (f64, f64, f64)> = HashMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let num = |s: &str| s.parse::<f64>().unwrap();
        reference.insert(
            (f[0].to_string(), f[1].to_string()),
            (num(f[2]), num(f[3]), num(f[4])),
        );
    }

    // 6 methods + abs_percentile + torch_observer + kl_bins per tensor.
    assert_eq!(reference.len(), sets.len() * 9);
    let mut config = StatsConfig::with_methods(&M::ALL);
    config.torch_observer = true;
    let mut failures = Vec::new();
    let mut check = |tensor: &str, what: &str, got: (f64, f64, f64)| {
        let want = reference[&(tensor.to_string(), what.to_string())];
        let ok = |a: f64, b: f64| a == b || (a - b).abs() <= REFERENCE_REL * a.abs().max(b.abs());
        if !(ok(got.0, want.0) && ok(got.1, want.1) && ok(got.2, want.2)) {
            failures.push(format!("{tensor} {what}: rust {got:?}, numpy {want:?}"));
        }
    };
    for d in &sets {
        let schedule = PercentileSchedule::new(d.op_index, op_count, d.samples.len());
        let mut stats = TensorStats::new(d.name, &config, schedule).unwrap();
        for x in &d.samples {
            stats.observe(x).unwrap();
        }
        let t = stats.thresholds().unwrap();
        for m in M::ALL {
            check(d.name, m.name(), t.table_row(m).unwrap());
        }
        check(
            d.name,
            "abs_percentile",
            (t.abs_percentile.unwrap(), 0.0, 0.0),
        );
        check(
            d.name,
            "torch_observer",
            (t.torch_observer.unwrap(), 0.0, 0.0),
        );
        let bins = stats.histogram().map_or(0, |h| h.counts().len());
        check(
            d.name,
            "kl_bins",
            (f64::from(u32::try_from(bins).unwrap()), 0.0, 0.0),
        );
        if d.name == "huge_growth" {
            assert!(
                bins > 131_072,
                "huge_growth must exceed 131072 bins, has {bins}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(failures.is_empty(), "{failures:#?}");
}
