//! The `toolhost` binary.

fn main() -> std::process::ExitCode {
    toolhost::cli::main()
}
