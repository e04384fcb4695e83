//! The `witness` binary: parse the command line, run the subcommand, exit with its code.

fn main() -> std::process::ExitCode {
    keep_large_blocks_out_of_the_heap();
    witness::cli::main()
}

/// glibc serves a block of 128 KiB or more from a mapping of its own, returned to the system
/// when freed, but each such block freed raises that threshold to its size (up to 32 MiB).
/// A node makes multi-megabyte blocks now and then (a snapshot, a status document, a metrics
/// page with a thousand groups): after the first, the next ones come from the heap, where
/// what they leave stays resident. At 1,000 groups that was about a sixth of the leader's
/// resident memory (`scripts/bench-scale --groups 1000`: 105 MB, 90 MB with the threshold
/// fixed at 1 MiB). Not lower: at 128 KiB the same 90 MB, but the blocks of a mass failover's
/// tick and of a snapshot, mapped afresh each time, made them up to twice as slow (`witness
/// bench engine`). Set before any thread starts, as mallopt(3) asks.
fn keep_large_blocks_out_of_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt(3) only changes the allocator's parameters; no thread runs yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}
