//! The disk's own commit latency, measured beside each scenario. A webhook is answered
//! only once its batch's commit is on disk, so no webhook can be faster than the flush
//! that commit waits for: when the disk takes 200 ms for one `fdatasync`, every request
//! in flight takes as long, whatever the exporter does. The probe shows such a flush in
//! the same window as the latency it explains.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::report::Lat;
use crate::runner::new_histogram;

/// One WAL page, rewritten in place as Postgres rewrites its recycled segments.
const PAGE: [u8; 8192] = [0x5a; 8192];

/// Often enough to catch a stall of a tenth of a second, rarely enough to add no load
/// worth measuring (a busy exporter commits hundreds of times a second).
pub const EVERY: Duration = Duration::from_millis(100);

/// A thread writing and `fdatasync`ing one 8 kB page every [`EVERY`] until finished.
pub struct FsyncProbe {
    /// Dropped to stop the probe: it wakes at once rather than at its next flush.
    stop: Sender<()>,
    thread: JoinHandle<io::Result<Histogram<u64>>>,
    path: PathBuf,
}

impl FsyncProbe {
    /// Starts probing with a file in `dir` (put it on the database's disk).
    pub fn start(dir: &Path) -> io::Result<Self> {
        let path = dir.join(format!("fsync-probe-{}", std::process::id()));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        // The first flush allocates the page's block: not what a recycled segment costs,
        // so it is done here, untimed.
        write_and_flush(&file)?;
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("fsync-probe".into())
            .spawn(move || probe(&file, &stopped))?;
        Ok(Self { stop, thread, path })
    }

    /// Stops the probe; the flushes it timed (at least one).
    pub fn finish(self) -> io::Result<Lat> {
        drop(self.stop);
        let timed = self
            .thread
            .join()
            .map_err(|_| io::Error::other("the fsync probe panicked"))?;
        let _ = std::fs::remove_file(&self.path);
        Ok(Lat::of(&timed?))
    }
}

/// Times one flush at once, then one every [`EVERY`] until stopped: a probe stopped at
/// once has still timed one.
fn probe(file: &File, stopped: &Receiver<()>) -> io::Result<Histogram<u64>> {
    let mut hist = new_histogram();
    loop {
        let t0 = Instant::now();
        write_and_flush(file)?;
        let _ = hist.record((t0.elapsed().as_micros() as u64).max(1));
        if stopped.recv_timeout(EVERY) != Err(RecvTimeoutError::Timeout) {
            return Ok(hist);
        }
    }
}

fn write_and_flush(file: &File) -> io::Result<()> {
    file.write_all_at(&PAGE, 0)?;
    file.sync_data()
}

/// Whether `a` and `b` are on one device (`None` when either cannot be read).
pub fn same_device(a: &Path, b: &Path) -> Option<bool> {
    Some(std::fs::metadata(a).ok()?.dev() == std::fs::metadata(b).ok()?.dev())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_times_its_flushes_and_leaves_no_file() {
        let dir = std::env::temp_dir().join(format!("loadgen-probe-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Stopped at once, however slow the disk: the probe has timed one flush.
        let lat = FsyncProbe::start(&dir).unwrap().finish().unwrap();
        assert!(lat.max > 0.0 && lat.p50 <= lat.max, "{lat:?}");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "the probe file stays"
        );
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_directory_is_on_its_own_device_and_a_missing_one_is_unknown() {
        let tmp = std::env::temp_dir();
        assert_eq!(same_device(&tmp, &tmp), Some(true));
        assert_eq!(same_device(&tmp, Path::new("/no/such/dir")), None);
    }
}
