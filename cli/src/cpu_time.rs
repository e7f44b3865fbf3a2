//! CPU time as Linux accounts it in `/proc`, for `whctl bench`: how much processor time the server
//! and the benchmark itself spent on the measured webhooks, and how much the hypervisor took away.
//!
//! Rates on a shared two-core machine move by a quarter from one run to the next; CPU time per
//! webhook moves far less, so it is the figure to compare two builds by. Elsewhere than Linux every
//! reading is `None` and the report leaves the figures out.

use std::time::Duration;

/// `/proc` counts CPU time in clock ticks of `USER_HZ`, which Linux fixes at 100 per second for user
/// space on every architecture it reports to (the kernel's own tick rate is hidden behind it).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of the counters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSnapshot {
    /// User and system time of this process, all threads, those that ended included.
    own: Option<Duration>,
    /// The same for the server this run started.
    server: Option<Duration>,
    /// Time the hypervisor ran something else while this machine's CPUs wanted to run (`steal`).
    steal: Option<Duration>,
}

/// What happened between two readings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSpent {
    pub own: Option<Duration>,
    pub server: Option<Duration>,
    pub steal: Option<Duration>,
}

impl CpuSnapshot {
    /// Reads the counters of this process, of `server_pid` if given, and of the machine.
    pub(crate) fn now(server_pid: Option<u32>) -> Self {
        CpuSnapshot {
            own: process_time("self"),
            server: server_pid.and_then(|pid| process_time(&pid.to_string())),
            steal: machine_steal(),
        }
    }

    /// The CPU time spent from `self` to `later`.
    pub(crate) fn until(&self, later: &CpuSnapshot) -> CpuSpent {
        let since = |from: Option<Duration>, to: Option<Duration>| Some(to?.saturating_sub(from?));
        CpuSpent {
            own: since(self.own, later.own),
            server: since(self.server, later.server),
            steal: since(self.steal, later.steal),
        }
    }
}

/// utime + stime of `/proc/<pid>/stat`.
fn process_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_process_stat(&stat)
}

fn parse_process_stat(stat: &str) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may itself hold spaces and parentheses, so
    // fields are counted from the last `)`: state is field 3, utime field 14, stime field 15.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(ticks(utime + stime))
}

/// The steal column of the `cpu` line of `/proc/stat`, summed over all CPUs.
fn machine_steal() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_steal(&stat)
}

fn parse_machine_steal(stat: &str) -> Option<Duration> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    // cpu user nice system idle iowait irq softirq steal …
    let steal: u64 = line.split_whitespace().nth(8)?.parse().ok()?;
    Some(ticks(steal))
}

fn ticks(count: u64) -> Duration {
    Duration::from_secs_f64(count as f64 / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_time_is_user_plus_system_counted_after_the_command_name() {
        // A command name with a space and a parenthesis must not shift the fields.
        let stat = "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 9 0 12345 104857600 2048 18446744073709551615";
        assert_eq!(parse_process_stat(stat), Some(Duration::from_millis(3250)));
    }

    #[test]
    fn steal_is_the_eighth_column_of_the_cpu_line() {
        let stat = "cpu  109052 0 8569 226100 482 0 145 2394 0 0\n\
                    cpu0 54000 0 4000 113000 240 0 70 1200 0 0\n";
        assert_eq!(
            parse_machine_steal(stat),
            Some(Duration::from_secs_f64(23.94))
        );
    }

    #[test]
    fn this_process_has_spent_some_cpu_time_on_linux() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let start = CpuSnapshot::now(Some(std::process::id()));
        // Enough work to cross at least one 10 ms tick.
        let mut sum = 0u64;
        let give_up = std::time::Instant::now() + Duration::from_secs(2);
        while start.until(&CpuSnapshot::now(None)).own == Some(Duration::ZERO)
            && std::time::Instant::now() < give_up
        {
            for i in 0..100_000u64 {
                sum = sum.wrapping_add(i * i);
            }
        }
        std::hint::black_box(sum);
        let spent = start.until(&CpuSnapshot::now(Some(std::process::id())));
        assert!(spent.own.unwrap() > Duration::ZERO);
        assert!(spent.server.unwrap() > Duration::ZERO);
        assert!(spent.steal.is_some());
    }
}
