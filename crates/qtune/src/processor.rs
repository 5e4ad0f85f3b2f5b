//! The processors `--processor` names: the one list is
//! [`qtune_deploy::Processor::ALL`] (the profiles qtune simulates, with the
//! alias `qdq` for `onnxruntime`), plus the few chips TPU-MLIR accepts whose
//! quantization qtune does not simulate: plain calibration accepts those
//! (a calibration table does not depend on the chip), everything that
//! builds the quantized model refuses them.

use qtune_deploy::Processor;
use qtune_quant::QuantMode;

use crate::{Error, Result};

/// Chips TPU-MLIR's `run_calibration` accepts that have no profile here,
/// with the float mode of TPU-MLIR's `FLOAT_MAP` (spec 4.4; `sgtpuv8` is
/// missing from that map, a KeyError there, F16 here).
const CALIBRATION_ONLY: [(&str, QuantMode); 3] = [
    ("cv184x", QuantMode::BF16),
    ("sgtpuv8", QuantMode::F16),
    ("sg2262", QuantMode::F16),
];

/// Every name plain calibration accepts for `--processor`, in the order the
/// error message lists them.
pub fn processor_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Processor::ALL.iter().map(|p| p.name()).collect();
    names.push("qdq");
    names.extend(CALIBRATION_ONLY.iter().map(|(n, _)| *n));
    names
}

/// Checks a `--processor` name for calibration (any name of
/// [`processor_names`]).
pub fn check_processor(name: &str) -> Result<()> {
    if processor_names().contains(&name) {
        return Ok(());
    }
    Err(Error::setting(
        "processor",
        format!(
            "--processor `{name}`: expected one of {}",
            processor_names().join(", ")
        ),
    ))
}

/// The float mode of a processor's qtables (TPU-MLIR's `FLOAT_MAP`, spec
/// 4.4): the profile's `fp_type auto`, or the calibration-only chip's.
/// `None` for an unknown name.
pub fn float_mode(name: &str) -> Option<QuantMode> {
    if let Some(p) = Processor::parse(name) {
        return Some(p.profile().fp_auto);
    }
    CALIBRATION_ONLY
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, m)| *m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_modes_follow_tpu_mlir_float_map() {
        for (name, mode) in [
            ("bm1684", QuantMode::F32),
            ("cv183x", QuantMode::BF16),
            ("cv180x", QuantMode::BF16),
            ("cv184x", QuantMode::BF16),
            ("cv186x", QuantMode::F16),
            ("bm1684x", QuantMode::F16),
            ("bm1688", QuantMode::F16),
            ("sgtpuv8", QuantMode::F16),
            ("qdq", QuantMode::F32),
        ] {
            assert_eq!(float_mode(name), Some(mode), "{name}");
        }
        assert_eq!(float_mode("bm9999"), None);
        assert!(check_processor("bm1684x").is_ok());
        let e = check_processor("bm9999").unwrap_err();
        assert!(matches!(&e, Error::Setting { setting, .. } if setting == "processor"));
        assert!(e.message().contains("bm1684x, bm1684"), "{e}");
    }
}
