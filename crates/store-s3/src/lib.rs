//! Object stores behind cairn's [`Store`] trait, through the `object_store` crate: any
//! S3-compatible service (AWS, Ceph RGW, MinIO, SeaweedFS, Garage), Google Cloud Storage
//! and Azure Blob Storage.
//!
//! With [`open_locked`], every object but writer leases and partial WAL segments is written
//! with an S3 Object Lock retention, through requests signed here (`lock.rs`), which
//! `object_store` cannot make.
//!
//! Key decisions: create-only puts are `PutMode::Create`, which `object_store` sends as
//! `If-None-Match: *` (atomic on services that support conditional writes; the
//! conformance suite checks it); ranged reads map to HTTP ranges; the repository lives
//! under an optional key prefix so one bucket can hold several repositories. Only this
//! crate sees the HTTP/S3 stack (STYLE.md). `object_store` retries 5xx replies and
//! requests that never left itself (exponential back-off), but not a non-idempotent
//! request cut mid-way: a create-only PUT whose connection broke while its body was sent
//! comes back as an error. For such puts transport failures are mapped to
//! [`Error::Transient`], so the caller's `RetryStore` retries them (it knows how to tell a
//! create that landed before its reply was lost from a real conflict).
//!
//! URLs:
//! - `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&path_style=true|false]`; the endpoint,
//!   region and credentials may also come from the standard `AWS_*` variables
//!   (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...).
//! - `gs://BUCKET[/PREFIX]`, credentials from `GOOGLE_SERVICE_ACCOUNT` /
//!   `GOOGLE_APPLICATION_CREDENTIALS` (a service account file) or the metadata server.
//! - `az://CONTAINER[/PREFIX][?account=NAME&endpoint=URL&emulator=true]`, credentials from
//!   `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY` (or other `AZURE_*`).

mod lock;

pub use lock::Lock;

use std::ops::Range;
use std::sync::Arc;

use cairn_store::{BoxFuture, Capabilities, Error, ObjectMeta, PutMode, Result, Store};
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as OsPath;
use object_store::{GetOptions, GetRange, ObjectStore, PutOptions, PutPayload};

/// A parsed `s3://` repository URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
    /// A PEM file of CA certificates trusted for the endpoint (a private CA); also
    /// `CAIRN_CACERT`.
    pub cacert: Option<String>,
    /// The storage class of data packs (`data/`); everything else stays in the bucket's
    /// default class, so the metadata a restore reads first is never in a slow tier.
    pub storage_class: Option<String>,
}

/// Storage classes whose objects a GET reads at once. GLACIER and DEEP_ARCHIVE objects
/// need a restore request first, which a backup tool cannot wait for in a restore.
pub const STORAGE_CLASSES: &[&str] =
    &["STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "REDUCED_REDUNDANCY"];

impl S3Url {
    pub fn parse(url: &str) -> std::result::Result<S3Url, String> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| format!("{url}: not an s3:// URL"))?;
        let (loc, query) = match rest.split_once('?') {
            Some((l, q)) => (l, Some(q)),
            None => (rest, None),
        };
        let (bucket, prefix) = match loc.split_once('/') {
            Some((b, p)) => (b, p.trim_matches('/')),
            None => (loc, ""),
        };
        if bucket.is_empty() {
            return Err(format!("{url}: no bucket (s3://BUCKET/PREFIX)"));
        }
        if prefix.split('/').any(|c| c == ".." || c == ".") {
            return Err(format!("{url}: the prefix may not contain . or .."));
        }
        let mut u = S3Url {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: None,
            region: None,
            path_style: None,
            cacert: None,
            storage_class: None,
        };
        for kv in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(|| format!("{url}: query option {kv:?} is not key=value"))?;
            match k {
                "endpoint" => u.endpoint = Some(v.into()),
                "region" => u.region = Some(v.into()),
                "cacert" => u.cacert = Some(v.into()),
                "storage_class" => {
                    if !STORAGE_CLASSES.contains(&v) {
                        return Err(format!(
                            "{url}: storage_class {v:?}: one of {} (GLACIER and DEEP_ARCHIVE objects cannot be read without a restore request; a lifecycle rule on data/ can move packs there)",
                            STORAGE_CLASSES.join(", ")
                        ));
                    }
                    u.storage_class = Some(v.into())
                }
                "path_style" => {
                    u.path_style = Some(match v {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(format!("{url}: path_style must be true or false")),
                    })
                }
                _ => {
                    return Err(format!(
                        "{url}: unknown option {k:?} (endpoint, region, path_style, cacert, storage_class)"
                    ))
                }
            }
        }
        Ok(u)
    }
}

