//! The `whd` server, built inside the test crate so that tests can run it as a child process.

fn main() -> std::process::ExitCode {
    whd_server::main_entry()
}
