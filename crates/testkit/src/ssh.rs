//! A private OpenSSH server on 127.0.0.1 for the SFTP tests: its own host key, one
//! authorized client key, its own config (nothing of the machine's sshd is used), killed
//! on drop. The client side is an `ssh_config` file naming the server `cairn-test`, used
//! by cairn through `CAIRN_SSH_ARGS="-F FILE"`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    child: Child,
    binary: PathBuf,
    config: PathBuf,
    pub port: u16,
    /// `ssh -F` this file: host `cairn-test` is this server, with the right key, user and
    /// pinned host key.
    pub client_config: PathBuf,
    pub log: PathBuf,
}

fn sshd_binary() -> Option<PathBuf> {
    ["/usr/sbin/sshd", "/usr/local/sbin/sshd"].iter().map(PathBuf::from).find(|p| p.exists())
}

fn free_port() -> Option<u16> {
    let l = TcpListener::bind(("127.0.0.1", 0)).ok()?;
    l.local_addr().ok().map(|a| a.port())
}

impl Sshd {
    /// `None` when OpenSSH's server is not installed (the caller skips loudly).
    pub fn start(dir: &Path) -> Option<Sshd> {
        let sshd = sshd_binary()?;
        std::fs::create_dir_all(dir).ok()?;
        let keygen = |file: &Path| {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(file)
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "ssh-keygen failed for {}", file.display());
        };
        let (host_key, user_key) = (dir.join("host_ed25519"), dir.join("id_ed25519"));
        keygen(&host_key);
        keygen(&user_key);
        std::fs::copy(dir.join("id_ed25519.pub"), dir.join("authorized_keys")).ok()?;
        if crate::is_root() {
            // The privilege-separation directory sshd insists on.
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| {
            let out = Command::new("id").arg("-un").output().expect("id -un");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        });
        let log = dir.join("sshd.log");
        for _attempt in 0..5 {
            let port = free_port()?;
            let config = dir.join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {d}/sshd.pid\n\
                     AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                     PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\nMaxSessions 100\n\
                     MaxStartups 100\nLogLevel VERBOSE\n",
                    hk = host_key.display(),
                    d = dir.display()
                ),
            )
            .ok()?;
            let host_pub = std::fs::read_to_string(dir.join("host_ed25519.pub")).ok()?;
            let known = dir.join("known_hosts");
            std::fs::write(&known, format!("[127.0.0.1]:{port} {host_pub}")).ok()?;
            let client_config = dir.join("ssh_config");
            std::fs::write(
                &client_config,
                format!(
                    "Host cairn-test\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  IdentityFile {uk}\n  \
                     IdentitiesOnly yes\n  UserKnownHostsFile {kn}\n  StrictHostKeyChecking yes\n  BatchMode yes\n  \
                     LogLevel ERROR\n",
                    uk = user_key.display(),
                    kn = known.display()
                ),
            )
            .ok()?;
            let mut child = Command::new(&sshd)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).ok()?)
                .spawn()
                .ok()?;
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken meanwhile, or a config error: see the log
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(Sshd { child, binary: sshd, config, port, client_config, log });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("sshd did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }

    /// Kills every open connection (the per-connection sshd processes, children of the
    /// listener), as a network cut or a server restart would. Returns how many there were.
    pub fn drop_connections(&self) -> usize {
        let out = Command::new("pgrep").args(["-P", &self.child.id().to_string()]).output().expect("pgrep");
        let pids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect();
        for p in &pids {
            let _ = Command::new("kill").args(["-9", p]).status();
        }
        pids.len()
    }

    /// Stops the server (listener and connections), as a restart or an outage would;
    /// [`Sshd::resume`] starts it again on the same port with the same keys.
    pub fn stop(&mut self) {
        self.drop_connections();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn resume(&mut self) {
        let log = std::fs::OpenOptions::new().append(true).open(&self.log).expect("sshd log");
        self.child = Command::new(&self.binary)
            .args(["-D", "-e", "-f"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not come back");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `CAIRN_SSH_ARGS` for cairn to reach this server as `sftp://cairn-test/...`.
    pub fn ssh_args(&self) -> String {
        format!("-F {}", self.client_config.display())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
