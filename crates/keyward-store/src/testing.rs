//! Support for test suites that run against a real PostgreSQL: each test gets a database of
//! its own, dropped when the test ends (even when it panics).

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{Connection, Executor, PgConnection};

/// The variable that names the PostgreSQL server tests may use, e.g.
/// `postgres://postgres@127.0.0.1:5432/test`.
pub const DATABASE_URL_VARIABLE: &str = "KEYWARD_TEST_DATABASE_URL";

/// Selects the backend of a test run: `KEYWARD_TEST_BACKEND=postgres`.
pub const BACKEND_VARIABLE: &str = "KEYWARD_TEST_BACKEND";

/// The database URL for one test: a fresh PostgreSQL database when the run asks for
/// PostgreSQL (kept alive by the returned guard), otherwise SQLite inside `dir`.
///
/// # Panics
/// When the run asks for PostgreSQL without naming a server, or the database cannot be made:
/// a test run must fail loudly rather than quietly test something else.
pub async fn fresh_database(dir: &std::path::Path) -> (String, Option<TestDatabase>) {
    match std::env::var(BACKEND_VARIABLE).as_deref() {
        Ok("postgres") => {
            let admin_url = std::env::var(DATABASE_URL_VARIABLE).unwrap_or_else(|_| {
                panic!("{BACKEND_VARIABLE}=postgres needs {DATABASE_URL_VARIABLE}")
            });
            let database = TestDatabase::create(&admin_url)
                .await
                .unwrap_or_else(|error| panic!("cannot create a test database: {error}"));
            (database.url.clone(), Some(database))
        }
        Ok("sqlite") | Err(_) => (crate::SqlStore::sqlite_url(dir), None),
        Ok(other) => panic!("unknown {BACKEND_VARIABLE} {other:?}"),
    }
}

/// A database created for one test.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// The database's name on the server.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates a fresh, empty database on the server `admin_url` points at.
    pub async fn create(admin_url: &str) -> Result<Self, sqlx::Error> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let name = format!(
            "keyward_test_{}_{}_{}",
            std::process::id(),
            nanos,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = PgConnection::connect(admin_url).await?;
        admin
            .execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await?;
        admin.close().await?;
        let (server, _) = admin_url
            .split('?')
            .next()
            .and_then(|url| url.rsplit_once('/'))
            .ok_or_else(|| sqlx::Error::Configuration("database URL has no path".into()))?;
        Ok(Self {
            url: format!("{server}/{name}"),
            admin_url: admin_url.to_owned(),
            name,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside async tests; a thread with its own runtime avoids blocking theirs.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await?;
                admin
                    .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                    .await?;
                Ok::<_, sqlx::Error>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
