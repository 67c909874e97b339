//! Sending alerts: one queue and one task per target, so a receiver that is down or slow holds
//! up only its own alerts, and the rules never wait. A queue holds at most [`QUEUE`] alerts
//! (beyond that the newest is dropped, with a warning); each alert is retried with exponential
//! backoff while the receiver is unreachable, answers 5xx, 408 or 429, until it is delivered or
//! `give_up_after` has passed. Any other 4xx means the request itself is wrong (a revoked
//! webhook, a bad chat id): retrying would not help, so it is dropped at once with the
//! receiver's reason. The target's URL is never in a message: it carries the token.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Alert;
use super::targets::Target;

/// The most alerts waiting for one target.
pub const QUEUE: usize = 256;
/// The deadline of one request, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How failed deliveries are retried: `first`, doubled after each failure up to `max`, until
/// `give_up_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    pub give_up_after: Duration,
}

impl Backoff {
    pub fn with_give_up(give_up_after: Duration) -> Backoff {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(300),
            give_up_after,
        }
    }

    /// The wait after failed attempt `n` (1-based).
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.max)
    }
}

/// What happened to the alerts of one target.
#[derive(Debug, Default)]
pub struct Counts {
    pub delivered: AtomicU64,
    /// Attempts that failed and were tried again.
    pub retried: AtomicU64,
    /// Alerts given up on: refused by the receiver or never delivered in time.
    pub failed: AtomicU64,
    /// Alerts dropped because the queue was full.
    pub dropped: AtomicU64,
}

/// One target's queue.
#[derive(Debug, Clone)]
pub struct Queue {
    pub name: String,
    pub counts: Arc<Counts>,
    tx: mpsc::Sender<Alert>,
}

/// The queues of every target.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    queues: Vec<Queue>,
}

/// Why one attempt failed, in the receiver's words where it gave any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    /// Retrying the same request would not help.
    pub permanent: bool,
    /// How long the receiver asked to be left alone (`Retry-After` in seconds, with a 429 or
    /// 503), when it said.
    pub retry_after: Option<Duration>,
}

/// The HTTP client alerts go out with: rustls with the platform's roots (as every `https://`
/// request of Flotilla), a deadline per request, a few redirects at most.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("flotilla/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a client with these settings builds")
}

/// Posts `alert` to `target` once.
pub async fn attempt(
    client: &reqwest::Client,
    target: &Target,
    alert: &Alert,
    fleet: &str,
) -> Result<(), Failure> {
    let Some(url) = target.url() else {
        return Err(Failure {
            reason: "the stored URL is not text".into(),
            permanent: true,
            retry_after: None,
        });
    };
    let sent = client
        .post(url)
        .json(&target.body(alert, fleet))
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            let permanent = e.is_builder();
            return Err(Failure {
                reason: chain(&e.without_url()),
                permanent,
                retry_after: None,
            });
        }
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let said = response.text().await.unwrap_or_default();
    let said = said.split_whitespace().collect::<Vec<_>>().join(" ");
    let said: String = said.chars().take(200).collect();
    let code = status.as_u16();
    Err(Failure {
        reason: if said.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {said}")
        },
        permanent: status.is_client_error() && code != 408 && code != 429,
        retry_after,
    })
}

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

impl Delivery {
    /// A queue and its task for every target; the tasks end with `cancel`.
    pub fn start(
        targets: Vec<Target>,
        fleet: String,
        backoff: Backoff,
        cancel: CancellationToken,
    ) -> Delivery {
        let client = client();
        let queues = targets
            .into_iter()
            .map(|target| {
                let (tx, rx) = mpsc::channel(QUEUE);
                let counts = Arc::new(Counts::default());
                tokio::spawn(run(
                    client.clone(),
                    target.clone(),
                    fleet.clone(),
                    backoff,
                    rx,
                    counts.clone(),
                    cancel.clone(),
                ));
                Queue {
                    name: target.name,
                    counts,
                    tx,
                }
            })
            .collect();
        Delivery { queues }
    }

    pub fn queues(&self) -> &[Queue] {
        &self.queues
    }

