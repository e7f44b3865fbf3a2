//! A fresh database per test, on the backend the suite runs against: SQLite by default, PostgreSQL
//! when `WHD_TEST_BACKEND=postgres` (then `WHD_TEST_POSTGRES_URL` names the server). Each PostgreSQL
//! test gets a schema of its own, so tests run in parallel without seeing each other.

use std::path::PathBuf;

use sqlx::Connection;

/// Which backend the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file in a temporary directory.
    Sqlite,
    /// A schema in the PostgreSQL database of `WHD_TEST_POSTGRES_URL`.
    Postgres,
}

impl Backend {
    /// The backend chosen by `WHD_TEST_BACKEND` (`sqlite`, the default, or `postgres`).
    pub fn from_env() -> Backend {
        match std::env::var("WHD_TEST_BACKEND").as_deref() {
            Ok("postgres") => Backend::Postgres,
            _ => Backend::Sqlite,
        }
    }
}

/// The PostgreSQL server for tests, if one is configured.
pub fn postgres_url() -> Option<String> {
    std::env::var("WHD_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty())
}

/// A database that exists for one test.
#[derive(Debug)]
pub enum TestDatabase {
    /// An SQLite file.
    Sqlite {
        /// The file.
        path: PathBuf,
        /// Removes the directory when dropped.
        dir: tempfile::TempDir,
    },
    /// A PostgreSQL schema.
    Postgres {
        /// URL whose connections use the schema.
        url: String,
        /// The schema's name.
        schema: String,
    },
    /// A database created elsewhere, e.g. one schema that several servers share; nothing is removed
    /// with it.
    External {
        /// The `--database-url`.
        url: String,
    },
}

impl TestDatabase {
    /// A new, empty database on the suite's backend.
    pub async fn create() -> TestDatabase {
        TestDatabase::create_on(Backend::from_env()).await
    }

    /// A new, empty database on `backend`.
    pub async fn create_on(backend: Backend) -> TestDatabase {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory can be created");
                TestDatabase::Sqlite {
                    path: dir.path().join("whd.db"),
                    dir,
                }
            }
            Backend::Postgres => {
                let server =
                    postgres_url().expect("WHD_TEST_BACKEND=postgres needs WHD_TEST_POSTGRES_URL");
                let schema = format!("whd_test_{}", uuid_like());
                let mut admin = sqlx::PgConnection::connect(&server)
                    .await
                    .expect("the test PostgreSQL server answers");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&mut admin)
                    .await
                    .expect("a test schema can be created");
                let separator = if server.contains('?') { '&' } else { '?' };
                let url = format!("{server}{separator}options[search_path]={schema}");
                TestDatabase::Postgres { url, schema }
            }
        }
    }

    /// The `--database-url` of this database.
    pub fn url(&self) -> String {
        match self {
            TestDatabase::Sqlite { path, .. } => {
                path.to_str().expect("temporary paths are UTF-8").to_owned()
            }
            TestDatabase::Postgres { url, .. } | TestDatabase::External { url } => url.clone(),
        }
    }
}

/// 32 hex digits from the clock and the process, unique enough for schema names.
fn uuid_like() -> String {
    use std::hash::{BuildHasher, RandomState};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let random = RandomState::new().hash_one(nanos);
    format!(
        "{:016x}{:016x}",
        random,
        nanos as u64 ^ u64::from(std::process::id())
    )
}
