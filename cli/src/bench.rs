//! `whctl bench`: a load generator anyone can point at whd.
//!
//! One run measures, on the same machine and with the same client:
//! 1. the **ceiling**: how fast this client can POST the body straight to its own receiver, with no
//!    whd in between — the most any HTTP service could do here;
//! 2. **ingest**: N webhooks at concurrency C over keep-alive connections to `/ingest/{id}`, spread
//!    over K subscriptions, with an HDR histogram of the 202 latency;
//! 3. **delivery**: until every accepted webhook has reached the receiver, the end-to-end rate and
//!    the ingest-to-delivery latency.
//!
//! Without `--external` it starts a `whd` of its own on a temporary SQLite database and reports that
//! server's peak resident memory too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use whd_sdk::{Client, ClientConfig, CreateSubscriptionRequest, Subscription};

use crate::Context;
use crate::cpu_time::CpuSnapshot;
use crate::error::CliError;
use crate::output::OutputFormat;
use crate::server_process;

/// Options of `whctl bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Webhooks to send.
    #[arg(short = 'n', long, default_value_t = 20_000)]
    pub count: u64,
    /// Requests in flight at once, each on its own keep-alive connection.
    #[arg(short = 'c', long, default_value_t = 64)]
    pub concurrency: usize,
    /// Size of each JSON body in bytes.
    #[arg(long, default_value_t = 1024)]
    pub payload_size: usize,
    /// Spread the webhooks over this many subscriptions.
    #[arg(long, default_value_t = 1)]
    pub subscriptions: usize,
    /// Milliseconds the receiver waits before answering each delivery.
    #[arg(long, default_value_t = 0)]
    pub receiver_delay: u64,
    /// Share of deliveries (0 to 1) the receiver answers with 500, to load the retry path.
    #[arg(long, default_value_t = 0.0)]
    pub failure_rate: f64,
    /// Share of webhooks (0 to 1) sent to one extra subscription whose receiver never answers, so that
    /// each of its attempts runs into the server's attempt timeout. Rates and latencies are reported
    /// for the other webhooks: how well they hold up next to a hanging target.
    #[arg(long, default_value_t = 0.0)]
    pub hang_share: f64,
    /// Benchmark the server at --server/--ingest-url instead of starting one. It must be allowed to
    /// deliver to loopback (e.g. `--allow-target-cidr 127.0.0.0/8`).
    #[arg(long)]
    pub external: bool,
    /// The `whd` binary to start (default: the one next to whctl, else `whd` on the PATH).
    #[arg(long, value_name = "PATH")]
    pub whd: Option<PathBuf>,
    /// Extra flag for the started server, e.g. `--server-arg=--sqlite-sync=normal`. Repeatable.
    #[arg(long = "server-arg", value_name = "FLAG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Give up waiting for deliveries after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Skip the ceiling measurement.
    #[arg(long)]
    pub no_ceiling: bool,
    /// Send at this many webhooks per second instead of as fast as the server answers; latencies are
    /// then measured from when each request was due, so a stall is not hidden by the sender waiting.
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<f64>,
    /// Before measuring, queue this many webhooks to a target that always fails, and wait until each
    /// has failed once: they then wait in the database as pending retries while the measured webhooks
    /// flow past them. A server this run starts waits an hour before retrying them.
    #[arg(long, default_value_t = 0)]
    pub backlog: u64,
    /// Another node's ingest URL; webhooks go to the nodes in turn. Repeatable.
    #[arg(long = "also-ingest-url", value_name = "URL")]
    pub also_ingest_urls: Vec<String>,
}

