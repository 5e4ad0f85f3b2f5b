//! TPU-MLIR's `model_transform` under its own name; see `qtune transform --help`.

fn main() -> std::process::ExitCode {
    qtune_cli::main_with(|a: qtune_cli::commands::transform::ToolArgs| {
        qtune_cli::commands::transform::run(a.args)
    })
}
