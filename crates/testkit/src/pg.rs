//! Throw-away PostgreSQL clusters for tests: `initdb` in a directory of the test, the
//! server on a Unix socket in that directory (no TCP), run as the `postgres` user when the
//! tests run as root (`initdb` refuses root).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The directory of the PostgreSQL server binaries: `CAIRN_TEST_PG_BIN`, else the newest
/// `/usr/lib/postgresql/N/bin`, else the directory of `initdb` on `PATH`.
pub fn pg_bin() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("CAIRN_TEST_PG_BIN") {
        return Some(PathBuf::from(d));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p): &(u32, PathBuf)| p.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some((_, p)) = versions.pop() {
        return Some(p);
    }
    let out = Command::new("sh").arg("-c").arg("command -v initdb").output().ok()?;
    let p = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    p.parent().filter(|_| out.status.success()).map(Path::to_path_buf)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command run as the `postgres` user when we are root (environment kept), else as us.
pub fn as_postgres(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-m", "-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Gives `path` (recursively) to the `postgres` user when we are root.
pub fn give_to_postgres(path: &Path) {
    if is_root() {
        let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(path).status().map(|s| s.success());
        assert!(matches!(ok, Ok(true)), "chown postgres {}", path.display());
    }
}

pub struct PgCluster {
    pub bin: PathBuf,
    pub data: PathBuf,
    pub sock: PathBuf,
    pub log: PathBuf,
    pub port: u16,
    running: bool,
}

fn check(o: std::io::Result<Output>, what: &str) -> Output {
    let o = o.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

impl PgCluster {
    /// `initdb` into `dir/data` with `conf` appended to `postgresql.conf`. `dir` must be
    /// writable by the server's user (see [`give_to_postgres`]).
    pub fn init(bin: &Path, dir: &Path, conf: &str) -> PgCluster {
        let c = PgCluster::at(bin, dir, &dir.join("data"));
        std::fs::create_dir_all(&c.sock).unwrap();
        give_to_postgres(dir);
        check(
            as_postgres(bin.join("initdb"))
                .args(["-D"])
                .arg(&c.data)
                .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])
                .output(),
            "initdb",
        );
        let base = format!(
            "\nlisten_addresses = ''\nport = {}\nunix_socket_directories = '{}'\nfsync = off\nshared_buffers = 32MB\nmax_wal_senders = 4\nwal_level = replica\n",
            c.port,
            c.sock.display()
        );
        let mut pc = std::fs::read_to_string(c.data.join("postgresql.conf")).unwrap();
        pc.push_str(&base);
        pc.push_str(conf);
        std::fs::write(c.data.join("postgresql.conf"), pc).unwrap();
        give_to_postgres(dir);
        c
    }

    /// A cluster object for an existing data directory (a restored one), with its own
    /// socket directory under `dir`.
    pub fn at(bin: &Path, dir: &Path, data: &Path) -> PgCluster {
        let sock = dir.join("sock");
        std::fs::create_dir_all(&sock).unwrap();
        give_to_postgres(&sock);
        PgCluster {
            bin: bin.to_path_buf(),
            data: data.to_path_buf(),
            sock,
            log: dir.join("server.log"),
            port: 5432,
            running: false,
        }
    }

    /// The `-c` options that make a restored cluster listen on this object's socket.
    fn opts(&self) -> String {
        format!("-c listen_addresses='' -c port={} -c unix_socket_directories='{}'", self.port, self.sock.display())
    }

    pub fn start(&mut self) {
        let o = as_postgres(self.bin.join("pg_ctl"))
            .args(["-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "120", "-o", &self.opts(), "start"])
            .output();
        if !matches!(&o, Ok(o) if o.status.success()) {
            panic!(
                "pg_ctl start failed: {:?}\nserver log:\n{}",
                o,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        self.running = true;
    }

    pub fn stop(&mut self) {
        if self.running {
            let _ = as_postgres(self.bin.join("pg_ctl"))
                .args(["-D"])
                .arg(&self.data)
                .args(["-m", "fast", "-w", "stop"])
                .output();
            self.running = false;
        }
    }

    /// Kills the postmaster and its children at once (a crash).
    pub fn crash(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.data.join("postmaster.pid")) {
            if let Some(pid) = pid.lines().next().and_then(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) on the postmaster our pg_ctl started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        }
        // Children exit when the postmaster dies; make sure none keeps the socket.
        let _ = Command::new("pkill").args(["-9", "-f", &self.data.display().to_string()]).status();
        self.running = false;
    }

    pub fn conn(&self) -> String {
        format!("host={} port={} user=postgres dbname=postgres", self.sock.display(), self.port)
    }

    /// Runs SQL with psql; returns unaligned, tuples-only output.
    pub fn sql(&self, sql: &str) -> String {
        let o = check(
            as_postgres(self.bin.join("psql"))
                .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", &self.conn(), "-c", sql])
                .output(),
            &format!("psql {sql}"),
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    pub fn pgbench(&self, args: &[&str]) {
        check(
            as_postgres(self.bin.join("pgbench"))
                .args(["-h"])
                .arg(&self.sock)
                .args(["-p", &self.port.to_string(), "-U", "postgres"])
                .args(args)
                .arg("postgres")
                .output(),
            &format!("pgbench {args:?}"),
        );
    }

    /// Polls until the server accepts writes (recovery ended and it promoted).
    pub fn wait_promoted(&self, secs: u64) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            let o = as_postgres(self.bin.join("psql"))
                .args(["-X", "-A", "-t", "-q", "-d", &self.conn(), "-c", "SELECT pg_is_in_recovery()"])
                .output();
            if matches!(&o, Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "f") {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        false
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = as_postgres(self.bin.join("pg_ctl"))
                .args(["-D"])
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}
