//! The `whd` server binary.

fn main() -> std::process::ExitCode {
    whd_server::main_entry()
}