/// Everything a run measured.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// Webhooks sent.
    pub count: u64,
    /// Concurrency.
    pub concurrency: usize,
    /// Body size in bytes.
    pub payload_size: usize,
    /// Subscriptions used.
    pub subscriptions: usize,
    /// Webhooks waiting as pending retries while the others were measured (`--backlog`).
    pub backlog: u64,
    /// Ingest nodes the webhooks were spread over.
    pub nodes: usize,
    /// The sending rate asked for with `--rate`, if any.
    pub rate: Option<f64>,
    /// Requests per second straight to the receiver.
    pub ceiling_rps: Option<f64>,
    /// Accepted webhooks per second.
    pub ingest_rps: f64,
    /// `ingest_rps / ceiling_rps`.
    pub ingest_ratio: Option<f64>,
    /// 202 latency in milliseconds.
    pub ingest_latency_ms: Percentiles,
    /// The 202 latency of the requests due (with `--rate`; otherwise sent) in each 100 ms of the run,
    /// in order: shows a slow start or a stall that the percentiles of the whole run fold together.
    /// Unpaced, a stall shows in the window its requests were sent in, and the windows after it may
    /// hold none.
    pub ingest_timeline: Vec<TimelineWindow>,
    /// Webhooks delivered per second, from the first ingest to the last first delivery.
    pub delivery_rps: f64,
    /// `delivery_rps / ceiling_rps`.
    pub delivery_ratio: Option<f64>,
    /// Ingest-to-delivery latency in milliseconds.
    pub end_to_end_latency_ms: Percentiles,
    /// Webhooks that got a 202.
    pub accepted: u64,
    /// Accepted webhooks sent to the hanging target (`--hang-share`), never delivered.
    pub hanging: u64,
    /// Accepted webhooks that reached the receiver.
    pub delivered: u64,
    /// Accepted webhooks whose every attempt failed (only with `--failure-rate`).
    pub failed_deliveries: u64,
    /// Requests the receiver got, retries included.
    pub receiver_requests: u64,
    /// Ingest failures by kind (`http 503`, `connect`, …).
    pub errors: HashMap<String, u64>,
    /// Peak resident memory of the server this run started, in MiB.
    pub server_peak_rss_mib: Option<f64>,
    /// CPU time (user and system) the server this run started spent per accepted webhook, in µs,
    /// from the first ingest request to the last delivery. Less noisy than the rates on a shared
    /// machine: the figure to compare two builds by.
    pub server_cpu_us_per_webhook: Option<f64>,
    /// The same for this benchmark process: its client and its receiver.
    pub bench_cpu_us_per_webhook: Option<f64>,
    /// Seconds of CPU the hypervisor gave to others meanwhile (steal, all CPUs); much more than a few
    /// tenths of a second makes the rates of this run a poor comparison.
    pub cpu_steal_s: Option<f64>,
}

/// Ingest requests due within one window of the run.
#[derive(Debug, Serialize)]
pub struct TimelineWindow {
    /// Seconds from the start of ingest to the start of this window.
    pub start_s: f64,
    /// Requests answered 202.
    pub requests: u64,
    /// Their 202 latency in milliseconds.
    pub latency_ms: Percentiles,
}

/// The length of a window of the ingest timeline.
const TIMELINE_WINDOW: Duration = Duration::from_millis(100);

/// Every request's latency with its [`TIMELINE_WINDOW`], by when it was due or sent; histograms per
/// window are built once the run is over. (A histogram per window and sender, made as the run went,
/// allocated and zeroed megabytes at every window's start, all senders at once, and that pause was
/// counted as whd's latency.)
#[derive(Default)]
struct Timeline(Vec<(u32, u64)>);

impl Timeline {
    fn with_capacity(samples: usize) -> Self {
        Timeline(Vec::with_capacity(samples))
    }

    fn record(&mut self, since_start: Duration, micros: u64) {
        let window = since_start.as_micros() / TIMELINE_WINDOW.as_micros();
        self.0
            .push((u32::try_from(window).unwrap_or(u32::MAX), micros));
    }

    fn add(&mut self, other: Timeline) {
        self.0.extend(other.0);
    }

    fn windows(&self) -> Vec<TimelineWindow> {
        let mut histograms: Vec<Histogram<u64>> = Vec::new();
        for &(window, micros) in &self.0 {
            let window = window as usize;
            if histograms.len() <= window {
                histograms.resize_with(window + 1, latency_histogram);
            }
            let _ = histograms[window].record(micros);
        }
        histograms
            .iter()
            .enumerate()
            .map(|(index, histogram)| TimelineWindow {
                start_s: (TIMELINE_WINDOW * index as u32).as_secs_f64(),
                requests: histogram.len(),
                latency_ms: Percentiles::of(histogram),
            })
            .collect()
    }
}

/// Room to reserve up front for `count` entries: all of them, up to a bound that keeps an absurd `-n`
/// from reserving all memory at once (beyond it, collections grow as they fill).
fn presized(count: u64) -> usize {
    const MOST: u64 = 1 << 24;
    usize::try_from(count.min(MOST)).expect("2^24 fits in usize")
}

fn latency_histogram() -> Histogram<u64> {
    Histogram::<u64>::new(3).expect("3 significant digits is a valid precision")
}

/// Latency percentiles.
#[derive(Debug, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        }
    }
}

type BenchClient = HttpClient<HttpConnector, Full<Bytes>>;

