//! A small pool of PostgreSQL connections, each with its own cache of prepared
//! statements (deadpool-postgres is not among the packages this project may use, so the
//! pool is ours: a bounded stack of idle connections behind a semaphore).
//!
//! Every connection's driver task runs on the store's own runtime. A connection that the
//! server closed (restart, `pg_terminate_backend`) is not given back to the pool; the
//! next caller opens a new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

/// One connection and the statements prepared on it.
pub(crate) struct Conn {
    pub client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl Conn {
    /// Connects to `url`; the connection's driver runs as a task of the current runtime.
    pub async fn connect(url: &str) -> Result<Self, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PostgreSQL connection ended");
            }
        });
        Ok(Self {
            client,
            statements: HashMap::new(),
        })
    }

    /// The prepared form of `sql` on this connection (prepared once).
    pub async fn prepare(&mut self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    pub async fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.prepare(sql).await?;
        self.client.query(&statement, params).await
    }

    pub async fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let statement = self.prepare(sql).await?;
        self.client.query_opt(&statement, params).await
    }

    pub async fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = self.prepare(sql).await?;
        self.client.execute(&statement, params).await
    }

    /// `BEGIN` under READ COMMITTED (PostgreSQL's default, named so it stays so).
    pub async fn begin(&mut self) -> Result<(), tokio_postgres::Error> {
        self.client
            .batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
    }

    /// Commits when `result` is `Ok`, rolls back otherwise; a failed commit is the error.
    pub async fn finish<T, E: From<tokio_postgres::Error>>(
        &mut self,
        result: Result<T, E>,
    ) -> Result<T, E> {
        match result {
            Ok(value) => {
                self.client.batch_execute("COMMIT").await?;
                Ok(value)
            }
            Err(e) => {
                if let Err(rollback) = self.client.batch_execute("ROLLBACK").await {
                    tracing::debug!(error = %rollback, "rollback failed (connection gone?)");
                }
                Err(e)
            }
        }
    }
}

/// A bounded pool of connections to one database.
pub(crate) struct Pool {
    url: String,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
}

/// A connection taken from the pool; given back when dropped (unless it is closed).
pub(crate) struct Pooled {
    conn: Option<Conn>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    pub fn new(url: &str, size: usize) -> Arc<Self> {
        Arc::new(Self {
            url: url.to_owned(),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size.max(1))),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// An idle connection, or a new one; waits while `size` are in use.
    pub async fn get(self: &Arc<Self>) -> Result<Pooled, tokio_postgres::Error> {
        // The semaphore is never closed, so acquiring only waits.
        let permit = loop {
            if let Ok(p) = Arc::clone(&self.permits).acquire_owned().await {
                break p;
            }
        };
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match idle {
            Some(conn) if !conn.client.is_closed() => conn,
            _ => Conn::connect(&self.url).await?,
        };
        Ok(Pooled {
            conn: Some(conn),
            pool: Arc::clone(self),
            _permit: permit,
        })
    }
}

impl std::ops::Deref for Pooled {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        // Set at creation, taken only in drop.
        self.conn
            .as_ref()
            .expect("pooled connection present until drop")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .expect("pooled connection present until drop")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !conn.client.is_closed() {
                if let Ok(mut idle) = self.pool.idle.lock() {
                    idle.push(conn);
                }
            }
        }
    }
}
