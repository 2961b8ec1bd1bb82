//! The load generator: a fixed number of workers, each with its own keep-alive connection,
//! each sending its next request as soon as the previous answer is read and checked (a closed
//! loop: the concurrency is fixed, the rate is what the server sustains). Latencies go into one
//! HDR histogram per worker, merged at the end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Method, StatusCode};

use crate::client::{Conn, Target};

/// One request of a workload, and what its answer must be.
pub struct Req {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// JSON body, if any.
    pub body: Option<Bytes>,
    /// The status a correct answer has.
    pub expect: StatusCode,
    /// Text a correct answer's body contains (e.g. `"id":"u0000042"`), if checked.
    pub must_contain: Option<String>,
}

/// A worker's stream of requests.
pub trait Job: Send {
    /// The next request, or `None` when this worker's share of the work is done.
    fn next(&mut self) -> Option<Req>;
    /// Checks an answer; `Err(kind)` counts it as an error of that kind.
    fn check(&mut self, req: &Req, status: StatusCode, body: &[u8]) -> Result<(), String> {
        check_default(req, status, body)
    }
}

/// The status must be the expected one and the body must contain what the request says.
pub fn check_default(req: &Req, status: StatusCode, body: &[u8]) -> Result<(), String> {
    if status != req.expect {
        return Err(format!("status {}", status.as_u16()));
    }
    if let Some(needle) = &req.must_contain
        && !contains(body, needle.as_bytes())
    {
        return Err(format!("body without {needle}"));
    }
    Ok(())
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// How long a run lasts.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Requests for `warmup` are not recorded; then every request that starts and ends
    /// within `measure` is.
    Timed {
        /// Unrecorded lead-in.
        warmup: Duration,
        /// The measured window.
        measure: Duration,
    },
    /// Until every worker's job is done (or `timeout`): a fixed amount of work.
    UntilDone {
        /// Give up after this long.
        timeout: Duration,
    },
}

/// What a run measured.
pub struct Outcome {
    /// Correct answers recorded.
    pub ok: u64,
    /// Recorded errors by kind (`status 409`, `transport: …`, `body without …`).
    pub errors: BTreeMap<String, u64>,
    /// The first few error answers, abridged.
    pub error_samples: Vec<String>,
    /// Latencies of the correct answers, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Length of the measured window (or of the whole run, for [`Pace::UntilDone`]).
    pub secs: f64,
    /// An [`Pace::UntilDone`] run that hit its timeout.
    pub timed_out: bool,
}

impl Outcome {
    /// Recorded errors.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Correct answers per second.
    pub fn throughput(&self) -> f64 {
        if self.secs > 0.0 {
            self.ok as f64 / self.secs
        } else {
            0.0
        }
    }
}

struct Window {
    record_from: Instant,
    stop: Instant,
}

const MAX_SAMPLES: usize = 5;

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 10 min at 3 significant figures.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

async fn worker(target: Arc<Target>, mut job: Box<dyn Job>, window: Window) -> Outcome {
    let mut out = Outcome {
        ok: 0,
        errors: BTreeMap::new(),
        error_samples: Vec::new(),
        latency_us: new_histogram(),
        secs: 0.0,
        timed_out: false,
    };
    let mut conn: Option<Conn> = None;
    loop {
        if Instant::now() >= window.stop {
            out.timed_out = true;
            break;
        }
        let Some(req) = job.next() else { break };
        let conn_ref = match &mut conn {
            Some(c) => c,
            None => match Conn::open(target.clone()).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    *out.errors.entry(format!("connect: {e}")).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let started = Instant::now();
        let answer = conn_ref
            .send(req.method.clone(), &req.path, req.body.clone())
            .await;
        let ended = Instant::now();
        let verdict = match &answer {
            Ok((status, body)) => job.check(&req, *status, body),
            Err(e) => {
                conn = None;
                Err(format!("transport: {e}"))
            }
        };
        if started < window.record_from || ended > window.stop {
            continue;
        }
        match verdict {
            Ok(()) => {
                out.ok += 1;
                let us = (ended - started).as_micros().max(1) as u64;
                out.latency_us.saturating_record(us);
            }
            Err(kind) => {
                *out.errors.entry(kind.clone()).or_default() += 1;
                if out.error_samples.len() < MAX_SAMPLES {
                    let body = answer
                        .as_ref()
                        .map(|(_, b)| String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned())
                        .unwrap_or_default();
                    out.error_samples
                        .push(format!("{} {}: {kind}: {body}", req.method, req.path));
                }
            }
        }
    }
    out
}

/// Runs `concurrency` workers, each with the job `make(worker_index)` gives it.
pub async fn run(
    target: &Arc<Target>,
    concurrency: usize,
    pace: Pace,
    mut make: impl FnMut(usize) -> Box<dyn Job>,
) -> Outcome {
    let start = Instant::now();
    let (record_from, stop) = match pace {
        Pace::Timed { warmup, measure } => (start + warmup, start + warmup + measure),
        Pace::UntilDone { timeout } => (start, start + timeout),
    };
    let workers: Vec<_> = (0..concurrency)
        .map(|i| {
            let window = Window { record_from, stop };
            tokio::spawn(worker(target.clone(), make(i), window))
        })
        .collect();
    let mut total = Outcome {
        ok: 0,
        errors: BTreeMap::new(),
        error_samples: Vec::new(),
        latency_us: new_histogram(),
        secs: 0.0,
        timed_out: false,
    };
    for w in workers {
        match w.await {
            Ok(o) => {
                total.ok += o.ok;
                for (k, n) in o.errors {
                    *total.errors.entry(k).or_default() += n;
                }
                for s in o.error_samples {
                    if total.error_samples.len() < MAX_SAMPLES {
                        total.error_samples.push(s);
                    }
                }
                let _ = total.latency_us.add(&o.latency_us);
                total.timed_out |= o.timed_out;
            }
            Err(e) => *total.errors.entry(format!("worker: {e}")).or_default() += 1,
        }
    }
    total.secs = match pace {
        Pace::Timed { measure, .. } => measure.as_secs_f64(),
        Pace::UntilDone { .. } => start.elapsed().as_secs_f64(),
    };
    if matches!(pace, Pace::Timed { .. }) {
        total.timed_out = false;
    }
    total
}

/// A tiny xorshift generator: workers pick random users without sharing any state.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_finds_needles() {
        assert!(contains(br#"{"id":"u1"}"#, br#""id":"u1""#));
        assert!(!contains(br#"{"id":"u12"}"#, br#""id":"u1""#));
        assert!(contains(b"abc", b""));
    }

    #[test]
    fn default_check_wants_status_and_text() {
        let req = Req {
            method: Method::GET,
            path: "/x".into(),
            body: None,
            expect: StatusCode::OK,
            must_contain: Some("\"id\":\"a\"".into()),
        };
        assert!(check_default(&req, StatusCode::OK, br#"{"id":"a"}"#).is_ok());
        assert_eq!(
            check_default(&req, StatusCode::CONFLICT, b"{}"),
            Err("status 409".into())
        );
        assert!(check_default(&req, StatusCode::OK, br#"{"id":"b"}"#).is_err());
    }

    #[test]
    fn rng_stays_in_range_and_spreads() {
        let mut rng = Rng::new(7);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[rng.below(10) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }
}