/// Runs the benchmark.
pub(crate) async fn run(
    context: &Context,
    args: BenchArgs,
    out: &mut (dyn std::io::Write + Send),
) -> Result<(), CliError> {
    if !(0.0..1.0).contains(&args.hang_share) {
        return Err(CliError::Usage(
            "--hang-share must be at least 0 and below 1".into(),
        ));
    }
    if !(0.0..1.0).contains(&args.failure_rate) {
        return Err(CliError::Usage(
            "--failure-rate must be at least 0 and below 1".into(),
        ));
    }
    if args.backlog > 0 && args.failure_rate > 0.0 && !args.external {
        return Err(CliError::Usage(
            "--backlog and --failure-rate cannot be combined: the started server then waits an hour \
             before any retry"
                .into(),
        ));
    }
    if args
        .rate
        .is_some_and(|rate| !(rate > 0.0 && rate.is_finite()))
    {
        return Err(CliError::Usage("--rate must be above 0".into()));
    }
    if args.count == 0 || args.concurrency == 0 || args.subscriptions == 0 {
        return Err(CliError::Usage(
            "-n, -c and --subscriptions must be at least 1".into(),
        ));
    }
    let body = json_body(args.payload_size);
    let receiver = Receiver::start(
        Duration::from_millis(args.receiver_delay),
        args.failure_rate,
        args.count,
    )
    .await?;
    let client = http_client(args.concurrency);

    let ceiling_rps = if args.no_ceiling {
        None
    } else {
        let url = format!("http://{}/ceiling", receiver.addr);
        let (posted, elapsed) = post_many(
            &client,
            &url,
            &body,
            args.count,
            args.concurrency,
            "ceiling",
        )
        .await;
        Some(posted as f64 / elapsed.as_secs_f64().max(1e-9))
    };

    let server = if args.external {
        None
    } else {
        Some(StartedServer::start(&args).await?)
    };
    let config = match &server {
        Some(server) => ClientConfig {
            server: server.grpc_url.clone(),
            ingest_url: server.http_url.clone(),
            api_token: None,
        },
        None => context.config.clone(),
    };
    let sdk = Client::connect(config.clone()).await?;
    let mut subscription_ids = Vec::with_capacity(args.subscriptions);
    for index in 0..args.subscriptions {
        subscription_ids
            .push(subscribe(&sdk, &receiver, &format!("hook/{index}"), "whctl bench").await?);
    }
    let hanging_subscription = if args.hang_share > 0.0 {
        Some(subscribe(&sdk, &receiver, "hang", "whctl bench: hanging target").await?)
    } else {
        None
    };

    let backlog = if args.backlog > 0 {
        queue_backlog(&client, &sdk, &config.ingest_url, &receiver, &body, &args).await?
    } else {
        0
    };

    let ingest_urls: Vec<&str> = std::iter::once(config.ingest_url.as_str())
        .chain(args.also_ingest_urls.iter().map(String::as_str))
        .collect();
    let cpu_before = CpuSnapshot::now(server.as_ref().and_then(StartedServer::pid));
    let ingest = ingest_all(
        &client,
        &ingest_urls,
        &subscription_ids,
        hanging_subscription.as_deref(),
        &body,
        &args,
    )
    .await;
    let (delivered, failed_deliveries) =
        wait_for_deliveries(&receiver, &ingest, &sdk, args.drain_timeout).await;
    let cpu = cpu_before.until(&CpuSnapshot::now(
        server.as_ref().and_then(StartedServer::pid),
    ));
    let server_peak_rss_mib = server.as_ref().and_then(StartedServer::peak_rss_mib);
    if let Some(server) = server {
        server.stop().await;
    }

    let end_to_end = receiver.end_to_end_histogram(&ingest.sent_at);
    let last_delivery = receiver.last_first_delivery().unwrap_or(ingest.finished);
    let delivery_secs = last_delivery
        .saturating_duration_since(ingest.started)
        .as_secs_f64()
        .max(1e-9);
    let ingest_rps = ingest.accepted as f64
        / ingest
            .finished
            .duration_since(ingest.started)
            .as_secs_f64()
            .max(1e-9);
    let delivery_rps = delivered as f64 / delivery_secs;
    let report = BenchReport {
        count: args.count,
        concurrency: args.concurrency,
        payload_size: args.payload_size,
        subscriptions: args.subscriptions,
        backlog,
        nodes: ingest_urls.len(),
        rate: args.rate,
        ceiling_rps,
        ingest_rps,
        ingest_ratio: ceiling_rps.map(|ceiling| ingest_rps / ceiling),
        ingest_latency_ms: Percentiles::of(&ingest.latency),
        ingest_timeline: ingest.timeline.windows(),
        delivery_rps,
        delivery_ratio: ceiling_rps.map(|ceiling| delivery_rps / ceiling),
        end_to_end_latency_ms: Percentiles::of(&end_to_end),
        accepted: ingest.accepted,
        hanging: ingest.hanging,
        delivered,
        failed_deliveries,
        receiver_requests: receiver.requests.load(Ordering::Relaxed),
        errors: ingest.errors,
        server_peak_rss_mib,
        server_cpu_us_per_webhook: cpu.server.map(|time| per_webhook(time, ingest.accepted)),
        bench_cpu_us_per_webhook: cpu.own.map(|time| per_webhook(time, ingest.accepted)),
        cpu_steal_s: cpu.steal.map(|time| time.as_secs_f64()),
    };
    receiver.stop();
    print_report(&report, context.output, out)?;
    let expected = report.accepted - report.hanging;
    if report.delivered + report.failed_deliveries < expected {
        return Err(CliError::Bench(format!(
            "{} of {} accepted webhooks were neither delivered nor failed within {}",
            expected - report.delivered - report.failed_deliveries,
            expected,
            humantime::format_duration(args.drain_timeout)
        )));
    }
    Ok(())
}

