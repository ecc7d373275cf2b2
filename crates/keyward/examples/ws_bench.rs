//! Benchmark of the WebSocket event stream (issue 7), run by `bench/ws.sh`:
//!
//! 1. opens N sockets (default 2,000) on one node, each subscribed to `events`, and reads the
//!    server's RSS before and after: memory per idle socket;
//! 2. makes one key at a time and times, from the moment the call is sent, the event's
//!    arrival at every socket: delivery latency p50 and p99 over all sockets and rounds;
//! 3. keeps 100 sockets and deletes prepared apps of 500 keys every 100 ms (5,000 `key.revoked`
//!    events a second) for a while, sampling RSS every second: sustained fan-out.
//!
//! Usage: `ws_bench <keyward binary> [sockets] [rounds] [fan-out seconds]`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const KEYS_PER_APP: usize = 500;
const FANOUT_SOCKETS: usize = 100;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

struct Api {
    http: reqwest::Client,
    base: String,
    root: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let answer = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.root)
            .json(&body)
            .send()
            .await
            .expect("call");
        assert!(answer.status().is_success(), "{path}: {}", answer.status());
        answer.json().await.unwrap_or(Value::Null)
    }
}

/// One subscribed socket; forwards `(key name, arrival)` of every event it receives.
async fn open_socket(
    url: String,
    arrivals: Option<mpsc::UnboundedSender<(String, Instant)>>,
    received: Arc<AtomicU64>,
    missed: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    socket
        .send(Message::Text(
            json!({"type": "subscribe", "channel": "events"})
                .to_string()
                .into(),
        ))
        .await
        .expect("subscribe");
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) if text.contains("\"subscribed\"") => break,
            Some(Ok(Message::Close(frame))) => panic!("closed before subscribing: {frame:?}"),
            Some(Ok(_)) => {}
            other => panic!("closed before subscribing: {other:?}"),
        }
    }
    tokio::spawn(async move {
        while let Some(Ok(message)) = socket.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let arrival = Instant::now();
            // The client reads only what it measures, so that its own parsing takes as little
            // as possible of the cores it shares with the server.
            if text.starts_with(r#"{"type":"event""#) {
                received.fetch_add(1, Ordering::Relaxed);
                if let Some(arrivals) = &arrivals {
                    let name = text
                        .split_once(r#""name":""#)
                        .and_then(|(_, rest)| rest.split_once('"'))
                        .map_or("", |(name, _)| name);
                    let _ = arrivals.send((name.to_owned(), arrival));
                }
            } else if text.starts_with(r#"{"type":"lagged""#) {
                let message: Value = serde_json::from_str(&text).expect("JSON");
                missed.fetch_add(message["missed"].as_u64().unwrap_or(0), Ordering::Relaxed);
            }
        }
    })
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let binary = args
        .get(1)
        .expect("usage: ws_bench <keyward binary> [sockets] [rounds] [seconds]");
    let sockets: usize = args.get(2).map_or(2000, |n| n.parse().expect("sockets"));
    let rounds: usize = args.get(3).map_or(30, |n| n.parse().expect("rounds"));
    let seconds: u64 = args.get(4).map_or(20, |n| n.parse().expect("seconds"));

    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("KEYWARD_LOG", "warn")
        .env(
            "KEYWARD_WS_MAX_CONNECTIONS_PER_CREDENTIAL",
            (sockets + 10).to_string(),
        )
        .env("KEYWARD_WS_MAX_CONNECTIONS", (sockets + 10).to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start keyward");
    let (mut root, mut base) = (String::new(), String::new());
    for line in BufReader::new(server.stdout.take().expect("stdout")).lines() {
        let line = line.expect("banner");
        if let Some(key) = line.trim().strip_prefix("live: ") {
            root = key.to_owned();
        }
        if let Some(address) = line.strip_prefix("Keyward listening on ") {
            base = address.to_owned();
            break;
        }
    }
    let pid = server.id();
    let api = Api {
        http: reqwest::Client::new(),
        base: base.clone(),
        root: root.clone(),
    };
    api.call(
        reqwest::Method::POST,
        "/api/v1/apps",
        json!({"name": "Bench", "slug": "bench"}),
    )
    .await;
    let ws_url = format!("{}/ws?api-key={root}", base.replacen("http://", "ws://", 1));

    // 1. Idle sockets.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib(pid);
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
    let received = Arc::new(AtomicU64::new(0));
    let missed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        tasks.push(
            open_socket(
                ws_url.clone(),
                Some(arrivals_tx.clone()),
                Arc::clone(&received),
                Arc::clone(&missed),
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let rss_after = rss_kib(pid);
    let per_socket = (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / sockets as f64;
    println!(
        "| memory per idle socket ({sockets} sockets) | {:.1} KB | RSS {:.1} MB before, {:.1} MB after | target < 32 KB |",
        per_socket / 1024.0,
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );

    // 2. Delivery latency, one event at a time.
    let mut latencies = Vec::with_capacity(sockets * rounds);
    for round in 0..rounds {
        let name = format!("round{round}");
        let started = Instant::now();
        api.call(
            reqwest::Method::POST,
            "/api/v1/apps/bench/keys",
            json!({"name": name}),
        )
        .await;
        let mut arrived = 0;
        while arrived < sockets {
            let (event, at) = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
                .await
                .expect("every socket hears of the event")
                .expect("open");
            if event == name {
                latencies.push(at - started);
                arrived += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    latencies.sort();
    println!(
        "| event delivery to {sockets} sockets, {rounds} events (from the create call to each socket) | p50 {:.2} ms · p99 {:.2} ms · max {:.2} ms | | target p99 < 50 ms |",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().expect("samples").as_secs_f64() * 1e3,
    );

    // 3. Sustained fan-out to 100 sockets.
    for task in tasks.drain(FANOUT_SOCKETS.min(sockets)..) {
        task.abort();
    }
    drop(arrivals_tx);
    drop(arrivals);
    let apps = usize::try_from(seconds * 10).expect("apps");
    for app in 0..apps {
        let slug = format!("fan{app}");
        api.call(
            reqwest::Method::POST,
            "/api/v1/apps",
            json!({"name": slug, "slug": slug}),
        )
        .await;
        let keys: Vec<Value> = (0..KEYS_PER_APP)
            .map(|index| {
                let digest = format!("{:064x}", (app * KEYS_PER_APP + index) as u128 + 1);
                json!({"hash": digest, "start": "bench", "name": format!("f{index}")})
            })
            .collect();
        api.call(
            reqwest::Method::POST,
            &format!("/api/v1/apps/{slug}/keys/import"),
            json!({"keys": keys}),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    received.store(0, Ordering::Relaxed);
    missed.store(0, Ordering::Relaxed);
    let mut samples = Vec::new();
    let started = Instant::now();
    let mut next_sample = started;
    for app in 0..apps {
        if Instant::now() >= next_sample {
            samples.push(rss_kib(pid));
            next_sample += Duration::from_secs(1);
        }
        api.call(
            reqwest::Method::DELETE,
            &format!("/api/v1/apps/fan{app}"),
            Value::Null,
        )
        .await;
        let due = started + Duration::from_millis(100 * (app as u64 + 1));
        tokio::time::sleep_until(due.into()).await;
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    samples.push(rss_kib(pid));
    let events = apps * KEYS_PER_APP;
    let delivered = received.load(Ordering::Relaxed);
    let lost = missed.load(Ordering::Relaxed);
    let warm = samples.get(2).copied().unwrap_or(samples[0]);
    let last = *samples.last().expect("samples");
    println!(
        "| sustained fan-out: {events} events in {:.1} s ({:.0}/s) to {} sockets | {delivered} deliveries ({:.0}/s), {lost} missed | RSS {:.1} MB after warm-up, {:.1} MB at the end ({:+.1}%) | no memory growth |",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        FANOUT_SOCKETS.min(sockets),
        delivered as f64 / elapsed.as_secs_f64(),
        warm as f64 / 1024.0,
        last as f64 / 1024.0,
        (last as f64 - warm as f64) * 100.0 / warm as f64,
    );
    for task in tasks {
        task.abort();
    }
    let _ = server.kill();
    let _ = server.wait();
}
