//! Counting off the async workers. prometheus-client encodes a family under its read
//! lock, and its lock is fair: while a scrape encodes 100k series, a request that adds a
//! series (a new template) waits for the write lock, and every request that counts into
//! that family queues behind it. Done on an async worker, that stalls the workers for the
//! rest of the family's encoding (the test below reproduces it; the 0.2 s webhook stall
//! once per run of scenario 5 on slower machines turned out to be the disk's flush, see
//! `BENCHMARKS.md`). One thread applies every tally (and every reported AI call, whose model
//! and intent values make new series) in order instead; only it waits.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::error;

use super::{AiObservation, Metrics};
use crate::domain::tally::Tally;

enum Op {
    Count(Tally),
    /// AI calls bring model, operation and intent values of their own: new series.
    Ai(AiObservation),
    /// Answered once every tally sent before it is counted.
    Settle(oneshot::Sender<()>),
}

/// How long the recorder sleeps between drains while tallies keep coming. Blocked in
/// `recv`, it costs each sender a futex call to wake it; asleep between drains, a send is
/// a push onto the queue. Measured in scenario 1 (22k webhooks/s): the exporter's CPU
/// 1–4 µs more per webhook than counting inline when woken for every tally, within the
/// runs' spread with this sleep.
const DRAIN_EVERY: Duration = Duration::from_millis(1);

fn apply(op: Op, metrics: &Metrics) {
    match op {
        Op::Count(tally) => metrics.record(&tally),
        Op::Ai(call) => metrics.record_ai(&call),
        Op::Settle(done) => {
            let _ = done.send(());
        }
    }
}

fn run(rx: &mpsc::Receiver<Op>, metrics: &Metrics) {
    // Blocks only once a drain found nothing; ends when every sender is gone.
    while let Ok(op) = rx.recv() {
        apply(op, metrics);
        loop {
            std::thread::sleep(DRAIN_EVERY);
            let mut drained = false;
            while let Ok(op) = rx.try_recv() {
                apply(op, metrics);
                drained = true;
            }
            if !drained {
                break;
            }
        }
    }
}

/// The sending side; cheap to clone. The thread ends when every clone is dropped.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Op>,
    metrics: Arc<Metrics>,
}

impl Recorder {
    pub fn start(metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel::<Op>();
        let counting = metrics.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-recorder".into())
            .spawn(move || run(&rx, &counting));
        if let Err(e) = spawned {
            error!(error = %e, "cannot start the metrics recorder thread; counting inline");
        }
        Self { tx, metrics }
    }

    /// Counts what a commit made countable. A reply sent after this call is covered by
    /// any scrape that starts after it (see [`Recorder::settled`]).
    pub fn record(&self, tally: Tally) {
        self.send(Op::Count(tally));
    }

    /// Counts a reported AI call, like [`Recorder::record`].
    pub fn record_ai(&self, call: AiObservation) {
        self.send(Op::Ai(call));
    }

    /// Waits until every tally recorded before this call is counted, so that a scrape
    /// shows all that was replied to before it began.
    pub async fn settled(&self) {
        let (done, counted) = oneshot::channel();
        self.send(Op::Settle(done));
        let _ = counted.await;
    }

