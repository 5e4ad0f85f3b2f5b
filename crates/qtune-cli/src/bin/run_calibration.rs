//! TPU-MLIR's `run_calibration` under its own name; see `qtune calibrate --help`.

fn main() -> std::process::ExitCode {
    qtune_cli::main_with(|a: qtune_cli::commands::calibrate::ToolArgs| {
        qtune_cli::commands::calibrate::run(a.args)
    })
}
