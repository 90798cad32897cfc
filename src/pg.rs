//! The embedded PostgreSQL cluster: `initdb` + `postgres` from the installed
//! PostgreSQL binaries, kept under `./.barkeep` (or `BARKEEP_HOME`), reached
//! over a unix socket only, and run as an unprivileged user when barkeep
//! itself runs as root (PostgreSQL refuses to run as root).
//!
//! As root, the home may sit where that user cannot go (a clone under
//! `/root`, mode 0700). Then the data and socket folders live in
//! `/var/lib/barkeep/<hash of the home path>`, owned by the server's user,
//! and `<home>/pgdata` is a symlink to them, so the place is stable and
//! found again from the home.
//!
//! A file lock on `<home>/lock` serialises start-up, so two barkeep
//! processes started at once never start two servers on one data folder.

use std::fs::{self, File};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

/// Name of the superuser `initdb` creates in the embedded cluster.
pub const SUPERUSER: &str = "postgres";
/// Name of the database barkeep keeps its tables in.
pub const DATABASE: &str = "barkeep";
/// Port number; with TCP off it only names the socket file.
const PORT: u16 = 5432;
/// Where data folders go when the server's user cannot reach the home.
const SHARED_ROOT: &str = "/var/lib/barkeep";
/// Server settings for bulk catch-up. A worker reads each symbol's 1m rows
/// separately, and rows of many symbols share heap pages, so every page is
/// visited once per symbol: the buffer pool should hold the hot part of
/// `data_bars` and its index (the defaults, 128MB, made each visit a copy
/// from the OS cache). Fewer, later checkpoints keep full-page images out
/// of the WAL during long catch-ups. Memory is only taken as pages are used.
const SERVER_SETTINGS: &[&str] = &[
    "-c shared_buffers=1GB",
    "-c max_wal_size=4GB",
    "-c checkpoint_timeout=15min",
];
/// Longest unix socket path the kernel accepts, less the socket file name.
const MAX_SOCKET_DIR_LEN: usize = 100 - ".s.PGSQL.5432".len();

/// An embedded cluster rooted at one folder.
#[derive(Debug, Clone)]
pub struct Cluster {
    home: PathBuf,
    bindir: PathBuf,
    /// Also listen on 127.0.0.1 at this port (tests of TLS); None: socket only.
    tcp_port: Option<u16>,
}

/// The OS account the server runs as.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// What `barkeep pg status` reports.
#[derive(Debug, serde::Serialize)]
pub struct ClusterStatus {
    pub home: PathBuf,
    pub initialized: bool,
    pub running: bool,
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub bindir: PathBuf,
}

impl Cluster {
    /// A cluster under `home`, using the PostgreSQL binaries found on this machine.
    pub fn new(home: &Path) -> Result<Self> {
        let home = absolute(home)?;
        let bindir = find_bindir()?;
        Ok(Self {
            home,
            bindir,
            tcp_port: None,
        })
    }

    /// Also listen for TCP connections on 127.0.0.1:`port`.
    pub fn with_tcp_port(mut self, port: u16) -> Self {
        self.tcp_port = Some(port);
        self
    }

    fn port(&self) -> u16 {
        self.tcp_port.unwrap_or(PORT)
    }

