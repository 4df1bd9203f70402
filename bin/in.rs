//! `/opt/resource/in`: see [`pool_resource::cli`].

fn main() -> std::process::ExitCode {
    pool_resource::cli::main(pool_resource::cli::Command::In)
}
