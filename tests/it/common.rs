//! Test harness: one PostgreSQL cluster per test run (the embedded cluster
//! under the system temp folder, or `TEST_DATABASE_URL`), a migrated
//! template database made once per test process, and a fresh database per
//! test cloned from it.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use barkeep::db::Database;
use barkeep::migrate;
use tokio_postgres::{Client, Config};

/// How to reach the test server as a superuser: the connection parameters
/// but the database name.
struct Server {
    base: Vec<(&'static str, String)>,
}

static SERVER: OnceLock<Server> = OnceLock::new();
static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
            let config: Config = url
                .parse()
                .expect("TEST_DATABASE_URL must be a valid connection string");
            return Server {
                base: base_of(&config),
            };
        }
        let uid = nix::unistd::geteuid().as_raw();
        let home = std::env::temp_dir().join(format!("barkeep-test-cluster-{uid}"));
        let cluster = barkeep::pg::Cluster::new(&home)
            .expect("PostgreSQL binaries must be installed for the tests");
        cluster.ensure_running().expect("starting the test cluster");
        Server {
            base: base_of(&cluster.config("postgres")),
        }
    })
}

/// The connection parameters of `config` but its database name.
fn base_of(config: &Config) -> Vec<(&'static str, String)> {
    let mut params = Vec::new();
    if let Some(host) = config.get_hosts().first() {
        match host {
            tokio_postgres::config::Host::Tcp(h) => params.push(("host", h.clone())),
            tokio_postgres::config::Host::Unix(p) => params.push(("host", p.display().to_string())),
        }
    }
    if let Some(port) = config.get_ports().first() {
        params.push(("port", port.to_string()));
    }
    if let Some(user) = config.get_user() {
        params.push(("user", user.to_string()));
    }
    if let Some(pw) = config.get_password() {
        params.push(("password", String::from_utf8_lossy(pw).into_owned()));
    }
    params
}

/// A key=value connection string for the database `dbname` of the test
/// server, as a superuser.
pub fn url_for(dbname: &str) -> String {
    let mut params: Vec<(&str, &str)> = server()
        .base
        .iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect();
    params.push(("dbname", dbname));
    conninfo(&params)
}

async fn admin() -> Client {
    Database::from_url(&url_for("postgres"))
        .expect("admin url")
        .connect()
        .await
        .expect("connecting to the test server")
}

/// Drop databases left behind by earlier test processes that have exited.
async fn sweep(client: &Client) {
    let rows = client
        .query(
            "SELECT datname FROM pg_database WHERE datname ~ '^bkt_[0-9]+_'",
            &[],
        )
        .await
        .expect("listing test databases");
    for row in rows {
        let name: String = row.get(0);
        let pid = name.split('_').nth(1).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
}

async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let admin = admin().await;
            sweep(&admin).await;
            let name = format!("bkt_{}_template", std::process::id());
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                .await
                .expect("dropping an old template database");
            admin
                .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .await
                .expect("creating the template database");
            let mut client = Database::from_url(&url_for(&name))
                .expect("template url")
                .connect()
                .await
                .expect("connecting to the template");
            migrate::up(&mut client, None)
                .await
                .expect("migrating the template");
            drop(client);
            name
        })
        .await
}

/// A fresh database for one test.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub database: Database,
}

impl TestDb {
    /// A fresh database with every migration applied.
    pub async fn migrated() -> TestDb {
        let template = template().await;
        Self::create(Some(template)).await
    }

    /// A fresh, empty database (no barkeep objects).
    pub async fn empty() -> TestDb {
        Self::create(None).await
    }

    /// A fresh database cloned from this one (its connections must be closed).
    pub async fn copy(&self) -> TestDb {
        Self::create(Some(&self.name)).await
    }

