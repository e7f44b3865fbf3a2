//! The `whd` server binary.

// Every webhook passes through many short-lived buffers (request bodies, rows, log entries) on
// several threads at once; glibc's allocator showed up at ~15% of the server's profile, mimalloc's
// per-thread free lists make that a small fraction.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    whd_server::main_entry()
}
