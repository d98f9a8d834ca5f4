//! The closed-loop client: N workers, each with one keep-alive HTTP/1.1 connection,
//! take work items from a shared queue of pre-built requests until the queue or the time
//! runs out (or, paced, at a fixed rate), recording each request's latency in an HDR
//! histogram. What each item achieved is kept, so the exactly-once check knows exactly
//! what the exporter was sent and acknowledged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::payloads::RESERVATION_PLACEHOLDER;

/// What a request is, for per-kind latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Webhook,
    Hook,
    Check,
    Metrics,
    Health,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Hook => "send-hook",
            Kind::Check => "check-send",
            Kind::Metrics => "metrics",
            Kind::Health => "healthz",
        }
    }
}

/// One pre-built request.
#[derive(Clone, Debug)]
pub struct Req {
    pub kind: Kind,
    pub method: Method,
    pub path: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    /// The body holds [`RESERVATION_PLACEHOLDER`], to be replaced by the id the flow's
    /// check-send returned.
    pub needs_reservation: bool,
}

impl Req {
    pub fn get(kind: Kind, path: &'static str) -> Self {
        Self {
            kind,
            method: Method::GET,
            path,
            headers: Vec::new(),
            body: Bytes::new(),
            needs_reservation: false,
        }
    }

    pub fn post_json(kind: Kind, path: &'static str, body: Bytes) -> Self {
        Self {
            kind,
            method: Method::POST,
            path,
            headers: vec![("content-type", "application/json".into())],
            body,
            needs_reservation: false,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// A work item: requests sent one after the other on one connection (most items are a
/// single request; the bot's flow is check-send, send hook, three statuses).
#[derive(Clone, Debug)]
pub struct Item {
    pub steps: Vec<Req>,
}

/// How far an item got: the number of steps acknowledged with a 2xx, plus a flag.
pub const BLOCKED: u8 = 0x80;
pub const FAILED: u8 = 0x40;
pub const STEPS: u8 = 0x3f;

#[derive(Clone, Debug)]
pub struct RunOpts {
    pub concurrency: usize,
    pub duration: Duration,
    /// Items per second, for a paced (open-loop-ish) run; `None` runs flat out.
    pub rate: Option<f64>,
    /// Latency is also recorded per window of this length (the soak's minutes).
    pub window: Option<Duration>,
    /// Send the items over and over (the `/healthz` ceiling); item states are not kept.
    pub cycle: bool,
}

#[derive(Debug)]
pub struct RunResult {
    pub elapsed: Duration,
    pub requests: u64,
    pub errors: BTreeMap<String, u64>,
    /// Latency in microseconds, per kind and for all requests.
    pub by_kind: BTreeMap<Kind, Histogram<u64>>,
    pub all: Histogram<u64>,
    pub windows: Vec<Histogram<u64>>,
    /// Ran out of items before the time was up.
    pub exhausted: bool,
    /// Per item: steps done | BLOCKED | FAILED; 0 for items never started.
    pub states: Vec<u8>,
}

impl RunResult {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn items_done(&self) -> usize {
        self.states.iter().filter(|s| **s != 0).count()
    }
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { addr, sender })
    }

    /// Sends one request and reads the whole reply.
    pub async fn send(&mut self, req: &Req, body: Bytes) -> anyhow::Result<(StatusCode, Bytes)> {
        if self.sender.ready().await.is_err() {
            *self = Conn::open(self.addr).await?;
        }
        let mut b = Request::builder()
            .method(req.method.clone())
            .uri(req.path)
            .header(header::HOST, "127.0.0.1");
        for (k, v) in &req.headers {
            b = b.header(*k, v.as_str());
        }
        let request = b.body(Full::new(body))?;
        let resp = self.sender.send_request(request).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }
}

/// Sends a single request on a fresh connection (probes, set-up).
pub async fn once(addr: SocketAddr, req: &Req) -> anyhow::Result<(StatusCode, Bytes)> {
    Conn::open(addr).await?.send(req, req.body.clone()).await
}

struct Recorder {
    by_kind: BTreeMap<Kind, Histogram<u64>>,
    all: Histogram<u64>,
    windows: Vec<Histogram<u64>>,
    errors: BTreeMap<String, u64>,
    requests: u64,
}

impl Recorder {
    fn new() -> Self {
        Self {
            by_kind: BTreeMap::new(),
            all: new_histogram(),
            windows: Vec::new(),
            errors: BTreeMap::new(),
            requests: 0,
        }
    }

    fn record(&mut self, kind: Kind, micros: u64, window: Option<usize>) {
        let v = micros.max(1);
        self.requests += 1;
        let _ = self
            .by_kind
            .entry(kind)
            .or_insert_with(new_histogram)
            .record(v);
        let _ = self.all.record(v);
        if let Some(w) = window {
            while self.windows.len() <= w {
                self.windows.push(new_histogram());
            }
            let _ = self.windows[w].record(v);
        }
    }

    fn error(&mut self, what: String) {
        *self.errors.entry(what).or_default() += 1;
    }
}

/// What a check-send reply said, for the rest of the flow.
fn check_reply(body: &[u8]) -> (bool, Option<String>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (false, None);
    };
    let can_send = v["can_send"].as_bool().unwrap_or(false);
    let id = v["reservation"]["id"].as_str().map(str::to_owned);
    (can_send, id)
}

