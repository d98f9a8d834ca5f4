//! The standard `process_*` metrics of Prometheus' client libraries (CPU, memory, file
//! descriptors, threads, start time), read at each scrape by the `metrics-process` crate:
//! from `/proc/self` on Linux, from the system's own calls on macOS and Windows. A value
//! the platform does not give, and a limit that is not set, is left out rather than
//! reported as zero.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = metrics_process::collector::collect();
        if let Some(seconds) = m.cpu_seconds_total {
            let cpu = ConstCounter::new(seconds);
            let help = "Total user and system CPU time spent in seconds.";
            let unit = Some(&Unit::Seconds);
            cpu.encode(encoder.encode_descriptor("process_cpu", help, unit, cpu.metric_type())?)?;
        }
        let gauges = [
            (
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(Unit::Bytes),
                m.resident_memory_bytes,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes.",
                Some(Unit::Bytes),
                m.virtual_memory_bytes,
            ),
            (
                "process_virtual_memory_max",
                "Maximum amount of virtual memory available in bytes.",
                Some(Unit::Bytes),
                m.virtual_memory_max_bytes.filter(is_set),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                m.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                m.max_fds.filter(is_set),
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                None,
                m.threads,
            ),
            (
                "process_start_time",
                "Start time of the process since the Unix epoch in seconds.",
                Some(Unit::Seconds),
                m.start_time_seconds,
            ),
        ];
        for (name, help, unit, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(value);
            let metric =
                encoder.encode_descriptor(name, help, unit.as_ref(), gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// The crate reports a resource limit that is not set as 0.
fn is_set(limit: &u64) -> bool {
    *limit != 0
}
