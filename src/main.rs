fn main() -> std::process::ExitCode {
    roipd::cli::main()
}
