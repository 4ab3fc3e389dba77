//! What the benchmark reads from `/proc`: a process's CPU time and peak memory, the CPU time of every process of
//! a local PostgreSQL cluster, the machine's load average, and what keeps the machine busy before a run.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/*/stat` (USER_HZ, 100 on Linux).
const HZ: f64 = 100.0;

/// Fields of `/proc/PID/stat` after the command name: (ppid, utime+stime, cutime+cstime), in seconds.
fn stat(pid: u32) -> Option<(u32, f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, utime 14, stime 15, cutime 16, cstime 17
    let n = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    Some((n(4)? as u32, (n(14)? + n(15)?) / HZ, (n(16)? + n(17)?) / HZ))
}

/// CPU seconds (user + system) a live process has used.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat(pid).map(|(_, own, _)| own)
}

/// Peak resident set size (VmHWM) of a live process, in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU seconds used by a PostgreSQL cluster: its postmaster (including the children it has reaped, i.e. every
/// backend and worker that has exited) plus its live children. `None` when the postmaster is not a local process.
pub fn cluster_cpu_seconds(postmaster: u32) -> Option<f64> {
    let (_, own, reaped) = stat(postmaster)?;
    let mut total = own + reaped;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if let Some((ppid, cpu, _)) = stat(pid)
            && ppid == postmaster
        {
            total += cpu;
        }
    }
    Some(total)
}

/// The postmaster's pid, from `postmaster.pid` in the cluster's data directory (when readable from here).
pub fn postmaster_pid(data_directory: &Path) -> Option<u32> {
    let s = std::fs::read_to_string(data_directory.join("postmaster.pid")).ok()?;
    let pid: u32 = s.lines().next()?.trim().parse().ok()?;
    stat(pid).map(|_| pid)
}

/// The 1-minute load average and the `uptime`-style triple.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU seconds of every live process, by pid, with its command name.
fn processes() -> HashMap<u32, (String, f64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if let Some((_, cpu, _)) = stat(pid) {
            out.insert(pid, (name.trim().to_string(), cpu));
        }
    }
    out
}

/// What used the CPUs while nothing of the benchmark ran.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Idle {
    /// CPU used by all processes over the window, in CPUs (2.0 = two CPUs fully busy).
    pub busy_cpus: f64,
    /// The busiest process: its command name, pid and CPUs.
    pub top: Option<(String, u32, f64)>,
}

/// Measures, over `window`, how busy the machine is while the benchmark itself does nothing (a broker stuck in
/// a loop, a build, another benchmark all skew every figure).
pub async fn idle(window: Duration) -> Idle {
    let before = processes();
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let after = processes();
    let seconds = started.elapsed().as_secs_f64();
    let mut busy = 0.0;
    let mut top: Option<(String, u32, f64)> = None;
    for (pid, (name, cpu)) in after {
        let used = (cpu - before.get(&pid).map_or(0.0, |(_, c)| *c)).max(0.0) / seconds;
        busy += used;
        if top.as_ref().is_none_or(|(_, _, t)| used > *t) {
            top = Some((name, pid, used));
        }
    }
    Idle { busy_cpus: busy, top }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(peak_rss_mib(me).unwrap() > 0.0);
        assert!(cluster_cpu_seconds(me).is_some());
        assert!(!load_average().is_empty());
    }
}