    async fn create(template: Option<&str>) -> TestDb {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("bkt_{}_{n}", std::process::id());
        let admin = admin().await;
        let sql = match template {
            Some(t) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{t}\""),
            None => format!("CREATE DATABASE \"{name}\""),
        };
        // Cloning a template fails while another session is connected to
        // it; the template's own connection is closed, so retry briefly.
        let mut attempt = 0;
        loop {
            match admin.batch_execute(&sql).await {
                Ok(()) => break,
                Err(e) if attempt < 50 => {
                    attempt += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("creating test database {name}: {e}"),
            }
        }
        let url = url_for(&name);
        let database = Database::from_url(&url).expect("test url");
        TestDb {
            name,
            url,
            database,
        }
    }

    /// A new connection to this test's database.
    pub async fn client(&self) -> Client {
        self.database
            .connect()
            .await
            .expect("connecting to the test database")
    }

    /// Run the barkeep binary against this database.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, None)
    }

    /// Run the barkeep binary with bytes on standard input.
    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        use std::io::Write;
        let mut child = self
            .piped(args, stdin.is_some())
            .spawn()
            .expect("starting barkeep");
        if let Some(bytes) = stdin {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            pipe.write_all(bytes).expect("writing stdin");
        }
        child.wait_with_output().expect("waiting for barkeep")
    }

    /// Run the barkeep binary in the folder `dir` (for relative paths).
    pub fn cli_in(&self, dir: &std::path::Path, args: &[&str]) -> Output {
        self.piped(args, false)
            .current_dir(dir)
            .output()
            .expect("running barkeep")
    }

    /// Run the barkeep binary and watch its peak resident memory (VmHWM,
    /// in KiB) until it exits; a peak reached just before the exit may be
    /// missed, never overstated.
    pub fn cli_peak_memory(&self, args: &[&str]) -> (Output, u64) {
        use std::io::Read;
        let mut child = self.piped(args, false).spawn().expect("starting barkeep");
        let status_file = format!("/proc/{}/status", child.id());
        // Drain the pipes on threads so a chatty child never blocks.
        let mut out_pipe = child.stdout.take().expect("stdout pipe");
        let mut err_pipe = child.stderr.take().expect("stderr pipe");
        let out_thread = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out_pipe.read_to_end(&mut v);
            v
        });
        let err_thread = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = err_pipe.read_to_end(&mut v);
            v
        });
        let mut peak = 0u64;
        let status = loop {
            if let Ok(text) = std::fs::read_to_string(&status_file) {
                let hwm = text
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
                if let Some(kb) = hwm {
                    peak = peak.max(kb);
                }
            }
            if let Some(status) = child.try_wait().expect("waiting for barkeep") {
                break status;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let output = Output {
            status,
            stdout: out_thread.join().expect("stdout reader"),
            stderr: err_thread.join().expect("stderr reader"),
        };
        (output, peak)
    }

    /// The barkeep binary on this database, its standard streams left to
    /// the caller (for a process the test runs alongside).
    pub fn command(&self, args: &[&str]) -> Command {
        barkeep_on(&self.url, args)
    }

    /// The barkeep binary on this database with its output captured.
    fn piped(&self, args: &[&str], stdin: bool) -> Command {
        use std::process::Stdio;
        let mut command = self.command(args);
        command
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Count rows of an SQL query returning one bigint.
    pub async fn count(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }
}

/// The barkeep binary with `args` on the database at `url`; BARKEEP_HOME
/// is removed so a developer's own embedded cluster never answers instead.
pub fn barkeep_on(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_barkeep"));
    command
        .args(args)
        .env("DATABASE_URL", url)
        .env_remove("BARKEEP_HOME");
    command
}

/// Standard output of a run as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Standard error of a run as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Path of the shipped AUDUSD sample.
pub fn sample_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/DAT_ASCII_AUDUSD_M1_202306.csv")
}

/// A libpq key=value connection string: every value in single quotes with
/// `\` and `'` escaped, so a socket path, a database name or a password
/// holding a space, a quote or a backslash reaches the server as written.
pub fn conninfo(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(key, value)| {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            format!("{key}='{quoted}'")
        })
        .collect::<Vec<_>>()
        .join(" ")
}
