//! A transaction PostgreSQL aborts to break a deadlock is told apart from other failures, so that a
//! group commit caught in one runs again instead of failing the webhooks in it.

use sqlx::{Postgres, Transaction};
use whd_e2e::{Backend, TestDatabase};
use whd_server::store::StoreError;

use crate::{cluster_turn, connect};

async fn set(tx: &mut Transaction<'static, Postgres>, id: i32) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE counters SET n = n + 1 WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

#[tokio::test]
async fn the_victim_of_a_deadlock_is_a_conflict_worth_running_again_and_other_errors_are_not() {
    let Some(_turn) = cluster_turn().await else {
        return;
    };
    let database = TestDatabase::create_on(Backend::Postgres).await;
    let pool = connect(&database.url()).await;
    sqlx::query("CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO counters VALUES (1, 0), (2, 0)")
        .execute(&pool)
        .await
        .unwrap();

    // Two transactions take one row each, then each waits for the other's: PostgreSQL aborts one.
    let mut first = pool.begin().await.unwrap();
    let mut second = pool.begin().await.unwrap();
    set(&mut first, 1).await.unwrap();
    set(&mut second, 2).await.unwrap();
    let (a, b) = tokio::join!(set(&mut first, 2), set(&mut second, 1));
    let victim = match (a, b) {
        (Err(error), Ok(())) | (Ok(()), Err(error)) => StoreError::from(error),
        other => panic!("exactly one transaction is aborted: {other:?}"),
    };
    assert!(victim.is_conflict(), "{victim:?}");
    assert!(
        matches!(victim, StoreError::Unavailable(_)),
        "a conflict that outlasts the retries is answered as unavailable, not as an internal error"
    );
    drop((first, second));

    let duplicate = sqlx::query("INSERT INTO counters VALUES (1, 0)")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(!StoreError::from(duplicate).is_conflict());
}
