//! A backlog of a million pending tasks: the claim finds the due ones through the `deliveries_due`
//! index instead of reading the table, and a node delivers them.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use whd_e2e::{Backend, Receiver, TestDatabase, TestServer, eventually};

use crate::{arrivals, cluster_turn, connect, deliveries_with_status, subscribe};

const BACKLOG: i64 = 1_000_000;

/// Tasks of the backlog that are due now; the others come due tomorrow.
const DUE: i64 = 1_000;

/// The claim of `claim_due` in the PostgreSQL store, with its parameters filled in: the lease owner,
/// a 7 s lease and a batch of 256.
const CLAIM: &str = "UPDATE deliveries SET lease_owner = 'explain', lease_token = lease_token + 1, \
     next_attempt_at = (extract(epoch from clock_timestamp()) * 1000)::bigint + 7000 \
     WHERE id IN (SELECT id FROM deliveries WHERE status = 1 \
     AND next_attempt_at <= (SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint) \
     ORDER BY next_attempt_at LIMIT 256 FOR UPDATE SKIP LOCKED) \
     RETURNING id, subscription_id, event_type, payload, attempt_count, lease_token, next_attempt_at";

/// The plan of `statement`, one line per row of EXPLAIN.
async fn plan(db: &mut PgConnection, explain: &str, statement: &str) -> String {
    let lines: Vec<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{explain} {statement}")))
            .fetch_all(db)
            .await
            .expect("the statement can be explained");
    lines.join("\n")
}

/// Runs the claim under EXPLAIN ANALYZE and rolls it back; returns the plan with its timings.
async fn analyzed_claim(db: &PgPool) -> String {
    let mut tx = db.begin().await.expect("a transaction starts");
    let analyzed = plan(&mut tx, "EXPLAIN ANALYZE", CLAIM).await;
    tx.rollback().await.expect("the claim is rolled back");
    analyzed
}

fn execution_time(analyzed: &str) -> &str {
    analyzed
        .lines()
        .find_map(|line| line.trim().strip_prefix("Execution Time: "))
        .unwrap_or("unknown")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_claims_the_due_tasks_of_a_million_task_backlog_through_the_due_index() {
    let Some(_turn) = cluster_turn().await else {
        return;
    };
    let database = TestDatabase::create_on(Backend::Postgres).await;
    let receiver = Receiver::start(200).await;
    // A node creates the tables and the subscription the backlog refers to, then leaves.
    let setup = TestServer::start_on(&database.url(), &[]).await;
    let subscription = subscribe(&setup.client, &receiver.url).await;
    setup.stop().await;

    let db = connect(&database.url()).await;
    let inserted = sqlx::query(
        "INSERT INTO deliveries (id, subscription_id, payload, status, next_attempt_at, created_at) \
         SELECT 'msg_' || lpad(to_hex(n), 32, '0'), $1, convert_to('{\"n\": ' || n || '}', 'UTF8'), 1, \
                CASE WHEN n <= $2 THEN now_ms - 1000 ELSE now_ms + 86400000 END, now_ms \
         FROM generate_series(1, $3::bigint) AS n, \
              (SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint AS now_ms) AS clock",
    )
    .bind(&subscription.id)
    .bind(DUE)
    .bind(BACKLOG)
    .execute(&db)
    .await
    .expect("the backlog is inserted")
    .rows_affected();
    assert_eq!(inserted, BACKLOG as u64);
    sqlx::query("ANALYZE deliveries")
        .execute(&db)
        .await
        .expect("the table is analyzed");

    let mut connection = db.acquire().await.expect("a connection is free");
    let claim_plan = plan(&mut connection, "EXPLAIN", CLAIM).await;
    drop(connection);
    let analyzed = analyzed_claim(&db).await;
    println!(
        "claim of 256 from {BACKLOG} pending, {DUE} due: execution time {}\n{analyzed}",
        execution_time(&analyzed)
    );
    assert!(
        claim_plan.contains("Index Scan using deliveries_due on deliveries"),
        "{claim_plan}"
    );
    assert!(
        !claim_plan.contains("Seq Scan on deliveries"),
        "{claim_plan}"
    );

    let node = TestServer::start_on(&database.url(), &["--node-id", "node-a"]).await;
    eventually(
        Duration::from_secs(120),
        "the due tasks are delivered",
        || async { (receiver.count() >= DUE as usize).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "the due tasks are recorded as DELIVERED",
        || async { (deliveries_with_status(&db, 2).await? == DUE).then_some(()) },
    )
    .await;
    node.stop().await;

    let arrived = arrivals(&receiver);
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 1")
        .fetch_one(&db)
        .await
        .expect("the deliveries can be read");
    let nothing_due = analyzed_claim(&db).await;
    println!(
        "delivered {} distinct of {DUE} due ({} requests); {pending} still pending; \
         claim with nothing due: execution time {}\n{nothing_due}",
        arrived.len(),
        receiver.count(),
        execution_time(&nothing_due)
    );
    let due_ids: HashSet<String> = (1..=DUE).map(|n| format!("msg_{n:032x}")).collect();
    let arrived_ids: HashSet<String> = arrived.keys().cloned().collect();
    assert_eq!(arrived_ids, due_ids, "exactly the due tasks were delivered");
    assert_eq!(pending, BACKLOG - DUE);

    // A million rows are worth removing now rather than at the next run of tests/run.
    if let TestDatabase::Postgres { schema, .. } = &database {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&db)
            .await
            .expect("the test schema can be dropped");
    }
}
