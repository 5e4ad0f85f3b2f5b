//! TPU-MLIR's `run_qtable` under its own name; see `qtune run_qtable --help`.

fn main() -> std::process::ExitCode {
    qtune_cli::main_with(|a: qtune_cli::commands::search::QtableTool| {
        qtune_cli::commands::search::run_qtable(a.args)
    })
}
