//! `/opt/resource/pool`, the operator controls: see [`pool_resource::operator::cli`].

fn main() -> std::process::ExitCode {
    pool_resource::operator::cli::main()
}