/// A parsed `gs://` or `az://` URL: the bucket (container), the prefix and the options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudUrl {
    pub scheme: String,
    pub bucket: String,
    pub prefix: String,
    pub options: Vec<(String, String)>,
}

impl CloudUrl {
    pub fn parse(url: &str, allowed: &[&str]) -> std::result::Result<CloudUrl, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("{url}: not a URL"))?;
        let (loc, query) = match rest.split_once('?') {
            Some((l, q)) => (l, q),
            None => (rest, ""),
        };
        let (bucket, prefix) = match loc.split_once('/') {
            Some((b, p)) => (b, p.trim_matches('/')),
            None => (loc, ""),
        };
        if bucket.is_empty() {
            return Err(format!("{url}: no bucket or container ({scheme}://NAME/PREFIX)"));
        }
        if prefix.split('/').any(|c| c == ".." || c == ".") {
            return Err(format!("{url}: the prefix may not contain . or .."));
        }
        let mut options = Vec::new();
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(|| format!("{url}: query option {kv:?} is not key=value"))?;
            if !allowed.contains(&k) {
                return Err(format!("{url}: unknown option {k:?} ({})", allowed.join(", ")));
            }
            options.push((k.to_string(), v.to_string()));
        }
        Ok(CloudUrl { scheme: scheme.into(), bucket: bucket.into(), prefix: prefix.into(), options })
    }

    fn opt(&self, k: &str) -> Option<&str> {
        self.options.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str())
    }
}

/// Opens the store a repository URL names (`s3://`, `gs://`, `az://`).
pub fn open(url: &str) -> std::result::Result<S3Store, String> {
    open_locked(url, None)
}

/// Like [`open`]; with `lock`, every object but writer leases and partial WAL segments is
/// written with that S3 Object Lock retention (S3 only).
pub fn open_locked(url: &str, lock: Option<Lock>) -> std::result::Result<S3Store, String> {
    if lock.is_some() && !url.starts_with("s3://") {
        return Err(format!("{url}: object lock is supported on s3:// repositories only"));
    }
    match url.split_once("://").map(|(s, _)| s) {
        Some("s3") => {
            let mut s = S3Store::new(&S3Url::parse(url)?)?;
            if let Some(l) = lock {
                let signer = s.signer.clone().ok_or_else(|| format!("{url}: no signer"))?;
                s.lock = Some((l, signer));
            }
            Ok(s)
        }
        Some("gs") => {
            let u = CloudUrl::parse(url, &[])?;
            let store = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&u.bucket)
                .build()
                .map_err(|e| format!("{url}: {}", one_line(&e)))?;
            Ok(S3Store {
                inner: Arc::new(store),
                prefix: u.prefix.clone(),
                location: format!("gs://{}/{}", u.bucket, u.prefix),
                signer: None,
                lock: None,
                multipart_threshold: MULTIPART_THRESHOLD,
                part_size: PART_SIZE,
                storage_class: None,
            })
        }
        Some("az") => {
            let u = CloudUrl::parse(url, &["account", "endpoint", "emulator"])?;
            let mut b = object_store::azure::MicrosoftAzureBuilder::from_env().with_container_name(&u.bucket);
            if let Some(a) = u.opt("account") {
                b = b.with_account(a);
            }
            if u.opt("emulator") == Some("true") {
                b = b.with_use_emulator(true);
            }
            if let Some(e) = u.opt("endpoint") {
                b = b.with_endpoint(e.to_string()).with_allow_http(e.starts_with("http://"));
            }
            let store = b.build().map_err(|e| format!("{url}: {}", one_line(&e)))?;
            Ok(S3Store {
                inner: Arc::new(store),
                prefix: u.prefix.clone(),
                location: format!("az://{}/{}", u.bucket, u.prefix),
                signer: None,
                lock: None,
                multipart_threshold: MULTIPART_THRESHOLD,
                part_size: PART_SIZE,
                storage_class: None,
            })
        }
        _ => Err(format!("{url}: not an s3://, gs:// or az:// URL")),
    }
}

/// Any object store behind [`Store`] (named for its first and main use).
pub struct S3Store {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    location: String,
    /// For the requests object_store cannot make (S3 only).
    signer: Option<lock::Signer>,
    lock: Option<(Lock, lock::Signer)>,
    /// Objects larger than this go up in parts of `part_size`, several at once.
    multipart_threshold: usize,
    part_size: usize,
    /// For data packs (see [`S3Url::storage_class`]).
    storage_class: Option<String>,
}

