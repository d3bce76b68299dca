//! A throwaway PostgreSQL cluster for tests: `initdb` + `pg_ctl` in a temp dir, on a free
//! loopback port, run as the `postgres` OS user when the tests run as root (the server refuses
//! to run as root).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

const INSTALL_HINT: &str = "PostgreSQL server binaries not found: install them with `apt-get install -y postgresql` \
     (Debian/Ubuntu; initdb and pg_ctl are looked for in PATH and /usr/lib/postgresql/*/bin)";

/// A running cluster. Stopped (`pg_ctl -m immediate stop`) and deleted on drop.
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

/// Where `initdb` and `pg_ctl` are: PATH first, then the newest /usr/lib/postgresql/*/bin.
pub fn find_bin_dir() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

impl PgCluster {
    /// Creates and starts a cluster. Panics with install instructions when PostgreSQL is missing.
    pub fn start() -> Self {
        let bin = find_bin_dir().unwrap_or_else(|| panic!("{INSTALL_HINT}"));
        let dir = tempfile::Builder::new()
            .prefix("bmkt-pg-")
            .tempdir()
            .expect("create a temp dir")
            .keep();
        let as_postgres = running_as_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("run chown");
            assert!(
                status.success(),
                "chown {} to the postgres user failed (does the `postgres` OS user exist? \
                 `apt-get install -y postgresql` creates it)",
                dir.display()
            );
        }
        let cluster = Self {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let mut cluster = cluster;
        // A port can be taken between our probe and the server's bind: try a few.
        for attempt in 0..5 {
            let port = free_port();
            let options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200",
                cluster.dir.display()
            );
            let log = cluster.dir.join("server.log");
            let ok = cluster.try_run(
                "pg_ctl",
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-o",
                    &options,
                    "-l",
                    log.to_str().unwrap(),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            );
            if ok {
                cluster.port = port;
                return cluster;
            }
            eprintln!(
                "PostgreSQL did not start on port {port} (attempt {attempt}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("PostgreSQL did not start; see {}", cluster.dir.display());
    }

    /// One cluster for the whole test process, stopped and deleted by a watchdog when the
    /// process exits (statics are never dropped).
    pub fn shared() -> &'static PgCluster {
        static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
        CLUSTER.get_or_init(|| {
            let cluster = PgCluster::start();
            cluster.watch(std::process::id());
            cluster
        })
    }

    // The watchdog outlives this process on purpose: it is never waited for.
    #[allow(clippy::zombie_processes)]
    fn watch(&self, pid: u32) {
        let stop = self.command_line(
            "pg_ctl",
            &[
                "-D",
                self.data_dir().to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ],
        );
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.2; done; {stop} >/dev/null 2>&1; rm -rf '{}'",
            self.dir.display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the cluster watchdog");
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command_line(&self, tool: &str, args: &[&str]) -> String {
        let exe = self.bin.join(tool);
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        if self.as_postgres {
            format!(
                "runuser -u postgres -- '{}' {}",
                exe.display(),
                quoted.join(" ")
            )
        } else {
            format!("'{}' {}", exe.display(), quoted.join(" "))
        }
    }

    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(args).current_dir(&self.dir).stdin(Stdio::null());
        cmd
    }

    fn try_run(&self, tool: &str, args: &[&str]) -> bool {
        let out = self
            .command(tool, args)
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        if !out.status.success() {
            eprintln!(
                "{tool} failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out.status.success()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        assert!(self.try_run(tool, args), "{tool} failed");
    }

    /// The server's loopback address.
    #[allow(dead_code)] // not every test binary proxies it
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A connection string for database `db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    /// Creates a fresh database with a unique name starting with `prefix`; returns its URL.
    pub fn create_database(&self, prefix: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .expect("connect to the test cluster");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create a test database");
        self.url(&name)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self
            .command(
                "pg_ctl",
                &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
