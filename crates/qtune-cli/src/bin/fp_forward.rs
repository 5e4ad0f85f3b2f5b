//! TPU-MLIR's `fp_forward` under its own name; see `qtune fp-forward --help`.

fn main() -> std::process::ExitCode {
    qtune_cli::main_with(|a: qtune_cli::commands::fp_forward::ToolArgs| {
        qtune_cli::commands::fp_forward::run(a.args)
    })
}