/// Runs `items` against `addr` and returns what happened.
pub async fn run(
    addr: SocketAddr,
    items: Arc<Vec<Item>>,
    opts: &RunOpts,
) -> anyhow::Result<RunResult> {
    let states: Arc<Vec<AtomicU8>> = Arc::new((0..items.len()).map(|_| AtomicU8::new(0)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let exhausted = Arc::new(AtomicBool::new(false));
    let mut conns = Vec::with_capacity(opts.concurrency);
    for _ in 0..opts.concurrency {
        conns.push(Conn::open(addr).await?);
    }
    let start = Instant::now();
    let deadline = start + opts.duration;
    let mut tasks = Vec::with_capacity(opts.concurrency);
    for mut conn in conns {
        let (items, states, next, exhausted) = (
            items.clone(),
            states.clone(),
            next.clone(),
            exhausted.clone(),
        );
        let (rate, window, cycle) = (opts.rate, opts.window, opts.cycle);
        tasks.push(tokio::spawn(async move {
            let mut rec = Recorder::new();
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                let i = if cycle { n % items.len() } else { n };
                if n >= items.len() && !cycle {
                    exhausted.store(true, Ordering::Relaxed);
                    break;
                }
                if let Some(rate) = rate {
                    let at = start + Duration::from_secs_f64(n as f64 / rate);
                    if at >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                }
                let mut reservation: Option<String> = None;
                let mut state = 0u8;
                for req in &items[i].steps {
                    let body = if req.needs_reservation {
                        let text = std::str::from_utf8(&req.body).unwrap_or_default();
                        Bytes::from(text.replace(
                            RESERVATION_PLACEHOLDER,
                            reservation.as_deref().unwrap_or_default(),
                        ))
                    } else {
                        req.body.clone()
                    };
                    let t0 = Instant::now();
                    let result = conn.send(req, body).await;
                    let micros = t0.elapsed().as_micros() as u64;
                    let w = window
                        .map(|w| (t0 - start).as_nanos() as usize / w.as_nanos().max(1) as usize);
                    match result {
                        Ok((status, body)) if status.is_success() => {
                            rec.record(req.kind, micros, w);
                            state += 1;
                            if req.kind == Kind::Check && items[i].steps.len() > 1 {
                                let (can_send, id) = check_reply(&body);
                                if !can_send {
                                    state |= BLOCKED;
                                    break;
                                }
                                reservation = id;
                            }
                        }
                        Ok((status, _)) => {
                            rec.record(req.kind, micros, w);
                            rec.error(format!("{} {}", req.kind.as_str(), status.as_u16()));
                            state |= FAILED;
                            break;
                        }
                        Err(e) => {
                            rec.error(format!("{} io: {e}", req.kind.as_str()));
                            state |= FAILED;
                            // The connection may be gone: open a new one.
                            if let Ok(c) = Conn::open(addr).await {
                                conn = c;
                            }
                            break;
                        }
                    }
                }
                // Mark items that got nowhere as failed, so 0 means "never started".
                states[i].store(if state == 0 { FAILED } else { state }, Ordering::Relaxed);
            }
            rec
        }));
    }
    let mut total = Recorder::new();
    for t in tasks {
        let rec = t.await?;
        total.requests += rec.requests;
        for (k, h) in rec.by_kind {
            total
                .by_kind
                .entry(k)
                .or_insert_with(new_histogram)
                .add(&h)
                .expect("same bounds");
        }
        total.all.add(&rec.all).expect("same bounds");
        for (i, h) in rec.windows.iter().enumerate() {
            while total.windows.len() <= i {
                total.windows.push(new_histogram());
            }
            total.windows[i].add(h).expect("same bounds");
        }
        for (k, n) in rec.errors {
            *total.errors.entry(k).or_default() += n;
        }
    }
    let elapsed = start.elapsed();
    Ok(RunResult {
        elapsed,
        requests: total.requests,
        errors: total.errors,
        by_kind: total.by_kind,
        all: total.all,
        windows: total.windows,
        exhausted: exhausted.load(Ordering::Relaxed),
        states: states.iter().map(|s| s.load(Ordering::Relaxed)).collect(),
    })
}

/// What the repeated requests of [`repeat`] saw.
#[derive(Debug)]
pub struct Repeated {
    pub hist: Histogram<u64>,
    pub sizes: Vec<usize>,
    pub last_body: Bytes,
    pub errors: u64,
}

/// [`repeat`] on a thread and runtime of its own, as Prometheus is a process of its own:
/// reading a 12 MiB reply is then not stretched by the generator's ingest workers.
pub async fn repeat_apart(
    addr: SocketAddr,
    req: Req,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Repeated> {
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(repeat(addr, req, pause, stop))
    })
    .await?
}

/// Repeats `req` on one connection until `stop`, pausing `pause` between requests:
/// the scraper of scenario 5.
pub async fn repeat(
    addr: SocketAddr,
    req: Req,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Repeated> {
    let mut conn = Conn::open(addr).await?;
    let mut out = Repeated {
        hist: new_histogram(),
        sizes: Vec::new(),
        last_body: Bytes::new(),
        errors: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        match conn.send(&req, req.body.clone()).await {
            Ok((status, body)) if status.is_success() => {
                let _ = out.hist.record((t0.elapsed().as_micros() as u64).max(1));
                out.sizes.push(body.len());
                out.last_body = body;
            }
            _ => out.errors += 1,
        }
        tokio::time::sleep(pause).await;
    }
    Ok(out)
}
