//! Throwaway server databases for tests: each test gets its own uniquely named database on
//! the PostgreSQL or MySQL/MariaDB server named by `LOGMESH_TEST_POSTGRES_URL` or
//! `LOGMESH_TEST_MYSQL_URL` (admin URLs, allowed to create and drop databases), dropped again
//! when the [`TestDatabase`] guard is dropped. `scripts/test.sh` starts the servers and sets
//! the variables; a test that needs one says so first with [`crate::needs!`], so it is reported
//! skipped where the variable is missing (and fails under `LOGMESH_TEST_ALL_TIERS`).

use sqlx::{AssertSqlSafe, Connection};
use std::time::Duration;

/// How long creating or dropping a test database may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Postgres,
    Mysql,
}

impl Server {
    fn variable(self) -> &'static str {
        match self {
            Server::Postgres => "LOGMESH_TEST_POSTGRES_URL",
            Server::Mysql => "LOGMESH_TEST_MYSQL_URL",
        }
    }

    /// The admin URL from the environment; panics with what to do when it is missing.
    fn admin_url(self) -> String {
        let variable = self.variable();
        match std::env::var(variable) {
            Ok(url) if !url.is_empty() => url,
            _ => panic!(
                "{variable} is not set: run the tests through scripts/test.sh, which starts \
                 PostgreSQL and MariaDB and sets it (or export it yourself, e.g. \
                 LOGMESH_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres, \
                 LOGMESH_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/mysql)"
            ),
        }
    }

    async fn admin(self, admin_url: &str, sql: String) -> Result<(), sqlx::Error> {
        match self {
            Server::Postgres => {
                let mut connection = sqlx::PgConnection::connect(admin_url).await?;
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut connection)
                    .await?;
                connection.close().await
            }
            Server::Mysql => {
                let mut connection = sqlx::MySqlConnection::connect(admin_url).await?;
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut connection)
                    .await?;
                connection.close().await
            }
        }
    }
}

/// A database that exists for one test.
pub struct TestDatabase {
    server: Server,
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates `logmesh_t_<uuid>` on `server`.
    pub async fn create(server: Server) -> TestDatabase {
        let admin_url = server.admin_url();
        let name = format!("logmesh_t_{}", uuid::Uuid::now_v7().simple());
        let created = tokio::time::timeout(
            ADMIN_TIMEOUT,
            server.admin(&admin_url, format!("CREATE DATABASE {name}")),
        )
        .await;
        match created {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!(
                "cannot create a test database through {} ({}): {error}",
                server.variable(),
                logmesh::store::redact_url(&admin_url)
            ),
            Err(_) => panic!(
                "creating a test database through {} ({}) took over {ADMIN_TIMEOUT:?}",
                server.variable(),
                logmesh::store::redact_url(&admin_url)
            ),
        }
        let url = with_database(&admin_url, &name);
        TestDatabase {
            server,
            admin_url,
            name,
            url,
        }
    }

    /// The database's URL, with the admin URL's credentials and options.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    /// Best effort: a database left behind by a crashed run is harmless (unique name).
    fn drop(&mut self) {
        let sql = match self.server {
            // FORCE ends sessions a pool may still hold open.
            Server::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            Server::Mysql => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        let (server, admin_url) = (self.server, self.admin_url.clone());
        // Drop cannot await, and the test's runtime may be single-threaded: use a thread
        // with its own runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            // The timer must be created inside the runtime, hence the async block.
            runtime
                .block_on(async {
                    tokio::time::timeout(ADMIN_TIMEOUT, server.admin(&admin_url, sql)).await
                })
                .ok()?
                .ok()
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}

/// `admin_url` with its database (the path) replaced by `name`; query options are kept.
fn with_database(admin_url: &str, name: &str) -> String {
    let (scheme, rest) = admin_url
        .split_once("://")
        .expect("a database URL has a scheme");
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let authority = rest
        .split_once('/')
        .map_or(rest, |(authority, _)| authority);
    match query {
        Some(query) => format!("{scheme}://{authority}/{name}?{query}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}
