//! A PostgreSQL cluster started by one test for itself, under its own temp
//! folder, for tests that reconfigure the server (TLS) or need cluster-wide
//! state of their own (roles); stopped when dropped.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use barkeep::db::Database;
use tokio_postgres::Client;

pub struct OwnCluster {
    pub cluster: barkeep::pg::Cluster,
    pub home: tempfile::TempDir,
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = self.cluster.stop();
    }
}

impl OwnCluster {
    /// Initialise and start a cluster; with `tcp_port`, it also listens on
    /// 127.0.0.1 at that port.
    pub fn start(prefix: &str, tcp_port: Option<u16>) -> OwnCluster {
        let home = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        // The server's unprivileged user must reach it when tests run as root.
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cluster = barkeep::pg::Cluster::new(&home.path().join("pg")).unwrap();
        if let Some(port) = tcp_port {
            cluster = cluster.with_tcp_port(port);
        }
        cluster.ensure_running().unwrap();
        OwnCluster { cluster, home }
    }

    /// A superuser connection to `dbname` over the unix socket.
    pub async fn superuser(&self, dbname: &str) -> Client {
        Database::from_config(self.cluster.config(dbname))
            .connect()
            .await
            .unwrap()
    }

    /// A key=value string for `user` on `dbname` over the unix socket.
    pub fn conn(&self, user: &str, dbname: &str) -> String {
        let config = self.cluster.config(dbname);
        let host = match &config.get_hosts()[0] {
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
        };
        format!(
            "host='{host}' port={} user='{user}' dbname='{dbname}'",
            config.get_ports()[0]
        )
    }

    /// Run the barkeep binary with `DATABASE_URL=conn`.
    pub fn cli(&self, conn: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_barkeep"))
            .args(args)
            .env("DATABASE_URL", conn)
            .env_remove("BARKEEP_HOME")
            .output()
            .unwrap()
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