    /// With the thread gone (it could not start, or panicked), `op` is applied here:
    /// slower under a scrape, but nothing is lost.
    fn send(&self, op: Op) {
        if let Err(mpsc::SendError(op)) = self.tx.send(op) {
            apply(op, &self.metrics);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::status::Status;
    use crate::domain::tally::OutboundCount;
    use crate::domain::{Channel, Provider};
    use crate::metrics::{AiLabels, LabelText};

    fn sent(template: &str) -> Tally {
        Tally {
            outbound: vec![OutboundCount {
                provider: Provider::Meta,
                channel: Channel::Whatsapp,
                status: Status::Sent,
                template: template.to_owned(),
                category: None,
            }],
            ..Tally::default()
        }
    }

    fn sent_count(metrics: &Metrics, template: &str) -> Option<String> {
        let label = format!("template=\"{template}\"");
        metrics
            .encode()
            .lines()
            .find(|l| l.starts_with("messaging_outbound_messages_total{") && l.contains(&label))
            .and_then(|l| l.rsplit(' ').next().map(str::to_owned))
    }

    /// What a scrape does to the family while it encodes: hold its read lock.
    fn hold_outbound_read_lock(metrics: &Metrics) -> impl Drop + '_ {
        metrics.outbound.hold_read_lock()
    }

    /// Runs `f` on another thread and says whether it returned within 5 s.
    fn returns_promptly(f: impl FnOnce() + Send + 'static) -> bool {
        let (returned, done) = mpsc::channel();
        std::thread::spawn(move || {
            f();
            let _ = returned.send(());
        });
        done.recv_timeout(Duration::from_secs(5)).is_ok()
    }

    #[tokio::test]
    async fn a_series_waiting_on_a_scrape_blocks_the_recorder_not_the_caller() {
        let metrics = Arc::new(Metrics::new(100, 1_000));
        let recorder = Recorder::start(metrics.clone());
        recorder.record(sent("known"));
        recorder.settled().await;

        let scrape = hold_outbound_read_lock(&metrics);
        // A new template needs the write lock: the recorder waits for the scrape. A caller
        // counting into the same family meanwhile returns at once (counting inline, it
        // would wait behind that writer under the fair lock).
        for template in ["new", "known"] {
            let (caller, tally) = (recorder.clone(), sent(template));
            assert!(
                returns_promptly(move || caller.record(tally)),
                "record() blocked while a scrape held the family"
            );
        }
        // Nothing recorded before `settled` is pending once it returns, so it waits too.
        let early = tokio::time::timeout(Duration::from_millis(100), recorder.settled()).await;
        assert!(
            early.is_err(),
            "settled() returned before the tallies were counted"
        );

        drop(scrape);
        recorder.settled().await;
        assert_eq!(sent_count(&metrics, "known").as_deref(), Some("2"));
        assert_eq!(sent_count(&metrics, "new").as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn an_ai_call_with_a_new_model_does_not_wait_for_a_scrape() {
        let metrics = Arc::new(Metrics::new(100, 1_000));
        let recorder = Recorder::start(metrics.clone());
        let scrape = metrics.ai_latency.family().get_or_create(&AiLabels {
            operation: LabelText("held".to_owned()),
            model: LabelText("held".to_owned()),
        });
        let caller = recorder.clone();
        let call = AiObservation {
            operation: "classify".to_owned(),
            model: "new-model".to_owned(),
            ok: true,
            seconds: 0.2,
            intent: None,
            input_tokens: 10,
            output_tokens: 0,
            cost: None,
        };
        assert!(
            returns_promptly(move || caller.record_ai(call)),
            "record_ai() blocked while a scrape held the family"
        );

        drop(scrape);
        recorder.settled().await;
        let text = metrics.encode();
        let counted = |prefix: &str, value: &str| {
            text.lines().any(|l| {
                l.starts_with(prefix)
                    && l.contains("model=\"new-model\"")
                    && l.rsplit(' ').next() == Some(value)
            })
        };
        assert!(counted("messaging_ai_requests_total{", "1"), "{text}");
        assert!(counted("messaging_ai_tokens_total{", "10"), "{text}");
    }

    #[tokio::test]
    async fn without_the_thread_tallies_are_counted_where_they_are_sent() {
        let metrics = Arc::new(Metrics::new(100, 1_000));
        let (tx, gone) = mpsc::channel();
        drop(gone);
        let recorder = Recorder {
            tx,
            metrics: metrics.clone(),
        };
        recorder.record(sent("known"));
        assert_eq!(sent_count(&metrics, "known").as_deref(), Some("1"));
        tokio::time::timeout(Duration::from_secs(5), recorder.settled())
            .await
            .expect("settled() waits for nothing once the thread is gone");
    }
}