/// The window of the ingest timeline with the highest p99, for the table.
fn slowest_window(timeline: &[TimelineWindow]) -> String {
    timeline
        .iter()
        .max_by(|a, b| a.latency_ms.p99.total_cmp(&b.latency_ms.p99))
        .map_or("-".to_owned(), |window| {
            format!(
                "from {:.1} s: {} requests, p99 {:.2} ms, max {:.2} ms",
                window.start_s, window.requests, window.latency_ms.p99, window.latency_ms.max
            )
        })
}

/// Microseconds of `time` per webhook.
fn per_webhook(time: Duration, webhooks: u64) -> f64 {
    time.as_secs_f64() * 1e6 / webhooks.max(1) as f64
}

/// A JSON object of exactly `size` bytes (at least 16).
fn json_body(size: usize) -> Bytes {
    let prefix = r#"{"bench":""#;
    let suffix = r#""}"#;
    let filler = size.saturating_sub(prefix.len() + suffix.len()).max(1);
    Bytes::from(format!("{prefix}{}{suffix}", "x".repeat(filler)))
}

fn http_client(concurrency: usize) -> BenchClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    HttpClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

async fn post(
    client: &BenchClient,
    url: &str,
    body: &Bytes,
) -> Result<(StatusCode, Bytes), String> {
    let request = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .map_err(|error| error.to_string())?;
    let response = client.request(request).await.map_err(|error| {
        if error.is_connect() {
            "connect".to_owned()
        } else {
            "request".to_owned()
        }
    })?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|_| "body".to_owned())?
        .to_bytes();
    Ok((status, bytes))
}

/// POSTs `body` to `url` `count` times, `concurrency` at a time; returns how many were answered with
/// a success status, and how long it took.
async fn post_many(
    client: &BenchClient,
    url: &str,
    body: &Bytes,
    count: u64,
    concurrency: usize,
    phase: &'static str,
) -> (u64, Duration) {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let progress = progress_bar(count, phase);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, body, next, done, progress) = (
            client.clone(),
            url.to_owned(),
            body.clone(),
            next.clone(),
            done.clone(),
            progress.clone(),
        );
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count {
                if matches!(post(&client, &url, &body).await, Ok((status, _)) if status.is_success()) {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                progress.inc(1);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    progress.finish_and_clear();
    (done.load(Ordering::Relaxed), started.elapsed())
}

/// Creates a subscription to `path` on the benchmark's receiver; returns its id.
async fn subscribe(
    sdk: &Client,
    receiver: &Receiver,
    path: &str,
    description: &str,
) -> Result<String, CliError> {
    let created = sdk
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(Subscription {
                target_url: format!("http://{}/{path}", receiver.addr),
                description: description.into(),
                ..Default::default()
            }),
            generate_secret: false,
        })
        .await?;
    Ok(created.id)
}

