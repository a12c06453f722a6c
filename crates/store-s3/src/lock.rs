//! S3 Object Lock: puts that carry a retention (`x-amz-object-lock-mode` and
//! `-retain-until-date`) and heads that read it back. `object_store` cannot send these
//! headers, so these few requests are made and signed (AWS Signature Version 4) here.
//! Credentials are object_store's (its provider chain: `AWS_*` variables, web identity,
//! ECS task role, EC2 instance profile), asked for on every request so that temporary
//! credentials are used fresh.

use base64::Engine;
use ring::{digest, hmac};

#[derive(Debug, Clone)]
pub struct Lock {
    /// `COMPLIANCE` or `GOVERNANCE`.
    pub mode: String,
    pub days: u32,
}

/// Why a locked put failed: `Transient` when a retry may succeed (no reply, a 5xx, a
/// 429), `Final` otherwise.
#[derive(Debug)]
pub(crate) enum Failure {
    Transient(String),
    Final(String),
}

#[derive(Clone)]
pub(crate) struct Signer {
    pub client: reqwest::Client,
    /// `http(s)://host[:port]` and the path prefix of the bucket (`/bucket` for path-style
    /// requests, empty for virtual-hosted ones).
    pub origin: String,
    pub bucket_path: String,
    pub region: String,
    credentials: object_store::aws::AwsCredentialProvider,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({}{})", self.origin, self.bucket_path)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha256(b: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, b).as_ref().to_vec()
}

fn mac(key: &[u8], data: &str) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes()).as_ref().to_vec()
}

/// RFC 3986 encoding of one path, keeping `/`.
fn encode_path(p: &str) -> String {
    let mut out = String::new();
    for b in p.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Signer {
    pub fn new(
        origin: String,
        bucket_path: String,
        region: String,
        credentials: object_store::aws::AwsCredentialProvider,
        ca: Option<reqwest::Certificate>,
    ) -> Result<Signer, String> {
        let mut c = reqwest::Client::builder();
        if let Some(ca) = ca {
            c = c.add_root_certificate(ca);
        }
        let client = c.build().map_err(|e| format!("the signed-request client: {e}"))?;
        Ok(Signer { client, origin, bucket_path, region, credentials })
    }

    /// A signed request for `key` (the object key within the bucket).
    async fn request(
        &self,
        method: reqwest::Method,
        key: &str,
        mut headers: Vec<(String, String)>,
        body: &[u8],
    ) -> Result<reqwest::RequestBuilder, String> {
        let cred = self.credentials.get_credential().await.map_err(|e| format!("S3 credentials: {e}"))?;
        let now = jiff::Timestamp::now();
        let amz_date = now.strftime("%Y%m%dT%H%M%SZ").to_string();
        let day = &amz_date[..8];
        let host = self.origin.split("://").nth(1).unwrap_or("").to_string();
        let path = encode_path(&format!("{}/{}", self.bucket_path, key));
        let payload = hex(&sha256(body));
        headers.push(("host".into(), host));
        headers.push(("x-amz-content-sha256".into(), payload.clone()));
        headers.push(("x-amz-date".into(), amz_date.clone()));
        if let Some(t) = &cred.token {
            headers.push(("x-amz-security-token".into(), t.clone()));
        }
        let mut h: Vec<(String, String)> =
            headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string())).collect();
        h.sort();
        let canonical_headers: String = h.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed: Vec<&str> = h.iter().map(|(k, _)| k.as_str()).collect();
        let signed = signed.join(";");
        let canonical = format!("{}\n{path}\n\n{canonical_headers}\n{signed}\n{payload}", method.as_str());
        let scope = format!("{day}/{}/s3/aws4_request", self.region);
        let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex(&sha256(canonical.as_bytes())));
        let k = mac(format!("AWS4{}", cred.secret_key).as_bytes(), day);
        let k = mac(&k, &self.region);
        let k = mac(&k, "s3");
        let k = mac(&k, "aws4_request");
        let sig = hex(&mac(&k, &to_sign));
        let auth =
            format!("AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={sig}", cred.key_id);
        let mut rb = self.client.request(method, format!("{}{path}", self.origin)).header("authorization", auth);
        for (k, v) in headers.into_iter().filter(|(k, _)| k != "host") {
            rb = rb.header(k, v);
        }
        Ok(rb)
    }

    /// Puts an object with a retention of `lock.days` from now; create-only when `create`.
    /// Returns the status (success, or 412/409 when `create` found the key taken).
    pub async fn put_locked(
        &self,
        key: &str,
        data: Vec<u8>,
        create: bool,
        lock: &Lock,
        storage_class: Option<&str>,
    ) -> Result<reqwest::StatusCode, Failure> {
        let until = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(lock.days as i64 * 86400))
            .map_err(|e| Failure::Final(e.to_string()))?
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let mut headers = vec![
            ("x-amz-object-lock-mode".to_string(), lock.mode.clone()),
            ("x-amz-object-lock-retain-until-date".to_string(), until),
            // S3 wants a checksum on every put that sets a retention.
            ("x-amz-checksum-sha256".to_string(), base64::engine::general_purpose::STANDARD.encode(sha256(&data))),
            ("x-amz-sdk-checksum-algorithm".to_string(), "SHA256".to_string()),
        ];
        if create {
            headers.push(("if-none-match".to_string(), "*".to_string()));
        }
        if let Some(c) = storage_class {
            headers.push(("x-amz-storage-class".to_string(), c.to_string()));
        }
        let rb = self.request(reqwest::Method::PUT, key, headers, &data).await.map_err(Failure::Final)?;
        // No response at all (refused, reset, timed out): nothing says the server refused
        // the object, so the caller may retry.
        let resp = rb.body(data).send().await.map_err(|e| Failure::Transient(e.to_string()))?;
        let status = resp.status();
        if !status.is_success()
            && status != reqwest::StatusCode::PRECONDITION_FAILED
            && status != reqwest::StatusCode::CONFLICT
        {
            let text = resp.text().await.unwrap_or_default();
            let message = format!("{status}: {}", text.chars().take(300).collect::<String>());
            return Err(if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                Failure::Transient(message)
            } else {
                Failure::Final(message)
            });
        }
        Ok(status)
    }

    /// The retention of an object: (mode, retain-until as Unix seconds), or `None` if it
    /// has none.
    pub async fn retention(&self, key: &str) -> Result<Option<(String, i64)>, String> {
        let resp =
            self.request(reqwest::Method::HEAD, key, Vec::new(), b"").await?.send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HEAD {key}: {}", resp.status()));
        }
        let h = resp.headers();
        let mode = h.get("x-amz-object-lock-mode").and_then(|v| v.to_str().ok()).map(str::to_string);
        let until = h
            .get("x-amz-object-lock-retain-until-date")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_second());
        Ok(mode.zip(until))
    }
}
