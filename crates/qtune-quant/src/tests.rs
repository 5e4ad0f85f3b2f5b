//! Table-driven unit tests of every method on hand-computed cases.

use crate::{CalibrationMethod as M, PercentileSchedule, StatsConfig, TensorStats, Thresholds};

/// Thresholds are f64 computed from f32 data: compare with this relative
/// tolerance.
const HAND_COMPUTED_REL: f64 = 1e-6;

struct Case {
    name: &'static str,
    samples: Vec<Vec<f32>>,
    method: M,
    /// Expected (threshold, min column, max column).
    expected: (f64, f64, f64),
}

fn run(samples: &[Vec<f32>], methods: &[M]) -> Thresholds {
    let config = StatsConfig::with_methods(methods);
    let n = samples.len().max(1);
    let mut s = TensorStats::new("t", &config, PercentileSchedule::new(0, 1, n)).unwrap();
    for x in samples {
        s.observe(x).unwrap();
    }
    s.thresholds().unwrap()
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= HAND_COMPUTED_REL * a.abs().max(b.abs())
}

#[test]
fn methods_on_hand_computed_cases() {
    let c = 0.5 * 0.35 * (1.0 + (std::f64::consts::PI * 4f64.ln()).sqrt());
    let cases = vec![
        Case {
            name: "max: all negative",
            samples: vec![vec![-3.0, -1.0], vec![-2.0, -0.5]],
            method: M::Max,
            expected: (3.0, -3.0, -0.5),
        },
        Case {
            name: "max: constant",
            samples: vec![vec![2.0; 4]],
            method: M::Max,
            expected: (2.0, 2.0, 2.0),
        },
        Case {
            name: "max: tiny range is raised to 1e-5",
            samples: vec![vec![1e-7, -2e-7]],
            method: M::Max,
            expected: (1e-5, -1e-5, 1e-5),
        },
        Case {
            name: "max: all zero",
            samples: vec![vec![0.0; 3]],
            method: M::Max,
            expected: (1e-5, 0.0, 1e-5),
        },
        Case {
            name: "max: NaN elements ignored",
            samples: vec![vec![1.0, f32::NAN, -4.0]],
            method: M::Max,
            expected: (4.0, -4.0, 1.0),
        },
        Case {
            // |x| = 1,2,3,4, min = 1 -> unsigned = 1, f = 4^-8/3.
            // s0 = 2.5; above {3,4}: s1 = 7/(2f + 2) ~ 3.5 - eps;
            // above {4}: s2 = 4/(3f+1); s3 = s2 (same sets) -> stop, keep s2.
            name: "mse: by hand",
            samples: vec![vec![1.0, 2.0, 3.0, 4.0]],
            method: M::Mse,
            expected: (4.0 / (3.0 / 65536.0 / 3.0 + 1.0), 1.0, 4.0),
        },
        Case {
            name: "mse: mean over samples, clipped",
            samples: vec![vec![0.0, 0.0], vec![0.5, 0.5]],
            method: M::Mse,
            // sample 1: no non-zero -> 1.0; sample 2: s0 = .5, nothing above
            // -> 0 -> ... iterate: s=0 -> above both: 1/(0+2)=.5 ... converges to .5
            // mean (1.0 + x)/2 > abs-max .5 -> clipped to .5
            expected: (0.5, 0.0, 0.5),
        },
        Case {
            name: "aciq_gauss: by hand",
            samples: vec![{
                let mut v = vec![0.0f32; 10000];
                v[0] = -1.0;
                v[1] = 1.0;
                v
            }],
            method: M::AciqGauss,
            expected: (
                3.92403337 * 2.0 * c / (2.0 * 10000f64.ln()).sqrt(),
                -1.0,
                1.0,
            ),
        },
        Case {
            name: "aciq_laplace: by hand, clipped",
            samples: vec![vec![-1.0, 1.0]],
            method: M::AciqLaplace,
            // b = 1, 9.89 * 1 > abs-max 1
            expected: (1.0, -1.0, 1.0),
        },
        Case {
            name: "aciq_laplace: constant gives zero -> 1e-5",
            samples: vec![vec![3.0; 5]],
            method: M::AciqLaplace,
            expected: (1e-5, 3.0, 3.0),
        },
        Case {
            // N=1, size=4: R = int(4*1e-4)+1 = 1 -> v_max = max, v_min = min.
            name: "percentile: R = 1 is the max",
            samples: vec![vec![-2.0, 1.0, 0.5, 3.0]],
            method: M::Percentile9999,
            expected: (3.0, -2.0, 3.0),
        },
        Case {
            name: "kl: all zero gives 1.0",
            samples: vec![vec![0.0; 8]],
            method: M::Kl,
            expected: (1.0, 0.0, 1e-5),
        },
        Case {
            // One value: histogram has it in the last bin; everything is in
            // the tail of every candidate, the full range wins, clipped.
            name: "kl: constant",
            samples: vec![vec![2.0; 16]],
            method: M::Kl,
            expected: (2.0, 2.0, 2.0),
        },
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let t = run(&case.samples, &[case.method]);
        let got = t.table_row(case.method).unwrap();
        let (e0, e1, e2) = case.expected;
        if !(close(got.0, e0) && close(got.1, e1) && close(got.2, e2)) {
            failures.push(format!(
                "{}: got {got:?}, expected {:?}",
                case.name, case.expected
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn empty_sample_is_an_error() {
    let config = StatsConfig::default();
    let mut s = TensorStats::new("conv1", &config, PercentileSchedule::new(0, 1, 1)).unwrap();
    let e = s.observe(&[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor `conv1`: empty sample (0 elements) cannot be observed"
    );
    assert!(s.thresholds().is_err());
}

#[test]
fn zero_threshold_warning_is_returned() {
    let t = run(&[vec![0.0; 4]], &[M::Mse]);
    assert_eq!(t.mse, Some(1e-5));
    assert!(t.warnings.iter().any(
        |w| w == "WARNING: layer t threshold is zero. Please check the input data correctness."
    ));
}

#[test]
fn method_names_parse_like_run_calibration() {
    assert_eq!(M::parse("use_KL"), Some(M::Kl));
    assert_eq!(M::parse("percentile9999"), Some(M::Percentile9999));
    assert_eq!(M::parse("use_aciq_gauss"), Some(M::AciqGauss));
    assert_eq!(M::parse("bogus"), None);
}

/// The vectorised sample summary keeps the running min/max of a sequential
/// `f32::min`/`f32::max` fold bit for bit, zeros of both signs and NaN
/// included.
#[test]
fn summary_min_max_equal_sequential_fold() {
    use crate::SampleSummary;
    let samples: Vec<Vec<f32>> = vec![
        (0..37u8).map(|i| f32::from(i) * 0.25 + 0.5).collect(),
        vec![0.0; 40],
        (0..40u8)
            .map(|i| if i % 3 == 0 { -0.0 } else { f32::from(i) })
            .collect(),
        (0..33u8)
            .map(|i| match i % 4 {
                0 => 0.0,
                1 => -0.0,
                2 => f32::NAN,
                _ => f32::from(i),
            })
            .collect(),
        vec![f32::NAN; 17],
        (0..50u8).map(|i| -f32::from(i) - 1.0).collect(),
        (0..19u8)
            .map(|i| if i % 2 == 0 { -0.0 } else { -f32::from(i) })
            .collect(),
    ];
    let config = StatsConfig::with_methods(&[M::Max, M::Kl]);
    let n = samples.len();
    let mut full = TensorStats::new("t", &config, PercentileSchedule::new(0, 1, n)).unwrap();
    let (mut mn, mut mx) = (f32::INFINITY, f32::NEG_INFINITY);
    for x in &samples {
        for &v in x {
            mn = mn.min(v);
            mx = mx.max(v);
        }
        full.observe(x).unwrap();
        assert_eq!(full.min().to_bits(), mn.to_bits());
        assert_eq!(full.max().to_bits(), mx.to_bits());
        // The summary alone agrees too, but for the sign of a zero tie.
        let summary = SampleSummary::of(x);
        if x.iter().any(|v| !v.is_nan()) {
            let (smn, smx) = x
                .iter()
                .filter(|v| !v.is_nan())
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            assert_eq!(summary.abs_max(), smn.abs().max(smx.abs()));
        } else {
            assert_eq!(summary.abs_max(), 0.0);
        }
    }
}

/// `mean_range`: the min/max columns become the means of the per-sample
/// min and max (hand computed here), for a histogram method and for the
/// percentile row alike; the thresholds stay the method's; a split pass
/// merged back equals the sequential one; a near-zero tensor keeps the
/// near-zero rule's range; a sample of NaNs only does not count.
#[test]
fn mean_range_columns_are_the_mean_of_per_sample_extremes() {
    let samples = vec![
        vec![-1.0, 2.0, 0.5],
        vec![-4.0, 1.0, f32::NAN],
        vec![f32::NAN, f32::NAN, f32::NAN],
        vec![0.25, 3.0, 0.5],
    ];
    let mut config = StatsConfig::with_methods(&[M::Max, M::Kl, M::Percentile9999]);
    config.mean_range = true;
    let schedule = PercentileSchedule::new(0, 1, samples.len());
    let mut seq = TensorStats::new("t", &config, schedule).unwrap();
    for x in &samples {
        seq.observe(x).unwrap();
    }
    let t = seq.thresholds().unwrap();
    // Per-sample (min, max) of the three samples with numbers.
    let (lo, hi) = ((-1.0 - 4.0 + 0.25) / 3.0, (2.0 + 1.0 + 3.0) / 3.0);
    assert_eq!(t.mean_range, Some((lo, hi)));
    let plain = run(&samples, &[M::Max, M::Kl, M::Percentile9999]);
    assert_eq!(plain.mean_range, None);
    // The range of a row whose threshold comes from elsewhere (the torch
    // observer's) follows the same choice.
    assert_eq!(t.range(), (lo, hi));
    assert_eq!(plain.range(), (-4.0, 3.0));
    for m in [M::Max, M::Kl, M::Percentile9999] {
        let (th, a, b) = t.table_row(m).unwrap();
        assert_eq!((a, b), (lo, hi), "{m}");
        assert_eq!(
            th,
            plain.table_row(m).unwrap().0,
            "{m}: threshold unchanged"
        );
    }
    // Split after the second sample, merged: the same sums.
    let mut a = TensorStats::new("t", &config, schedule).unwrap();
    for x in &samples[..2] {
        a.observe(x).unwrap();
    }
    let mut b = a.fork();
    for x in &samples[2..] {
        b.observe(x).unwrap();
    }
    let merged = TensorStats::merge(a, b).unwrap().thresholds().unwrap();
    assert_eq!(merged.mean_range, t.mean_range);
    // Near zero: the near-zero rule's range, no mean.
    let mut z = TensorStats::new("z", &config, PercentileSchedule::new(0, 1, 1)).unwrap();
    z.observe(&[1e-7, -1e-7]).unwrap();
    let zt = z.thresholds().unwrap();
    assert_eq!(zt.mean_range, None);
    assert_eq!(zt.table_row(M::Max).unwrap(), (1e-5, -1e-5, 1e-5));
}