    /// `flotilla_alerts_sent_total{target,outcome}` in Prometheus' text format: per target,
    /// alerts `delivered`, attempts `retried`, alerts `failed` (refused or given up on) and
    /// `dropped` (queue full). Empty without targets.
    pub fn metrics(&self) -> String {
        use std::fmt::Write;
        if self.queues.is_empty() {
            return String::new();
        }
        let mut out = String::from(
            "# HELP flotilla_alerts_sent_total Alerts the head sent to each target, by outcome \
             (retried counts attempts).\n# TYPE flotilla_alerts_sent_total counter\n",
        );
        for q in &self.queues {
            let c = &q.counts;
            let name = q
                .name
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            for (outcome, n) in [
                ("delivered", &c.delivered),
                ("retried", &c.retried),
                ("failed", &c.failed),
                ("dropped", &c.dropped),
            ] {
                let _ = writeln!(
                    out,
                    "flotilla_alerts_sent_total{{target=\"{name}\",outcome=\"{outcome}\"}} {}",
                    n.load(Ordering::Relaxed)
                );
            }
        }
        out
    }

    /// Queues `alert` for every target; never waits.
    pub fn send(&self, alert: &Alert) {
        for q in &self.queues {
            match q.tx.try_send(alert.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    q.counts.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        target_name = q.name,
                        alert = alert.rule.as_str(),
                        "the alert target's queue is full ({QUEUE} waiting): this alert is dropped"
                    );
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
}

/// One target's task: its alerts in order, each until delivered, refused or given up on.
async fn run(
    client: reqwest::Client,
    target: Target,
    fleet: String,
    backoff: Backoff,
    mut rx: mpsc::Receiver<Alert>,
    counts: Arc<Counts>,
    cancel: CancellationToken,
) {
    loop {
        let alert = tokio::select! {
            _ = cancel.cancelled() => return,
            a = rx.recv() => match a { Some(a) => a, None => return },
        };
        let began = Instant::now();
        let mut tries = 0u32;
        loop {
            tries += 1;
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return,
                o = attempt(&client, &target, &alert, &fleet) => o,
            };
            match outcome {
                Ok(()) => {
                    counts.delivered.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        target_name = target.name,
                        alert = alert.rule.as_str(),
                        state = alert.state.as_str(),
                        tries,
                        "alert delivered"
                    );
                    break;
                }
                Err(f) if f.permanent => {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        target_name = target.name,
                        alert = alert.rule.as_str(),
                        "the alert target refused the alert ({}); check it with `flotilla alerts test`",
                        f.reason
                    );
                    break;
                }
                Err(f) => {
                    // The receiver's own wish when it said one (rate limits), within the cap.
                    let wait = backoff
                        .delay(tries)
                        .max(f.retry_after.unwrap_or_default().min(backoff.max));
                    if began.elapsed() + wait > backoff.give_up_after {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            target_name = target.name,
                            alert = alert.rule.as_str(),
                            tries,
                            "alert not delivered after {} s, given up: {}",
                            began.elapsed().as_secs(),
                            f.reason
                        );
                        break;
                    }
                    counts.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        target_name = target.name,
                        alert = alert.rule.as_str(),
                        tries,
                        "alert not delivered ({}); trying again in {} ms",
                        f.reason,
                        wait.as_millis()
                    );
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Kind, Rule};
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A real HTTP/1.1 receiver on loopback answering each request with the next of `answers`
    /// (status, body); returns its URL and the bodies it received.
    async fn receiver(
        answers: Vec<(u16, &'static str)>,
    ) -> (String, Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got: Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Arc::default();
        let seen = got.clone();
        tokio::spawn(async move {
            for (status, said) in answers {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                let body = loop {
                    let n = s.read(&mut buf).await.unwrap();
                    raw.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&raw).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            break body.to_string();
                        }
                    }
                    assert!(n > 0, "the client hung up");
                };
                seen.lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap());
                // A rate limit says when to come back, as Discord's and Telegram's do.
                let extra = if status == 429 {
                    "Retry-After: 2\r\n"
                } else {
                    ""
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{said}",
                    said.len()
                );
                s.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        (url, got)
    }

