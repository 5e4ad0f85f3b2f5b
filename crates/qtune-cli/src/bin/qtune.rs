fn main() -> std::process::ExitCode {
    qtune_cli::qtune_main()
}
