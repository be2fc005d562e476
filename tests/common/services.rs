//! Throwaway NATS, PostgreSQL and MariaDB servers that a test owns: it can stop one (to see
//! what logmesh does without it) and start it again on the same port with its data intact.
//!
//! Binaries come from the environment that `scripts/test.sh` (through `scripts/services.sh`)
//! sets up: `LOGMESH_TEST_NATS_SERVER` (and `LOGMESH_TEST_NATS_SERVER_MINIMUM`, the oldest
//! supported release), `LOGMESH_TEST_PG_BIN`, `LOGMESH_TEST_MARIADB_INSTALL_DB` and
//! `LOGMESH_TEST_MARIADBD`. Tests that only need *a* server use the shared ones in
//! `LOGMESH_TEST_NATS_URL`, `LOGMESH_TEST_POSTGRES_URL` and `LOGMESH_TEST_MYSQL_URL` instead.
//!
//! Processes are plain `std::process` children. Readiness is a real handshake or query, polled
//! with a deadline. [`NatsServer`] is fully blocking (it is ready in milliseconds); the
//! databases' `start` and `start_again` are async so that a `#[tokio::test]`'s other tasks (an
//! in-process node, say) keep running while initdb or recovery takes its seconds. `stop` and
//! `Drop` are blocking and quick everywhere.

use sqlx::Connection;
use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a server may take to answer after it was started.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How often readiness is re-checked.
const READY_POLL: Duration = Duration::from_millis(50);
/// How long one readiness attempt (a connect and a query) may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// The suite's shared NATS (JetStream on), from `LOGMESH_TEST_NATS_URL`.
pub fn nats_url() -> String {
    std::env::var("LOGMESH_TEST_NATS_URL")
        .expect("LOGMESH_TEST_NATS_URL is not set: run the tests through scripts/test.sh")
}

/// Debian's rsyslogd (`LOGMESH_TEST_RSYSLOGD`) in the foreground with `config`, written to
/// `dir/rsyslog.conf` (its pid file beside it, never the system's); killed when dropped.
pub fn start_rsyslogd(dir: &std::path::Path, config: &str) -> tokio::process::Child {
    let path = dir.join("rsyslog.conf");
    std::fs::write(&path, config).expect("write rsyslog.conf");
    tokio::process::Command::new(
        std::env::var("LOGMESH_TEST_RSYSLOGD").expect("LOGMESH_TEST_RSYSLOGD is set"),
    )
    .arg("-n")
    .arg("-f")
    .arg(&path)
    .arg("-i")
    .arg(dir.join("rsyslogd.pid"))
    .kill_on_drop(true)
    .spawn()
    .expect("start rsyslogd")
}

/// A port on 127.0.0.1 that a server can bind right now, and that this process has not
/// handed out before.
///
/// Ports come from below the kernel's ephemeral range (`ip_local_port_range`), never from
/// inside it: a port from inside it can be taken, as its local port, by any outgoing
/// connection (of this or any test running beside it) in the moment between this check and
/// the bind of the server the test starts, which then fails with "address in use".
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let (floor, ceiling) = port_pool();
    let span = u32::from(ceiling - floor);
    // Start where another process (a second test binary, say) is unlikely to start.
    let start = std::process::id().wrapping_mul(7919) % span;
    let mut handed_out = HANDED_OUT.lock().unwrap();
    for step in 0..span {
        let port = floor + ((start + step) % span) as u16;
        if !handed_out.contains(&port) && bindable(port) {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free port left in {floor}..{ceiling}");
}

/// Whether a server (which sets `SO_REUSEADDR`, as every one the tests start does) could bind
/// 127.0.0.1:`port` now: nothing listens there, and nothing else holds it.
///
/// The probe binds but never listens. A listening probe, closed at once, could still hold the
/// port for a moment: a process forked by another test's thread in that instant inherits the
/// socket until its exec closes it, and the server meant for the port then finds it taken.
/// An inherited socket that is only bound, with `SO_REUSEADDR`, blocks no such server.
fn bindable(port: u16) -> bool {
    let probe = || -> std::io::Result<()> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    };
    probe().is_ok()
}

/// The ports [`free_port`] hands out: the 16,384 (at most) below the ephemeral range.
fn port_pool() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    assert!(
        ephemeral_low > 2048,
        "the ephemeral port range starts at {ephemeral_low}: too low to leave ports for test servers"
    );
    (ephemeral_low.saturating_sub(16384).max(1024), ephemeral_low)
}

/// The path in environment variable `name`; panics with a hint when it is not set.
fn env_path(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(value) if !value.is_empty() => PathBuf::from(value),
        _ => panic!(
            "{name} is not set: run the tests through scripts/test.sh, which installs and starts \
             the services they need and exports where they are (scripts/services.sh)"
        ),
    }
}

/// The system user a server runs as when the tests run as root (postgres and mariadbd refuse
/// to run as root); `None` when not root: then servers run as the current user.
#[derive(Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

