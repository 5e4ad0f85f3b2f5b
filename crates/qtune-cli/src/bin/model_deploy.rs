//! TPU-MLIR's `model_deploy` under its own name; see `qtune deploy --help`.

fn main() -> std::process::ExitCode {
    qtune_cli::main_with(|a: qtune_cli::commands::deploy::ToolArgs| {
        qtune_cli::commands::deploy::run(a.args)
    })
}
