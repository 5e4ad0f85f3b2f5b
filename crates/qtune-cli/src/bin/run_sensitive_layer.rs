//! TPU-MLIR's `run_sensitive_layer` under its own name; see `qtune run_sensitive_layer --help`.

fn main() -> std::process::ExitCode {
    qtune_cli::main_with(|a: qtune_cli::commands::search::SensitiveTool| {
        qtune_cli::commands::search::run_sensitive_layer(a.args)
    })
}
