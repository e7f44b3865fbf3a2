//! The `whctl` binary: parses the command line and hands it to [`whctl::main_entry`].

use std::process::ExitCode;

use clap::Parser;

// `whctl bench` runs a load generator and a receiver in this process, next to the server it measures;
// a faster allocator leaves more of the machine to the server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    whctl::main_entry(whctl::Cli::parse())
}
