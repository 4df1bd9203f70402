//! `/opt/resource/in`: see [`pool_resource::resource::run`].

fn main() -> std::process::ExitCode {
    pool_resource::resource::run::main(pool_resource::resource::run::Command::In)
}
