//! The `whctl` binary: parses the command line and hands it to [`whctl::main_entry`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    whctl::main_entry(whctl::Cli::parse())
}