/// Packs are 16 MiB by default: they go in one request. Larger ones (`init --pack-size`)
/// go in parts, which S3 requires beyond 5 GiB and which upload in parallel.
const MULTIPART_THRESHOLD: usize = 64 * 1024 * 1024;
const PART_SIZE: usize = 16 * 1024 * 1024;
/// Parts of one object in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Store({})", self.location)
    }
}

impl S3Store {
    /// Sets when (objects above `threshold` bytes) and how (parts of `part_size`) objects
    /// are uploaded in parts. S3 wants parts of at least 5 MiB, but for the last.
    pub fn with_multipart(mut self, threshold: usize, part_size: usize) -> S3Store {
        self.multipart_threshold = threshold;
        self.part_size = part_size.max(1);
        self
    }

    /// A multipart upload: parts in parallel, then complete (the object appears whole,
    /// at once); aborted on any failure so no parts are left to pay for.
    /// Create-only: multipart completion cannot be made conditional through object_store,
    /// so an existing object is found by a HEAD first. Only large packs take this path,
    /// and they are named by their content: a racing writer of the same name writes the
    /// same bytes, so the window between the HEAD and the completion loses nothing.
    async fn put_multipart(&self, path: &str, data: Vec<u8>, mode: PutMode) -> Result<()> {
        use futures::StreamExt;
        let key = self.key(path);
        if mode == PutMode::Create {
            match self.inner.head(&key).await {
                Ok(_) => return Err(Error::AlreadyExists { path: path.into() }),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(map(path, e)),
            }
        }
        let opts = object_store::PutMultipartOptions { attributes: self.attributes(path), ..Default::default() };
        let mut up = self.inner.put_multipart_opts(&key, opts).await.map_err(|e| map(path, e))?;
        let data = bytes::Bytes::from(data);
        let parts: Vec<_> = (0..data.len())
            .step_by(self.part_size)
            .map(|at| up.put_part(PutPayload::from(data.slice(at..(at + self.part_size).min(data.len())))))
            .collect();
        // put_part has queued each part in order; they may complete in any order.
        let sent: std::result::Result<Vec<()>, _> = futures::stream::iter(parts)
            .buffer_unordered(PARTS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect();
        let done = match sent {
            Ok(_) => up.complete().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            let _ = up.abort().await;
            return Err(map(path, e));
        }
        Ok(())
    }

    /// Builds the client (no request is made yet).
    pub fn new(url: &S3Url) -> std::result::Result<S3Store, String> {
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&url.bucket);
        // A private CA (on-premises MinIO, Ceph RGW, SeaweedFS): trusted besides the
        // system's roots, by object_store's client and by the signer's.
        let ca = match url.cacert.clone().or_else(|| std::env::var("CAIRN_CACERT").ok().filter(|v| !v.is_empty())) {
            Some(f) => {
                let pem = std::fs::read(&f).map_err(|e| format!("CA certificate file {f}: {e}"))?;
                if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                    return Err(format!("CA certificate file {f}: no PEM certificate in it"));
                }
                let os = object_store::Certificate::from_pem(&pem)
                    .map_err(|e| format!("CA certificate file {f}: not PEM certificates: {}", one_line(&e)))?;
                let rq = reqwest::Certificate::from_pem(&pem)
                    .map_err(|e| format!("CA certificate file {f}: not PEM certificates: {}", one_line(&e)))?;
                b = b.with_client_options(object_store::ClientOptions::new().with_root_certificate(os));
                Some(rq)
            }
            None => None,
        };
        if let Some(e) = &url.endpoint {
            b = b.with_endpoint(e);
        }
        let endpoint = url
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT").ok());
        if endpoint.as_deref().is_some_and(|e| e.starts_with("http://")) {
            b = b.with_allow_http(true);
        }
        // A custom endpoint usually wants path-style requests (MinIO, SeaweedFS, Garage).
        let path_style = url.path_style.unwrap_or(endpoint.is_some());
        b = b.with_virtual_hosted_style_request(!path_style);
        let region = url
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        b = b.with_region(&region);
        let (origin, bucket_path) = match &endpoint {
            Some(e) if path_style => (e.trim_end_matches('/').to_string(), format!("/{}", url.bucket)),
            Some(e) => {
                let (scheme, host) = e.split_once("://").unwrap_or(("https", e));
                (format!("{scheme}://{}.{}", url.bucket, host.trim_end_matches('/')), String::new())
            }
            None => (format!("https://{}.s3.{region}.amazonaws.com", url.bucket), String::new()),
        };
        // The conditional create is what makes concurrent writers safe.
        b = b.with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
        let inner = b.build().map_err(|e| format!("s3://{}: {e}", url.bucket))?;
        // The signed requests use object_store's own credential chain (environment,
        // web identity, ECS task role, instance profile), refreshed as it refreshes them.
        let signer = Some(lock::Signer::new(origin, bucket_path, region.clone(), inner.credentials().clone(), ca)?);
        let location =
            format!("s3://{}/{}{}", url.bucket, url.prefix, endpoint.map(|e| format!(" at {e}")).unwrap_or_default());
        Ok(S3Store {
            inner: Arc::new(inner),
            prefix: url.prefix.clone(),
            location,
            signer,
            lock: None,
            multipart_threshold: MULTIPART_THRESHOLD,
            part_size: PART_SIZE,
            storage_class: url.storage_class.clone(),
        })
    }

    fn class_for(&self, path: &str) -> Option<&str> {
        self.storage_class.as_deref().filter(|_| path.starts_with("data/"))
    }

    fn attributes(&self, path: &str) -> object_store::Attributes {
        let mut a = object_store::Attributes::new();
        if let Some(c) = self.class_for(path) {
            a.insert(object_store::Attribute::StorageClass, c.to_string().into());
        }
        a
    }

    fn key(&self, path: &str) -> OsPath {
        if self.prefix.is_empty() {
            OsPath::from(path)
        } else {
            OsPath::from(format!("{}/{path}", self.prefix))
        }
    }

    fn rel(&self, key: &OsPath) -> String {
        let k = key.as_ref();
        if self.prefix.is_empty() {
            k.to_string()
        } else {
            k.strip_prefix(&format!("{}/", self.prefix)).unwrap_or(k).to_string()
        }
    }
}