    fn target(url: &str, kind: Kind) -> Target {
        Target {
            name: "t".into(),
            kind,
            url: flotilla_secrets::Secret::from(url),
            chat_id: None,
        }
    }

    fn alert() -> Alert {
        Alert::event(Rule::JoinCodeUsed, Some("w2"), "w2 joined".into(), 0)
    }

    #[tokio::test]
    async fn a_receiver_error_is_retried_and_a_refusal_is_not_with_the_receivers_words() {
        let (url, got) = receiver(vec![
            (200, "ok"),
            (503, "busy"),
            (429, ""),
            (404, "no_service"),
        ])
        .await;
        let (c, t) = (client(), target(&url, Kind::Slack));
        attempt(&c, &t, &alert(), "studio").await.unwrap();
        let busy = attempt(&c, &t, &alert(), "studio").await.unwrap_err();
        assert!(!busy.permanent && busy.reason.contains("503") && busy.reason.ends_with("busy"));
        let slow = attempt(&c, &t, &alert(), "studio").await.unwrap_err();
        assert!(!slow.permanent && slow.reason.contains("429"), "{slow:?}");
        assert_eq!(slow.retry_after, Some(Duration::from_secs(2)));
        assert_eq!(busy.retry_after, None);
        let gone = attempt(&c, &t, &alert(), "studio").await.unwrap_err();
        assert!(gone.permanent, "{gone:?}");
        assert!(gone.reason.ends_with("no_service"), "{gone:?}");
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 4);
        assert!(
            got[0]["text"]
                .as_str()
                .unwrap()
                .starts_with("[EVENT] Flotilla (studio): w2 joined")
        );
    }

    #[tokio::test]
    async fn the_queue_delivers_after_failures_and_counts_them() {
        let (url, got) = receiver(vec![
            (500, "down"),
            (500, "down"),
            (200, "ok"),
            (400, "bad"),
        ])
        .await;
        let cancel = CancellationToken::new();
        let backoff = Backoff {
            first: Duration::from_millis(10),
            max: Duration::from_millis(40),
            give_up_after: Duration::from_secs(60),
        };
        let d = Delivery::start(
            vec![target(&url, Kind::Json)],
            "studio".into(),
            backoff,
            cancel.clone(),
        );
        d.send(&alert());
        d.send(&alert());
        let counts = d.queues()[0].counts.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        while counts.delivered.load(Ordering::Relaxed) + counts.failed.load(Ordering::Relaxed) < 2 {
            assert!(Instant::now() < deadline, "{counts:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(counts.delivered.load(Ordering::Relaxed), 1);
        assert_eq!(counts.retried.load(Ordering::Relaxed), 2);
        assert_eq!(counts.failed.load(Ordering::Relaxed), 1);
        assert_eq!(got.lock().unwrap().len(), 4);
        let text = d.metrics();
        assert!(
            text.contains("flotilla_alerts_sent_total{target=\"t\",outcome=\"delivered\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_alerts_sent_total{target=\"t\",outcome=\"retried\"} 2"),
            "{text}"
        );
        assert!(Delivery::default().metrics().is_empty());
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_newest_and_never_waits() {
        // Nobody listens: the first alert is retried for a minute while the rest queue.
        let cancel = CancellationToken::new();
        let d = Delivery::start(
            vec![target("http://127.0.0.1:9/closed", Kind::Json)],
            "studio".into(),
            Backoff::with_give_up(Duration::from_secs(60)),
            cancel.clone(),
        );
        let began = Instant::now();
        for _ in 0..QUEUE + 50 {
            d.send(&alert());
        }
        println!("{} alerts queued in {:?}", QUEUE + 50, began.elapsed());
        let dropped = d.queues()[0].counts.dropped.load(Ordering::Relaxed);
        // The task may have taken the first alert out of the queue already.
        assert!((49..=50).contains(&dropped), "{dropped}");
        cancel.cancel();
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let b = Backoff::with_give_up(Duration::from_secs(3600));
        let waits: Vec<u64> = (1..=11).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(b.delay(200), Duration::from_secs(300));
    }
}
