//! Cores of their own for the shop and the load generator.
//!
//! On one machine the two compete for the same cores, and a shop slowed
//! by its own load generator is not what a deployment sees (the attackers
//! run elsewhere). With two cores or more, the harness keeps the first half
//! of the cores it may use for the shop and the rest for itself; `--shared-cores`
//! turns this off. Linux only: elsewhere both share every core.

/// The cores this process may run on, lowest first; empty when unknown.
#[cfg(target_os = "linux")]
pub fn allowed() -> Vec<usize> {
    // SAFETY: `set` is a plain bit set the call fills in; its size is
    // passed along.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

#[cfg(not(target_os = "linux"))]
pub fn allowed() -> Vec<usize> {
    Vec::new()
}

/// Keeps the calling thread, and every thread it starts afterwards, on
/// `cpus`.
#[cfg(target_os = "linux")]
pub fn pin(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: as in `allowed`; `CPU_SET` is given indices below
    // `CPU_SETSIZE` only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub fn pin(_cpus: &[usize]) -> std::io::Result<()> {
    Err(std::io::Error::other("pinning to cores needs Linux"))
}

/// `cpus` split into the shop's (the first half, rounded up) and the load
/// generator's; `None` with fewer than two.
pub fn split(cpus: &[usize]) -> Option<(Vec<usize>, Vec<usize>)> {
    if cpus.len() < 2 {
        return None;
    }
    let (shop, generator) = cpus.split_at(cpus.len().div_ceil(2));
    Some((shop.to_vec(), generator.to_vec()))
}

/// `0,1,2` for the shop's command line and the header line.
pub fn list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads a [`list`]; `None` if any entry is not a core number.
pub fn parse(list: &str) -> Option<Vec<usize>> {
    list.split(',').map(|c| c.trim().parse().ok()).collect()
}