fn map(path: &str, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::NotFound { path: path.into() },
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            Error::AlreadyExists { path: path.into() }
        }
        e @ (object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }) => {
            Error::Denied { path: path.into(), message: one_line(&e) }
        }
        e => Error::Other { path: path.into(), message: one_line(&e) },
    }
}

/// [`map`] for a create-only put: the one request object_store does not retry after its
/// connection broke (it is not idempotent), so such a failure is left to the caller's
/// `RetryStore` as transient. Everything else object_store has retried already (for up to
/// its retry timeout): retrying it again here would multiply the wait on a dead endpoint.
fn map_create(path: &str, e: object_store::Error) -> Error {
    if cut_off(&e) {
        return Error::Transient { path: path.into(), message: one_line(&e) };
    }
    map(path, e)
}

/// Whether an error comes from a connection that broke or timed out (an I/O error of
/// that kind somewhere in its chain of causes), which a new request may not meet.
fn cut_off(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind as K;
    let mut src = Some(e);
    while let Some(x) = src {
        if let Some(io) = x.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                K::BrokenPipe | K::ConnectionReset | K::ConnectionAborted | K::UnexpectedEof | K::TimedOut
            ) {
                return true;
            }
        }
        src = x.source();
    }
    false
}

fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = x.source();
    }
    s.replace('\n', " ")
}

impl S3Store {
    /// An object's S3 Object Lock retention: (mode, retain-until in Unix seconds), `None`
    /// when it has none.
    pub async fn retention(&self, path: &str) -> Result<Option<(String, i64)>> {
        let Some(signer) = &self.signer else {
            return Err(Error::Other { path: path.into(), message: "not an S3 store".into() });
        };
        signer.retention(self.key(path).as_ref()).await.map_err(|message| Error::Other { path: path.into(), message })
    }
}

