//! A process's CPU time and peak memory from Linux's /proc, for the
//! programs that measure a server: `demo/src` (the flood harness), and
//! `benches/http_bench.rs`, which includes this file with `#[path]`.
//! `NaN` where /proc cannot be read.

/// User + system CPU seconds of process `pid` ("self" for this one).
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name start at the state
    // (field 3); utime and stime are fields 14 and 15, in clock ticks
    // (100 a second on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// Peak resident memory (VmHWM) of process `pid`, in MiB.
#[allow(dead_code)] // http_bench measures CPU only
pub fn peak_rss_mib(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

/// File descriptors `pid` holds open now (0 if it cannot be read).
#[allow(dead_code)] // http_bench measures CPU only
pub fn open_fds(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}
