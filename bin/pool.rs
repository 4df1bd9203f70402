//! `/opt/resource/pool`, the operator controls: see [`pool_resource::pool_cli`].

fn main() -> std::process::ExitCode {
    pool_resource::pool_cli::main()
}