/// Queues `--backlog` webhooks to a subscription whose target always fails, and waits until every one
/// has had its first attempt, so that all of them are pending retries when the measurement starts.
async fn queue_backlog(
    client: &BenchClient,
    sdk: &Client,
    ingest_url: &str,
    receiver: &Receiver,
    body: &Bytes,
    args: &BenchArgs,
) -> Result<u64, CliError> {
    let subscription_id = subscribe(
        sdk,
        receiver,
        "fail",
        "whctl bench: backlog of pending retries",
    )
    .await?;
    let url = format!(
        "{}/ingest/{subscription_id}",
        ingest_url.trim_end_matches('/')
    );
    let (accepted, _) = post_many(
        client,
        &url,
        body,
        args.backlog,
        args.concurrency,
        "backlog",
    )
    .await;
    let progress = progress_bar(accepted, "failing");
    let give_up = Instant::now() + args.drain_timeout;
    loop {
        let failed = receiver.failed_on_purpose.load(Ordering::Relaxed);
        progress.set_position(failed);
        if failed >= accepted {
            break;
        }
        if Instant::now() >= give_up {
            return Err(CliError::Bench(format!(
                "only {failed} of {accepted} backlog webhooks were attempted within {}",
                humantime::format_duration(args.drain_timeout)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress.finish_and_clear();
    // The receiver counts a request before the server records its result; let the last ones land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(accepted)
}

struct IngestOutcome {
    started: Instant,
    finished: Instant,
    /// Webhooks answered 202, to the hanging target too.
    accepted: u64,
    /// Of those, webhooks sent to the hanging target.
    hanging: u64,
    latency: Histogram<u64>,
    timeline: Timeline,
    errors: HashMap<String, u64>,
    /// When each accepted delivery's ingest request started (the hanging target's excluded).
    sent_at: HashMap<String, Instant>,
}

async fn ingest_all(
    client: &BenchClient,
    ingest_urls: &[&str],
    subscription_ids: &[String],
    hanging_subscription: Option<&str>,
    body: &Bytes,
    args: &BenchArgs,
) -> IngestOutcome {
    let ingest_url = ingest_urls[0].trim_end_matches('/');
    let hanging_url: Arc<Option<String>> =
        Arc::new(hanging_subscription.map(|id| format!("{ingest_url}/ingest/{id}")));
    let hang_share = args.hang_share;
    let hanging = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    // Webhook n goes to node n mod nodes, and the nodes take the subscriptions in turn.
    let urls: Arc<Vec<String>> = Arc::new(
        subscription_ids
            .iter()
            .flat_map(|id| {
                ingest_urls
                    .iter()
                    .map(move |base| format!("{}/ingest/{id}", base.trim_end_matches('/')))
            })
            .collect(),
    );
    let progress = progress_bar(args.count, "ingest");
    let count = args.count;
    let started = Instant::now();
    // With --rate, a thread of its own releases one sending turn per webhook when it is due: the
    // runtime's timer counts whole milliseconds, and its lateness would be charged to the server.
    let pacer = args
        .rate
        .map(|rate| Pacer::start(started, rate, count, args.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    // A quarter more than an even share, so that a sender that gets ahead does not grow its lists.
    let expected_per_sender = presized(count / args.concurrency as u64 * 5 / 4 + 16);
    for _ in 0..args.concurrency {
        let (client, urls, body, next, progress, hanging_url, hanging) = (
            client.clone(),
            urls.clone(),
            body.clone(),
            next.clone(),
            progress.clone(),
            hanging_url.clone(),
            hanging.clone(),
        );
        let turns = pacer.as_ref().map(Pacer::turns);
        let pacer_rate = args.rate;
        tasks.spawn(async move {
            let mut latency = latency_histogram();
            let mut timeline = Timeline::with_capacity(expected_per_sender);
            let mut errors: HashMap<String, u64> = HashMap::new();
            // Lists, not maps, sized for the run: the senders take turns, so they all reach the same
            // length at the same moment, and growing together (a map's rehash, even a list's copy)
            // paused the benchmark at 16,384, 32,768 and 65,536 webhooks, counted as whd's latency.
            let mut sent_at = Vec::with_capacity(expected_per_sender);
            loop {
                if let Some(turns) = &turns {
                    turns
                        .acquire()
                        .await
                        .expect("the pacer never closes its semaphore")
                        .forget();
                }
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    break;
                }
                // An even spread: webhook n goes to the hanging target when n·share crosses an integer.
                let hangs = (index as f64 * hang_share).floor()
                    != ((index + 1) as f64 * hang_share).floor();
                let url = match hanging_url.as_deref() {
                    Some(hanging) if hangs => hanging,
                    _ => &urls[(index % urls.len() as u64) as usize],
                };
                // Paced, latency counts from when the webhook was due, so that a stall is not hidden
                // by the sender waiting for it.
                let sent = match &pacer_rate {
                    Some(rate) => started + Duration::from_secs_f64(index as f64 / rate),
                    None => Instant::now(),
                };
                match post(&client, url, &body).await {
                    Ok((StatusCode::ACCEPTED, answer)) => {
                        let micros = sent.elapsed().as_micros() as u64;
                        let _ = latency.record(micros);
                        timeline.record(sent.saturating_duration_since(started), micros);
                        if hangs {
                            hanging.fetch_add(1, Ordering::Relaxed);
                        } else if let Some(id) = delivery_id(&answer) {
                            sent_at.push((id, sent));
                        }
                    }
                    Ok((status, _)) => {
                        *errors
                            .entry(format!("http {}", status.as_u16()))
                            .or_default() += 1
                    }
                    Err(kind) => *errors.entry(kind).or_default() += 1,
                }
                progress.inc(1);
            }
            (latency, timeline, errors, sent_at)
        });
    }
    let mut latency = latency_histogram();
    let mut timeline = Timeline::default();
    let mut errors = HashMap::new();
    let mut sent_at = HashMap::with_capacity(presized(count));
    while let Some(joined) = tasks.join_next().await {
        if let Ok((task_latency, task_timeline, task_errors, task_sent)) = joined {
            let _ = latency.add(&task_latency);
            timeline.add(task_timeline);
            for (kind, count) in task_errors {
                *errors.entry(kind).or_default() += count;
            }
            sent_at.extend(task_sent);
        }
    }
    let finished = Instant::now();
    if let Some(pacer) = pacer {
        pacer.finish().await;
    }
    progress.finish_and_clear();
    IngestOutcome {
        started,
        finished,
        accepted: sent_at.len() as u64 + hanging.load(Ordering::Relaxed),
        hanging: hanging.load(Ordering::Relaxed),
        latency,
        timeline,
        errors,
        sent_at,
    }
}

/// Releases sending turns at a steady rate from a thread of its own, which sleeps with the operating
/// system's precision (tens of microseconds) rather than the runtime timer's whole milliseconds.
struct Pacer {
    turns: Arc<tokio::sync::Semaphore>,
    thread: tokio::task::JoinHandle<()>,
}

impl Pacer {
    /// Starts releasing `count` turns, turn `n` at `started + n / rate`, then one more per sender so
    /// that every sender wakes to see that the run is over.
    fn start(started: Instant, rate: f64, count: u64, senders: usize) -> Self {
        let turns = Arc::new(tokio::sync::Semaphore::new(0));
        let releasing = turns.clone();
        let thread = tokio::task::spawn_blocking(move || {
            for index in 0..count {
                let due = started + Duration::from_secs_f64(index as f64 / rate);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                releasing.add_permits(1);
            }
            releasing.add_permits(senders);
        });
        Pacer { turns, thread }
    }

    fn turns(&self) -> Arc<tokio::sync::Semaphore> {
        self.turns.clone()
    }

    async fn finish(self) {
        let _ = self.thread.await;
    }
}

fn delivery_id(answer: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(answer).ok()?;
    value.get("delivery_id")?.as_str().map(str::to_owned)
}

/// Waits until every accepted webhook reached the receiver, or the timeout; returns how many did.
/// Waits until every accepted webhook reached the receiver or ended FAILED on the server (all its
/// attempts failed, possible with `--failure-rate`), or until the timeout. Returns how many were
/// delivered and how many failed for good.
async fn wait_for_deliveries(
    receiver: &Receiver,
    ingest: &IngestOutcome,
    sdk: &Client,
    timeout: Duration,
) -> (u64, u64) {
    let tracked = ingest.sent_at.len() as u64;
    let progress = progress_bar(tracked, "deliver");
    let give_up = Instant::now() + timeout;
    let mut last_progress = (0, Instant::now());
    loop {
        let missing: Vec<&String> = ingest
            .sent_at
            .keys()
            .filter(|id| !receiver.has_delivered(id))
            .collect();
        let delivered = tracked - missing.len() as u64;
        progress.set_position(delivered);
        if delivered != last_progress.0 {
            last_progress = (delivered, Instant::now());
        }
        // Stalled for a while with few left: ask the server whether the rest gave up for good.
        let stalled = last_progress.1.elapsed() > Duration::from_secs(2);
        let failed = if stalled && !missing.is_empty() && missing.len() <= 1000 {
            count_failed(sdk, &missing).await
        } else {
            0
        };
        if missing.len() as u64 == failed || Instant::now() >= give_up {
            progress.finish_and_clear();
            return (delivered, failed);
        }
        receiver.wait_for_more(Duration::from_millis(200)).await;
    }
}

async fn count_failed(sdk: &Client, ids: &[&String]) -> u64 {
    let mut failed = 0;
    for id in ids {
        if let Ok(delivery) = sdk.get_delivery(id.as_str()).await
            && delivery.status() == whd_sdk::DeliveryStatus::Failed
        {
            failed += 1;
        }
    }
    failed
}

fn progress_bar(length: u64, phase: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("the progress template is valid")
            .progress_chars("=> "),
    );
    bar.set_prefix(phase);
    bar
}

/// The benchmark's own webhook receiver.
struct Receiver {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    /// Requests to the backlog's target, which always fails.
    failed_on_purpose: Arc<AtomicU64>,
    /// First arrival of each webhook-id.
    first_seen: Arc<Mutex<HashMap<String, Instant>>>,
    arrived: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
}

impl Receiver {
    /// Starts the receiver; `expected` is how many webhooks the run sends.
    async fn start(
        delay: Duration,
        failure_rate: f64,
        expected: u64,
    ) -> Result<Receiver, CliError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|error| CliError::Bench(format!("cannot start the receiver: {error}")))?;
        let addr = listener
            .local_addr()
            .map_err(|error| CliError::Bench(error.to_string()))?;
        let receiver = Receiver {
            addr,
            requests: Arc::default(),
            failed_on_purpose: Arc::default(),
            // Sized for the whole run up front: growing a map of a hundred thousand ids rehashes them
            // all under the lock, which stalled both of the benchmark's threads for tens of
            // milliseconds, and that stall was counted as whd's ingest latency.
            first_seen: Arc::new(Mutex::new(HashMap::with_capacity(presized(expected)))),
            arrived: Arc::default(),
            stop: CancellationToken::new(),
        };
        let (requests, failed_on_purpose, first_seen, arrived, stop) = (
            receiver.requests.clone(),
            receiver.failed_on_purpose.clone(),
            receiver.first_seen.clone(),
            receiver.arrived.clone(),
            receiver.stop.clone(),
        );
        let failures = Arc::new(AtomicU64::new(0));
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted { Ok((stream, _)) => stream, Err(_) => continue },
                };
                let _ = stream.set_nodelay(true);
                let (requests, failed_on_purpose, first_seen, arrived, failures, stop) = (
                    requests.clone(),
                    failed_on_purpose.clone(),
                    first_seen.clone(),
                    arrived.clone(),
                    failures.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    let handler = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (requests, failed_on_purpose, first_seen, arrived, failures, stop) = (
                            requests.clone(),
                            failed_on_purpose.clone(),
                            first_seen.clone(),
                            arrived.clone(),
                            failures.clone(),
                            stop.clone(),
                        );
                        async move {
                            // The hanging target answers only when the benchmark ends.
                            if request.uri().path() == "/hang" {
                                stop.cancelled().await;
                            }
                            let is_delivery = request.uri().path().starts_with("/hook/");
                            let request_path_fails = request.uri().path() == "/fail";
                            let id = request
                                .headers()
                                .get("webhook-id")
                                .and_then(|value| value.to_str().ok())
                                .map(str::to_owned);
                            let _ = request.into_body().collect().await;
                            let mut status = StatusCode::OK;
                            if request_path_fails {
                                failed_on_purpose.fetch_add(1, Ordering::Relaxed);
                                status = StatusCode::INTERNAL_SERVER_ERROR;
                            } else if is_delivery {
                                let n = requests.fetch_add(1, Ordering::Relaxed);
                                if !delay.is_zero() {
                                    tokio::time::sleep(delay).await;
                                }
                                // Fail an even spread of requests: request n fails when n·rate crosses an integer.
                                let fails = (n as f64 * failure_rate).floor()
                                    != ((n + 1) as f64 * failure_rate).floor();
                                if fails {
                                    failures.fetch_add(1, Ordering::Relaxed);
                                    status = StatusCode::INTERNAL_SERVER_ERROR;
                                } else if let Some(id) = id {
                                    first_seen
                                        .lock()
                                        .expect("never poisoned")
                                        .entry(id)
                                        .or_insert_with(Instant::now);
                                    arrived.notify_waiters();
                                }
                            }
                            let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                            *response.status_mut() = status;
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), handler)
                        .await;
                });
            }
        });
        Ok(receiver)
    }

    fn has_delivered(&self, id: &str) -> bool {
        self.first_seen
            .lock()
            .expect("never poisoned")
            .contains_key(id)
    }

    async fn wait_for_more(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.arrived.notified()).await;
    }

    fn last_first_delivery(&self) -> Option<Instant> {
        self.first_seen
            .lock()
            .expect("never poisoned")
            .values()
            .max()
            .copied()
    }

    fn end_to_end_histogram(&self, sent_at: &HashMap<String, Instant>) -> Histogram<u64> {
        let mut histogram = latency_histogram();
        let first_seen = self.first_seen.lock().expect("never poisoned");
        for (id, sent) in sent_at {
            if let Some(arrived) = first_seen.get(id) {
                let _ =
                    histogram.record(arrived.saturating_duration_since(*sent).as_micros() as u64);
            }
        }
        histogram
    }

    fn stop(&self) {
        self.stop.cancel();
    }
}

