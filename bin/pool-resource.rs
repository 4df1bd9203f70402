//! The image's one binary, hard-linked as `/opt/resource/{check,in,out,pool}`:
//! one copy of the code instead of four. The name it was run by picks the
//! executable.

use std::path::Path;
use std::process::ExitCode;

use pool_resource::process::log::Log;
use pool_resource::process::report::report;
use pool_resource::resource::run::Command;
use pool_resource::Error;

fn main() -> ExitCode {
    let program = std::env::args().next().unwrap_or_default();
    let name = Path::new(&program).file_name().and_then(|n| n.to_str());
    if name == Some("pool") {
        return pool_resource::operator::cli::main();
    }
    match Command::from_program_name(&program) {
        Some(command) => pool_resource::resource::run::main(command),
        None => {
            report(
                &Error::Usage(format!(
                    "run this program as check, in, out or pool (a link named so), not as {program:?}"
                )),
                &Log::stderr(),
            );
            ExitCode::FAILURE
        }
    }
}
