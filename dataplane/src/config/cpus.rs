//! Which CPUs the cores run on.

use super::{invalid, ConfigError, Cores};

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `set` is a plain bitmask, zeroed before use; sched_getaffinity
    // writes at most size_of::<cpu_set_t>() bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

pub(super) fn cpus(cores: &Cores) -> Result<Vec<usize>, ConfigError> {
    let allowed = allowed_cpus();
    let cpus: Vec<usize> = match cores {
        Cores::Count(0) => return Err(invalid("cores must be at least 1")),
        Cores::Count(n) if *n > allowed.len() => {
            return Err(invalid(format!(
                "cores = {n}, but this process may only run on {} CPUs ({allowed:?})",
                allowed.len()
            )))
        }
        Cores::Count(n) => allowed[..*n].to_vec(),
        Cores::List(list) => list.clone(),
    };
    if cpus.is_empty() {
        return Err(invalid("cores must name at least one CPU"));
    }
    for (i, c) in cpus.iter().enumerate() {
        if !allowed.contains(c) {
            return Err(invalid(format!(
                "cores: CPU {c} is not available to this process ({allowed:?})"
            )));
        }
        if cpus[..i].contains(c) {
            return Err(invalid(format!("cores: CPU {c} is listed twice")));
        }
    }
    Ok(cpus)
}
