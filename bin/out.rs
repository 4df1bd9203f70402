//! `/opt/resource/out`: see [`pool_resource::resource::run`].

fn main() -> std::process::ExitCode {
    pool_resource::resource::run::main(pool_resource::resource::run::Command::Out)
}