impl Store for S3Store {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { atomic_create: true, delete: true }
    }

    fn put<'a>(&'a self, path: &'a str, data: Vec<u8>, mode: PutMode) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // Leases and partial WAL segments are rewritten in place: never locked.
            if let Some((l, signer)) =
                self.lock.as_ref().filter(|_| !path.starts_with("writers/") && !path.ends_with(".partial"))
            {
                let key = self.key(path).to_string();
                let status = signer
                    .put_locked(&key, data, mode == PutMode::Create, l, self.class_for(path))
                    .await
                    .map_err(|f| match f {
                        lock::Failure::Transient(message) => Error::Transient { path: path.into(), message },
                        lock::Failure::Final(message) => Error::Other { path: path.into(), message },
                    })?;
                if !status.is_success() {
                    return Err(Error::AlreadyExists { path: path.into() });
                }
                return Ok(());
            }
            if data.len() > self.multipart_threshold {
                return self.put_multipart(path, data, mode).await;
            }
            let opts = PutOptions {
                mode: match mode {
                    PutMode::Create => object_store::PutMode::Create,
                    PutMode::Overwrite => object_store::PutMode::Overwrite,
                },
                attributes: self.attributes(path),
                ..Default::default()
            };
            let create = mode == PutMode::Create;
            self.inner.put_opts(&self.key(path), PutPayload::from(data), opts).await.map_err(|e| {
                if create {
                    map_create(path, e)
                } else {
                    map(path, e)
                }
            })?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, path: &'a str, range: Option<Range<u64>>) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            if let Some(r) = &range {
                if r.start > r.end {
                    return Err(Error::Other { path: path.into(), message: format!("bad range {r:?}") });
                }
                if r.start == r.end {
                    self.head(path).await?;
                    return Ok(Vec::new());
                }
            }
            let opts = GetOptions { range: range.clone().map(GetRange::Bounded), ..Default::default() };
            let res = self.inner.get_opts(&self.key(path), opts).await.map_err(|e| map(path, e))?;
            let bytes = res.bytes().await.map_err(|e| map(path, e))?;
            if let Some(r) = range {
                if bytes.len() as u64 != r.end - r.start {
                    return Err(Error::Other {
                        path: path.into(),
                        message: format!("range {r:?} beyond the end of the object"),
                    });
                }
            }
            Ok(bytes.to_vec())
        })
    }

    fn head<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<ObjectMeta>> {
        Box::pin(async move {
            let m = self.inner.head(&self.key(path)).await.map_err(|e| map(path, e))?;
            Ok(ObjectMeta { path: path.into(), size: m.size, modified: Some(m.last_modified.timestamp()) })
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectMeta>>> {
        Box::pin(async move {
            let p = self.key(prefix.trim_end_matches('/'));
            let metas: Vec<object_store::ObjectMeta> =
                self.inner.list(Some(&p)).try_collect().await.map_err(|e| map(prefix, e))?;
            Ok(metas
                .into_iter()
                .map(|m| ObjectMeta {
                    path: self.rel(&m.location),
                    size: m.size,
                    modified: Some(m.last_modified.timestamp()),
                })
                .collect())
        })
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match self.inner.delete(&self.key(path)).await {
                Ok(()) => Ok(()),
                Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(map(path, e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A create-only put cut off mid-body is an error object_store does not retry: it must
    /// come out transient so the retry decorator does (a flaky CI run found it as 'error
    /// writing a body to connection: Broken pipe'); any other request object_store has
    /// retried already, so its errors stay final.
    #[test]
    fn broken_connections_are_transient_and_refusals_are_not() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error sending request")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let cut = |kind| object_store::Error::Generic {
            store: "S3",
            source: Box::new(Outer(std::io::Error::new(kind, "cut"))),
        };
        for kind in [std::io::ErrorKind::BrokenPipe, std::io::ErrorKind::ConnectionReset, std::io::ErrorKind::TimedOut]
        {
            assert!(!map("data/00/x", cut(kind)).is_transient(), "object_store retried it already: {kind:?}");
            let e = map_create("data/00/x", cut(kind));
            assert!(e.is_transient(), "{kind:?}: {e}");
            assert!(e.to_string().contains("cut"), "{e}");
        }
        assert!(!map_create("data/00/x", cut(std::io::ErrorKind::InvalidData)).is_transient());
        let denied = object_store::Error::PermissionDenied { path: "x".into(), source: "403".into() };
        assert!(!map("x", denied).is_transient());
        let taken = object_store::Error::AlreadyExists { path: "x".into(), source: "412".into() };
        assert!(matches!(map("x", taken), Error::AlreadyExists { .. }));
    }

    #[test]
    fn urls_parse() {
        let u = S3Url::parse("s3://b/some/prefix?endpoint=http://127.0.0.1:9000&region=eu-1&path_style=true").unwrap();
        assert_eq!(u.bucket, "b");
        assert_eq!(u.prefix, "some/prefix");
        assert_eq!(u.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(u.region.as_deref(), Some("eu-1"));
        assert_eq!(u.path_style, Some(true));
        assert_eq!(S3Url::parse("s3://b").unwrap().prefix, "");
        assert!(S3Url::parse("s3:///x").is_err());
        assert!(S3Url::parse("s3://b/../x").is_err());
        assert!(S3Url::parse("s3://b?colour=red").is_err());
        assert!(S3Url::parse("gs://b").is_err());
    }
}
