//! `whctl bench` against a running server: a smoke test of the load generator that checks counts
//! only. Speed is measured by running the benchmark, never asserted here.

use whd_e2e::TestServer;

#[tokio::test]
async fn bench_delivers_every_webhook_it_sends_and_reports_counts_as_json() {
    let server = TestServer::start().await;

    let (result, stdout) = server
        .whctl(&[
            "bench",
            "--external",
            "-n",
            "300",
            "-c",
            "8",
            "--subscriptions",
            "3",
            "--payload-size",
            "256",
            "-o",
            "json",
        ])
        .await;

    result.expect("the benchmark completes");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("the report is JSON");
    assert_eq!(report["count"], 300);
    assert_eq!(report["accepted"], 300);
    assert_eq!(report["delivered"], 300);
    assert_eq!(report["receiver_requests"], 300);
    assert_eq!(report["errors"], serde_json::json!({}));
    assert!(
        report["ceiling_rps"].as_f64().is_some_and(|rps| rps > 0.0),
        "{report}"
    );
    // CPU time is read from /proc: the benchmark's own always, a server's only if it started it.
    assert!(report["bench_cpu_us_per_webhook"].is_number(), "{report}");
    assert!(report["server_cpu_us_per_webhook"].is_null(), "{report}");
    assert!(report["cpu_steal_s"].is_number(), "{report}");
    server.stop().await;
}

#[tokio::test]
async fn bench_with_failures_and_a_hanging_target_still_delivers_the_others() {
    let server = TestServer::start().await;

    let (result, stdout) = server
        .whctl(&[
            "bench",
            "--external",
            "--no-ceiling",
            "-n",
            "200",
            "-c",
            "8",
            "--failure-rate",
            "0.2",
            "--hang-share",
            "0.1",
            "-o",
            "json",
        ])
        .await;

    result.expect("the benchmark completes");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("the report is JSON");
    assert_eq!(report["accepted"], 200, "{report}");
    let hanging = report["hanging"].as_u64().unwrap();
    let delivered = report["delivered"].as_u64().unwrap();
    let failed = report["failed_deliveries"].as_u64().unwrap();
    assert!(
        (19..=21).contains(&hanging),
        "about a tenth went to the hanging target: {report}"
    );
    assert_eq!(
        delivered + failed + hanging,
        200,
        "every other webhook was delivered or ran out of attempts: {report}"
    );
    assert!(
        delivered >= 150,
        "most webhooks get through a 20% failure rate in three attempts: {report}"
    );
    assert!(
        report["receiver_requests"].as_u64().unwrap() > delivered,
        "failed attempts were retried: {report}"
    );
    server.stop().await;
}

#[tokio::test]
async fn bench_with_a_backlog_a_rate_and_two_ingest_urls_delivers_every_measured_webhook() {
    // A long retry schedule keeps the backlog pending through the measurement.
    let server = TestServer::start_with(&["--retry-schedule", "1h"]).await;
    let also = server.http_url.clone();

    let (result, stdout) = server
        .whctl(&[
            "bench",
            "--external",
            "--no-ceiling",
            "-n",
            "100",
            "-c",
            "4",
            "--rate",
            "200",
            "--backlog",
            "40",
            "--also-ingest-url",
            &also,
            "-o",
            "json",
        ])
        .await;

    result.expect("the benchmark completes");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("the report is JSON");
    assert_eq!(report["backlog"], 40, "{report}");
    assert_eq!(report["nodes"], 2, "{report}");
    assert_eq!(report["rate"], 200.0, "{report}");
    assert_eq!(report["accepted"], 100, "{report}");
    assert_eq!(report["delivered"], 100, "{report}");
    assert_eq!(
        report["receiver_requests"], 100,
        "the backlog's failing target is not counted as a delivery: {report}"
    );
    // Paced, webhook n is due at n / 200 s, so each 100 ms window of the timeline holds 20.
    let per_window: Vec<u64> = report["ingest_timeline"]
        .as_array()
        .expect("a timeline")
        .iter()
        .map(|window| window["requests"].as_u64().unwrap())
        .collect();
    assert_eq!(per_window, [20; 5], "{report}");
    server.stop().await;
}

#[tokio::test]
async fn bench_that_starts_its_own_server_delivers_every_webhook_and_reports_that_servers_resources()
 {
    use clap::Parser;
    let cli = whctl::Cli::try_parse_from([
        "whctl",
        "bench",
        "--whd",
        env!("CARGO_BIN_EXE_whd-test-server"),
        "--no-ceiling",
        "-n",
        "300",
        "-c",
        "8",
        "--subscriptions",
        "2",
        "-o",
        "json",
    ])
    .expect("the command line parses");
    let mut out = Vec::new();
    let result = whctl::run_with_output(cli, &mut out)
        .await
        .map_err(|error| whctl::error_message(&error));

    result.expect("the benchmark completes");
    let report: serde_json::Value = serde_json::from_slice(&out).expect("the report is JSON");
    assert_eq!(report["accepted"], 300, "{report}");
    assert_eq!(report["delivered"], 300, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert!(
        report["server_peak_rss_mib"]
            .as_f64()
            .is_some_and(|mib| mib > 0.0),
        "the started server's memory is read from /proc: {report}"
    );
    assert!(
        report["server_cpu_us_per_webhook"].is_number(),
        "and so is its CPU time: {report}"
    );
}