fn run_as(user: &str) -> Option<RunAs> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = CString::new(user).expect("user name");
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: getpwnam_r writes only into `pwd` and `buf`, both live and sized as passed.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    assert!(
        rc == 0 && !found.is_null(),
        "the tests run as root, and there is no `{user}` user to run the server as \
         (installing the Debian package creates it)"
    );
    Some(RunAs {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

impl RunAs {
    fn apply(user: Option<RunAs>, command: &mut Command) {
        if let Some(user) = user {
            command.uid(user.uid).gid(user.gid);
        }
    }

    fn own(user: Option<RunAs>, path: &Path) {
        if let Some(user) = user {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }
}

/// The last lines of a log file, for panic messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Opens `path` for appending, as stdout and stderr of a server.
fn log_stdio(path: &Path) -> (Stdio, Stdio) {
    let file = File::options()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let copy = file.try_clone().expect("clone the log file handle");
    (Stdio::from(file), Stdio::from(copy))
}

fn spawn_logged(command: &mut Command, log: &Path) -> Child {
    let (stdout, stderr) = log_stdio(log);
    command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", command.get_program()))
}

/// Panics unless `child` is still running.
fn assert_running(what: &str, child: &mut Child, log: &Path) {
    if let Some(status) = child.try_wait().expect("try_wait") {
        panic!(
            "{what} exited ({status}) before it was ready; {}:\n{}",
            log.display(),
            log_tail(log)
        );
    }
}

/// Runs a setup command (initdb, mariadb-install-db) on a blocking thread; panics with its
/// output when it fails.
async fn run_setup(what: &'static str, mut command: Command) {
    let output = tokio::task::spawn_blocking(move || command.stdin(Stdio::null()).output())
        .await
        .expect("setup thread")
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Polls `attempt` until it succeeds, while `child` runs; panics after [`READY_DEADLINE`] with
/// the last error and the log's tail.
async fn wait_ready<F, Fut>(what: &str, child: &mut Child, log: &Path, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let until = Instant::now() + READY_DEADLINE;
    loop {
        let error = match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt()).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(_) => format!("no answer within {ATTEMPT_TIMEOUT:?}"),
        };
        assert_running(what, child, log);
        assert!(
            Instant::now() < until,
            "{what} was not ready after {READY_DEADLINE:?} (last error: {error}); {}:\n{}",
            log.display(),
            log_tail(log)
        );
        tokio::time::sleep(READY_POLL).await;
    }
}

/// Kills `child` with `signal` and reaps it.
fn signal_and_wait(child: &mut Child, signal: libc::c_int) {
    if child.try_wait().ok().flatten().is_none() {
        // SAFETY: plain kill(2) on a child we spawned and have not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    }
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------------

/// A nats-server with JetStream, its store in a temporary directory.
pub struct NatsServer {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
    /// The environment variable naming the binary.
    binary: &'static str,
}

impl NatsServer {
    /// Starts a server on a free port and waits until it greets clients.
    pub fn start() -> NatsServer {
        NatsServer::start_binary("LOGMESH_TEST_NATS_SERVER")
    }

    /// Starts the oldest server release logmesh supports (2.10).
    pub fn start_minimum() -> NatsServer {
        NatsServer::start_binary("LOGMESH_TEST_NATS_SERVER_MINIMUM")
    }

    /// Starts a release older than logmesh supports (Debian bookworm's 2.9), if the machine
    /// has one (`scripts/services.sh` says which).
    pub fn start_too_old() -> Option<NatsServer> {
        let binary = std::env::var("LOGMESH_TEST_NATS_SERVER_TOO_OLD").expect(
            "LOGMESH_TEST_NATS_SERVER_TOO_OLD is not set: run the tests through scripts/test.sh",
        );
        (!binary.is_empty()).then(|| NatsServer::start_binary("LOGMESH_TEST_NATS_SERVER_TOO_OLD"))
    }

    fn start_binary(binary: &'static str) -> NatsServer {
        let mut server = NatsServer {
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            child: None,
            binary,
        };
        server.spawn();
        server
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory, kept across [`NatsServer::stop`].
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("jetstream")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, and waits for the exit. The store stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_and_wait(&mut child, libc::SIGKILL);
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again: the server is running");
        self.spawn();
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    fn spawn(&mut self) {
        let binary = env_path(self.binary);
        let log = self.log();
        // Kept in self at once: if it never gets ready, Drop still kills it.
        let child = self.child.insert(spawn_logged(
            Command::new(&binary)
                .arg("-js")
                .arg("-sd")
                .arg(self.store_dir())
                .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
                .current_dir(self.dir.path()),
            &log,
        ));
        let until = Instant::now() + READY_DEADLINE;
        loop {
            match nats_info(self.port) {
                Ok(_) => break,
                Err(error) => {
                    assert_running("nats-server", child, &log);
                    assert!(
                        Instant::now() < until,
                        "nats-server was not ready after {READY_DEADLINE:?} (last error: \
                         {error}); {}:\n{}",
                        log.display(),
                        log_tail(&log)
                    );
                    std::thread::sleep(READY_POLL);
                }
            }
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Connects to 127.0.0.1:`port` and returns the server's `INFO` line.
pub fn nats_info(port: u16) -> Result<String, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, ATTEMPT_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(ATTEMPT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.starts_with("INFO ") {
        Ok(line)
    } else {
        Err(format!("not an INFO line: {line:?}"))
    }
}

// ---------------------------------------------------------------------------------------------

/// A PostgreSQL cluster in a temporary directory: trust authentication, superuser `postgres`.
pub struct Postgres {
    dir: TempDir,
    port: u16,
    user: Option<RunAs>,
    child: Option<Child>,
}

impl Postgres {
    /// initdb (a few seconds), then starts the server on a free port and waits for a query.
    pub async fn start() -> Postgres {
        let bin = env_path("LOGMESH_TEST_PG_BIN");
        let dir = tempfile::tempdir().expect("temp dir");
        let user = run_as("postgres");
        RunAs::own(user, dir.path());
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .current_dir(dir.path());
        RunAs::apply(user, &mut initdb);
        run_setup("initdb", initdb).await;
        let mut server = Postgres {
            dir,
            port: free_port(),
            user,
            child: None,
        };
        server.spawn().await;
        server
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Immediate shutdown (SIGQUIT, what `pg_ctl stop -m immediate` sends): no checkpoint, as
    /// after a crash. Waits until the server and its backends are gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_and_wait(&mut child, libc::SIGQUIT);
        }
    }

    /// Starts the server again on the same port and data directory (crash recovery included).
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again: the server is running");
        self.spawn().await;
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    async fn spawn(&mut self) {
        let bin = env_path("LOGMESH_TEST_PG_BIN");
        let log = self.log();
        let mut command = Command::new(bin.join("postgres"));
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .current_dir(self.dir.path());
        RunAs::apply(self.user, &mut command);
        let url = self.url();
        // Kept in self at once: if it never gets ready, Drop still kills it.
        let child = self.child.insert(spawn_logged(&mut command, &log));
        wait_ready("postgres", child, &log, || pg_answers(&url)).await;
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn pg_answers(url: &str) -> Result<(), String> {
    let mut connection = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut connection)
        .await
        .map_err(|e| e.to_string())?;
    let _ = connection.close().await;
    if one == 1 {
        Ok(())
    } else {
        Err(format!("SELECT 1 gave {one}"))
    }
}

// ---------------------------------------------------------------------------------------------

/// A MariaDB server in a temporary directory: `root` without a password over TCP.
pub struct MariaDb {
    dir: TempDir,
    port: u16,
    user: Option<RunAs>,
    child: Option<Child>,
}

impl MariaDb {
    /// mariadb-install-db (a few seconds), then starts the server on a free port and waits for
    /// a query.
    pub async fn start() -> MariaDb {
        let install_db = env_path("LOGMESH_TEST_MARIADB_INSTALL_DB");
        let dir = tempfile::tempdir().expect("temp dir");
        let user = run_as("mysql");
        RunAs::own(user, dir.path());
        let mut command = Command::new(install_db);
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            .current_dir(dir.path());
        RunAs::apply(user, &mut command);
        run_setup("mariadb-install-db", command).await;
        let mut server = MariaDb {
            dir,
            port: free_port(),
            user,
            child: None,
        };
        server.spawn().await;
        server
    }

    /// `mysql://root@127.0.0.1:PORT/mysql`.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/mysql", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, as a crash; waits for the exit. The data directory stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_and_wait(&mut child, libc::SIGKILL);
        }
    }

    /// Starts the server again on the same port and data directory (InnoDB recovery included).
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again: the server is running");
        self.spawn().await;
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("mariadbd.log")
    }

    async fn spawn(&mut self) {
        let mariadbd = env_path("LOGMESH_TEST_MARIADBD");
        let dir = self.dir.path();
        let log = self.log();
        let mut command = Command::new(mariadbd);
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir().display()))
            .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
            .arg(format!("--port={}", self.port))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
            // Committed transactions reach the OS at commit: they survive a killed server.
            .arg("--innodb-flush-log-at-trx-commit=2")
            .current_dir(dir);
        RunAs::apply(self.user, &mut command);
        let url = self.url();
        // Kept in self at once: if it never gets ready, Drop still kills it.
        let child = self.child.insert(spawn_logged(&mut command, &log));
        wait_ready("mariadbd", child, &log, || mysql_answers(&url)).await;
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn mysql_answers(url: &str) -> Result<(), String> {
    let mut connection = sqlx::MySqlConnection::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let one: i64 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut connection)
        .await
        .map_err(|e| e.to_string())?;
    let _ = connection.close().await;
    if one == 1 {
        Ok(())
    } else {
        Err(format!("SELECT 1 gave {one}"))
    }
}