/// A `whd` this run started, on a temporary database.
struct StartedServer {
    child: tokio::process::Child,
    grpc_url: String,
    http_url: String,
    _dir: tempfile::TempDir,
}

impl StartedServer {
    async fn start(args: &BenchArgs) -> Result<StartedServer, CliError> {
        let binary = args.whd.clone().unwrap_or_else(default_whd_binary);
        let dir = tempfile::tempdir().map_err(|error| {
            CliError::Bench(format!("cannot create a temporary directory: {error}"))
        })?;
        let mut command = tokio::process::Command::new(&binary);
        command
            .arg("--database-url")
            .arg(dir.path().join("whd.db"))
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args([
                "--allow-target-cidr",
                "127.0.0.0/8",
                "--retry-schedule",
                // The backlog must stay pending for the whole run; the measured webhooks' retries
                // (with --failure-rate) must come quickly.
                if args.backlog > 0 {
                    "1h"
                } else {
                    "100ms,200ms,500ms,1s,2s"
                },
                "--retry-jitter",
                "0",
            ])
            .args(&args.server_args);
        let (child, addresses) = server_process::start(command, false, Duration::from_secs(30))
            .await
            .map_err(|error| {
                let hint = match error {
                    server_process::StartError::Spawn(_) => " (use --whd PATH)",
                    _ => "",
                };
                CliError::Bench(format!("{}: {error}{hint}", binary.display()))
            })?;
        Ok(StartedServer {
            child,
            grpc_url: format!("http://{}", addresses.grpc),
            http_url: format!("http://{}", addresses.http),
            _dir: dir,
        })
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// VmHWM of the process: the most memory it has had resident.
    fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SIGTERM for a graceful drain; the child is killed on drop if it does not exit.
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
    }
}

