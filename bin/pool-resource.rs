//! The image's one binary, hard-linked as `/opt/resource/{check,in,out,pool}`:
//! see [`pool_resource::cli::multicall_main`].

fn main() -> std::process::ExitCode {
    pool_resource::cli::multicall_main()
}