    /// The folder that holds the data directory, socket and log.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The folder holding `pgdata` and `run`: the home, or the shared
    /// folder `<home>/pgdata` links into.
    fn server_root(&self) -> PathBuf {
        match fs::read_link(self.home.join("pgdata")) {
            Ok(target) => target
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| self.home.clone()),
            Err(_) => self.home.clone(),
        }
    }

    /// The PostgreSQL data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.server_root().join("pgdata")
    }

    /// Socket folder: beside the data directory when the path is short
    /// enough for a unix socket, otherwise a per-home folder under /tmp.
    pub fn socket_dir(&self) -> PathBuf {
        let inside = self.server_root().join("run");
        if inside.as_os_str().len() <= MAX_SOCKET_DIR_LEN {
            return inside;
        }
        std::env::temp_dir().join(format!("barkeep-{}", self.home_hash()))
    }

    /// A short stable name for this home.
    fn home_hash(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.home.as_os_str().as_encoded_bytes());
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }

    fn log_file(&self) -> PathBuf {
        self.socket_dir().join("postgres.log")
    }

    /// Connection settings for a database of this cluster.
    pub fn config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.socket_dir())
            .port(self.port())
            .user(SUPERUSER)
            .dbname(dbname)
            .application_name("barkeep");
        config
    }

    /// Initialise the cluster if needed and start it unless it already runs.
    pub fn ensure_running(&self) -> Result<()> {
        fs::create_dir_all(&self.home)
            .with_context(|| format!("creating {}", self.home.display()))?;
        let lock_path = self.home.join("lock");
        let lock = File::create(&lock_path)
            .with_context(|| format!("opening lock file {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        let run_as = run_as()?;
        self.prepare_dirs(run_as)?;
        if !self.data_dir().join("PG_VERSION").exists() {
            self.initdb(run_as)?;
        }
        self.trust_only_the_socket()?;
        if !self.is_running(run_as)? {
            self.start(run_as)?;
        }
        drop(lock);
        Ok(())
    }

    /// Whether the cluster is initialised and its server answers.
    pub fn status(&self) -> Result<ClusterStatus> {
        let initialized = self.data_dir().join("PG_VERSION").exists();
        let running = initialized && self.is_running(run_as()?)?;
        Ok(ClusterStatus {
            home: self.home.clone(),
            initialized,
            running,
            data_dir: self.data_dir(),
            socket_dir: self.socket_dir(),
            bindir: self.bindir.clone(),
        })
    }

    /// Stop the server (fast shutdown). Returns false when it was not running.
    pub fn stop(&self) -> Result<bool> {
        if !self.data_dir().join("PG_VERSION").exists() {
            return Ok(false);
        }
        let run_as = run_as()?;
        if !self.is_running(run_as)? {
            return Ok(false);
        }
        let data = self.data_dir();
        let out = self
            .pg_command("pg_ctl", run_as)
            .arg("stop")
            .arg("-D")
            .arg(&data)
            .args(["-m", "fast", "-w"])
            .output()
            .context("running pg_ctl stop")?;
        check(&out, "pg_ctl stop")?;
        Ok(true)
    }

    fn prepare_dirs(&self, run_as: Option<RunAs>) -> Result<()> {
        let link = self.home.join("pgdata");
        let fresh = fs::symlink_metadata(&link).is_err();
        if let (Some(user), true) = (run_as, fresh) {
            if !user.can_reach(&self.home) {
                self.link_shared_root(user)?;
            }
        }
        for dir in [self.data_dir(), self.socket_dir()] {
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("setting permissions of {}", dir.display()))?;
            if let Some(user) = run_as {
                chown(&dir, Some(user.uid), Some(user.gid))
                    .with_context(|| format!("handing {} to the server's user", dir.display()))?;
            }
        }
        if let Some(user) = run_as {
            // The server's user must be able to walk down to its folders.
            let root = self.server_root();
            if !user.can_reach(&root) {
                bail!(
                    "PostgreSQL runs as an unprivileged user (uid {}), which cannot reach {}; \
                     set BARKEEP_HOME to a folder it can reach (for example /tmp/barkeep)",
                    user.uid,
                    root.display()
                );
            }
        }
        Ok(())
    }

    /// Put the data in `/var/lib/barkeep/<hash>` and link `<home>/pgdata` to it.
    fn link_shared_root(&self, user: RunAs) -> Result<()> {
        let shared = Path::new(SHARED_ROOT);
        fs::create_dir_all(shared).with_context(|| format!("creating {}", shared.display()))?;
        fs::set_permissions(shared, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("setting permissions of {}", shared.display()))?;
        let root = shared.join(self.home_hash());
        fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting permissions of {}", root.display()))?;
        chown(&root, Some(user.uid), Some(user.gid))
            .with_context(|| format!("handing {} to the server's user", root.display()))?;
        let link = self.home.join("pgdata");
        std::os::unix::fs::symlink(root.join("pgdata"), &link)
            .with_context(|| format!("linking {} to {}", link.display(), root.display()))?;
        tracing::info!(
            "the server's user cannot reach {}; the cluster lives in {}",
            self.home.display(),
            root.display()
        );
        Ok(())
    }

    /// Drop every TCP line of `pg_hba.conf` that trusts without a password:
    /// initdb writes `host all all 127.0.0.1/32 trust`, harmless only while
    /// the server listens on no TCP address, and a superuser for any local
    /// user once someone starts the data folder another way. Rewriting the
    /// file in place keeps its owner and mode.
    fn trust_only_the_socket(&self) -> Result<()> {
        let path = self.data_dir().join("pg_hba.conf");
        let Ok(text) = fs::read_to_string(&path) else {
            return Ok(());
        };
        let trusting_tcp = |line: &str| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.first().is_some_and(|f| f.starts_with("host"))
                && fields.last().is_some_and(|m| *m == "trust")
        };
        if !text.lines().any(trusting_tcp) {
            return Ok(());
        }
        let kept: String = text
            .lines()
            .filter(|l| !trusting_tcp(l))
            .map(|l| format!("{l}\n"))
            .collect();
        fs::write(&path, kept).with_context(|| format!("rewriting {}", path.display()))
    }

    fn initdb(&self, run_as: Option<RunAs>) -> Result<()> {
        let out = self
            .pg_command("initdb", run_as)
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .context("running initdb")?;
        check(&out, "initdb")
    }

    fn start(&self, run_as: Option<RunAs>) -> Result<()> {
        let listen = match self.tcp_port {
            Some(_) => "127.0.0.1",
            None => "",
        };
        let options = format!(
            "-c listen_addresses='{listen}' -k {} -p {} -c unix_socket_permissions=0700 -c fsync=on {}",
            quote_option(&self.socket_dir()),
            self.port(),
            SERVER_SETTINGS.join(" ")
        );
        let out = self
            .pg_command("pg_ctl", run_as)
            .arg("start")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "-o", &options])
            .output()
            .context("running pg_ctl start")?;
        check(&out, "pg_ctl start")
            .with_context(|| format!("the server log is at {}", self.log_file().display()))
    }

    fn is_running(&self, run_as: Option<RunAs>) -> Result<bool> {
        let out = self
            .pg_command("pg_ctl", run_as)
            .arg("status")
            .arg("-D")
            .arg(self.data_dir())
            .output()
            .context("running pg_ctl status")?;
        // pg_ctl status: 0 running, 3 not running, 4 no data directory.
        Ok(out.status.success())
    }

    fn pg_command(&self, program: &str, run_as: Option<RunAs>) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        let root = self.server_root();
        cmd.current_dir(&root);
        if let Some(user) = run_as {
            cmd.uid(user.uid).gid(user.gid);
            cmd.env("HOME", &root);
        }
        cmd
    }
}