fn default_whd_binary() -> PathBuf {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("whd")));
    match sibling {
        Some(path) if path.exists() => path,
        _ => PathBuf::from("whd"),
    }
}

/// `whd 80 µs  bench 55 µs  (steal 0.11 s)`, each part only where it was measured.
fn cpu_row(report: &BenchReport) -> String {
    let micros = |value: Option<f64>| value.map_or("-".to_owned(), |us| format!("{us:.0} µs"));
    let mut row = format!(
        "whd {}  bench {}",
        micros(report.server_cpu_us_per_webhook),
        micros(report.bench_cpu_us_per_webhook)
    );
    if let Some(steal) = report.cpu_steal_s {
        row.push_str(&format!("  (steal {steal:.2} s)"));
    }
    row
}

fn print_report(
    report: &BenchReport,
    format: OutputFormat,
    out: &mut (dyn std::io::Write + Send),
) -> Result<(), CliError> {
    if format == OutputFormat::Json {
        let json = serde_json::to_string_pretty(report).expect("the report serialises");
        writeln!(out, "{json}").map_err(CliError::Output)?;
        return Ok(());
    }
    let ratio = |value: Option<f64>| {
        value.map_or("-".to_owned(), |ratio| {
            format!("{:.0}% of ceiling", ratio * 100.0)
        })
    };
    let ms = |p: &Percentiles| {
        format!(
            "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            p.p50, p.p90, p.p99, p.max
        )
    };
    let rows = [
        (
            "webhooks",
            format!(
                "{} × {} B over {} subscription(s) and {} node(s), concurrency {}{}",
                report.count,
                report.payload_size,
                report.subscriptions,
                report.nodes,
                report.concurrency,
                report
                    .rate
                    .map_or(String::new(), |rate| format!(", paced at {rate:.0}/s")),
            ),
        ),
        ("backlog", format!("{} pending retries", report.backlog)),
        (
            "ceiling",
            report
                .ceiling_rps
                .map_or("-".to_owned(), |rps| format!("{rps:.0} req/s")),
        ),
        (
            "ingest",
            format!(
                "{:.0} req/s ({})",
                report.ingest_rps,
                ratio(report.ingest_ratio)
            ),
        ),
        ("ingest latency", ms(&report.ingest_latency_ms)),
        ("slowest 100 ms", slowest_window(&report.ingest_timeline)),
        (
            "delivery",
            format!(
                "{:.0} deliveries/s ({})",
                report.delivery_rps,
                ratio(report.delivery_ratio)
            ),
        ),
        ("end-to-end", ms(&report.end_to_end_latency_ms)),
        (
            "delivered",
            format!(
                "{} of {} accepted, {} failed for good ({} receiver requests)",
                report.delivered,
                report.accepted,
                report.failed_deliveries,
                report.receiver_requests
            ),
        ),
        (
            "errors",
            if report.errors.is_empty() {
                "none".to_owned()
            } else {
                format!("{:?}", report.errors)
            },
        ),
        (
            "server peak RSS",
            report
                .server_peak_rss_mib
                .map_or("-".to_owned(), |mib| format!("{mib:.1} MiB")),
        ),
        ("cpu per webhook", cpu_row(report)),
    ];
    for (label, value) in rows {
        writeln!(out, "{label:>16}  {value}").map_err(CliError::Output)?;
    }
    Ok(())
}
