//! glibc malloc tuning for the binary (the library leaves the allocator alone).

/// Malloc arenas glibc may create, unless `MALLOC_ARENA_MAX` says otherwise. By default a
/// thread that finds the arenas busy takes one of its own, up to eight per core, and
/// memory freed into one is not reused by the others: in the soak (`BENCHMARKS.md`) RSS
/// kept rising after its first minutes (with two arenas too), and levelled off with one,
/// at no measurable cost in throughput: the exporter waits on its database far more than
/// on malloc's lock.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: libc::c_int = 1;

/// How often freed heap pages go back to the system. On its own glibc gives back only
/// the top of its heap, past a threshold: every soak (`BENCHMARKS.md`) had one step of
/// 1.1 MiB late in its run that never came down, and none with this trim. A trim walks
/// the free chunks under malloc's lock: 0.04–1.1 ms under the mixed workload.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Sets up glibc's allocator before the runtime starts any thread.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: `mallopt` sets one of glibc's malloc tunables; it is called before the
        // runtime starts any other thread.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) };
    }
    let trimmer = std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(|| loop {
            std::thread::sleep(TRIM_EVERY);
            // SAFETY: `malloc_trim` only releases free memory; it takes malloc's own lock.
            unsafe { libc::malloc_trim(0) };
        });
    if let Err(e) = trimmer {
        eprintln!("messaging-exporter: freed memory will not be trimmed: {e}");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}
