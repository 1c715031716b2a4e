//! Host CPU affinity: vCPU threads on their CPU, everything else of oslet on the
//! partition's housekeeping CPUs (`[host] housekeeping_cpus`).

/// A kernel CPU set holding `cpus` (ids past the set's 1024 are left out; no host
/// oslet plans for has them).
pub fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        if cpu < 8 * std::mem::size_of::<libc::cpu_set_t>() {
            // SAFETY: CPU_SET writes one bit inside `set`, checked to be in range above.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
    }
    set
}

/// Pins the calling thread to `set`. Only a system call, so it may also run in a
/// forked child before exec.
pub fn pin_current(set: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 means the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Pins the calling thread (and so the threads and processes it starts later) to the
/// housekeeping CPUs; an empty list leaves it alone.
pub fn pin_housekeeping(cpus: &[usize]) -> std::io::Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    pin_current(&cpu_set(cpus))
}

/// The calling thread's CPU set.
pub fn current() -> std::io::Result<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a writable cpu_set_t of the size passed; 0 means this thread.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r == 0 {
        Ok(set)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Moves the threads KVM made in this process (`kvm-nx-lpage-recovery`, started by
/// the kernel from the first vCPU thread and so on that vCPU's CPU) to `set`. Best
/// effort: a thread that ends meanwhile, or refuses, is left as it is.
pub fn move_kvm_workers(set: &libc::cpu_set_t) {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for t in tasks.flatten() {
        let is_kvm =
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("kvm-"));
        let tid = t
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<libc::pid_t>().ok());
        let (true, Some(tid)) = (is_kvm, tid) else {
            continue;
        };
        // SAFETY: sched_setaffinity on a thread id of this process, with a valid
        // cpu_set_t of the size passed; a thread gone meanwhile gives ESRCH.
        unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), set) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_holds_the_cpus_given_and_skips_ids_past_its_size() {
        let set = cpu_set(&[0, 3, 1 << 20]);
        // SAFETY: CPU_ISSET reads bits inside `set`.
        let has = |c| unsafe { libc::CPU_ISSET(c, &set) };
        assert!(has(0) && has(3) && !has(1) && !has(2));
        // SAFETY: CPU_COUNT reads `set`.
        assert_eq!(unsafe { libc::CPU_COUNT(&set) }, 2);
    }
}