impl RunAs {
    /// Whether this user may enter `dir` (and every folder above it).
    fn can_reach(&self, dir: &Path) -> bool {
        let probe = Command::new("test")
            .arg("-x")
            .arg(dir)
            .uid(self.uid)
            .gid(self.gid)
            .status();
        matches!(probe, Ok(s) if s.success())
    }
}

/// The unprivileged account to run the server as, when we are root.
fn run_as() -> Result<Option<RunAs>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Ok(Some(user)) = nix::unistd::User::from_name(name) {
            return Ok(Some(RunAs {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            }));
        }
    }
    bail!("running as root, but there is no 'postgres' or 'nobody' user to run PostgreSQL as")
}

/// Find the folder holding `initdb`, `pg_ctl` and `postgres`.
pub fn find_bindir() -> Result<PathBuf> {
    let has_all = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Ok(dir) = std::env::var("BARKEEP_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if has_all(&dir) {
            return Ok(dir);
        }
        bail!(
            "BARKEEP_PG_BINDIR={} has no initdb, pg_ctl and postgres",
            dir.display()
        );
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_all(&dir) {
                // Resolve links so sibling binaries come from one installation.
                let real = fs::canonicalize(dir.join("initdb")).ok();
                if let Some(parent) = real.as_deref().and_then(Path::parent) {
                    if has_all(parent) {
                        return Ok(parent.to_path_buf());
                    }
                }
                return Ok(dir);
            }
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_all(&dir) {
                return Ok(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_all(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    bail!(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found on PATH, via pg_config \
         or under /usr/lib/postgresql; install them (Debian/Ubuntu: apt-get install postgresql-15) \
         or pass --database-url"
    )
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("reading the current folder")?
        .join(path))
}

fn quote_option(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "\\'"))
}

fn check(out: &Output, what: &str) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    )
}
