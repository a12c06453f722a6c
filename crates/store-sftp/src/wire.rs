//! SFTP version 3 on the wire (draft-ietf-secsh-filexfer-02, the version OpenSSH speaks):
//! packets are a big-endian u32 length, a type byte and a payload; requests carry an id
//! that the reply repeats. Only what the store uses is here.

use tokio::io::{AsyncRead, AsyncReadExt};

pub const FXP_INIT: u8 = 1;
pub const FXP_VERSION: u8 = 2;
pub const FXP_OPEN: u8 = 3;
pub const FXP_CLOSE: u8 = 4;
pub const FXP_READ: u8 = 5;
pub const FXP_WRITE: u8 = 6;
pub const FXP_FSTAT: u8 = 8;
pub const FXP_OPENDIR: u8 = 11;
pub const FXP_READDIR: u8 = 12;
pub const FXP_REMOVE: u8 = 13;
pub const FXP_MKDIR: u8 = 14;
pub const FXP_STAT: u8 = 17;
pub const FXP_RENAME: u8 = 18;
pub const FXP_STATUS: u8 = 101;
pub const FXP_HANDLE: u8 = 102;
pub const FXP_DATA: u8 = 103;
pub const FXP_NAME: u8 = 104;
pub const FXP_ATTRS: u8 = 105;
pub const FXP_EXTENDED: u8 = 200;
pub const FXP_EXTENDED_REPLY: u8 = 201;

pub const FX_OK: u32 = 0;
pub const FX_EOF: u32 = 1;
pub const FX_NO_SUCH_FILE: u32 = 2;
pub const FX_PERMISSION_DENIED: u32 = 3;
pub const FX_NO_CONNECTION: u32 = 6;
pub const FX_CONNECTION_LOST: u32 = 7;

pub const FXF_READ: u32 = 0x01;
pub const FXF_WRITE: u32 = 0x02;
pub const FXF_CREAT: u32 = 0x08;
pub const FXF_EXCL: u32 = 0x20;

const ATTR_SIZE: u32 = 0x01;
const ATTR_UIDGID: u32 = 0x02;
const ATTR_PERMISSIONS: u32 = 0x04;
const ATTR_ACMODTIME: u32 = 0x08;
const ATTR_EXTENDED: u32 = 0x8000_0000;

/// Replies larger than this are refused: OpenSSH's own limit is 256 KiB.
const MAX_PACKET: u32 = 1 << 20;

pub fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_be_bytes());
}

pub fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_be_bytes());
}

pub fn put_str(b: &mut Vec<u8>, s: &[u8]) {
    put_u32(b, s.len() as u32);
    b.extend_from_slice(s);
}

/// A whole packet: length, type, payload.
pub fn packet(typ: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + payload.len());
    put_u32(&mut p, payload.len() as u32 + 1);
    p.push(typ);
    p.extend_from_slice(payload);
    p
}

/// Reads one packet (type byte first).
pub async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let len = r.read_u32().await?;
    if len == 0 || len > MAX_PACKET {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("SFTP packet of {len} bytes")));
    }
    let mut p = vec![0u8; len as usize];
    r.read_exact(&mut p).await?;
    Ok(p)
}

/// A cursor over a payload; every read is checked (the server is not trusted).
pub struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Reader { b }
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4).and_then(|s| s.try_into().ok()).map(u32::from_be_bytes)
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|s| s.try_into().ok()).map(u64::from_be_bytes)
    }
    pub fn string(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn attrs(&mut self) -> Option<Attrs> {
        let flags = self.u32()?;
        let mut a = Attrs::default();
        if flags & ATTR_SIZE != 0 {
            a.size = Some(self.u64()?);
        }
        if flags & ATTR_UIDGID != 0 {
            self.u32()?;
            self.u32()?;
        }
        if flags & ATTR_PERMISSIONS != 0 {
            a.permissions = Some(self.u32()?);
        }
        if flags & ATTR_ACMODTIME != 0 {
            self.u32()?;
            a.mtime = Some(self.u32()?);
        }
        if flags & ATTR_EXTENDED != 0 {
            for _ in 0..self.u32()? {
                self.string()?;
                self.string()?;
            }
        }
        Some(a)
    }
}

#[derive(Debug, Default, Clone)]
pub struct Attrs {
    pub size: Option<u64>,
    pub permissions: Option<u32>,
    pub mtime: Option<u32>,
}

impl Attrs {
    const S_IFMT: u32 = 0o170000;
    pub fn is_dir(&self) -> bool {
        self.permissions.is_some_and(|p| p & Self::S_IFMT == 0o040000)
    }
    /// A regular file; without permissions (servers may omit them), whatever is not a
    /// directory.
    pub fn is_file(&self) -> bool {
        match self.permissions {
            Some(p) => p & Self::S_IFMT == 0o100000,
            None => true,
        }
    }
}

/// A reply: its type, the id it answers and the rest of the payload.
#[derive(Debug)]
pub struct Msg {
    pub typ: u8,
    pub id: u32,
    pub body: Vec<u8>,
}

impl Msg {
    pub fn parse(mut p: Vec<u8>) -> Option<Msg> {
        if p.len() < 5 {
            return None;
        }
        let typ = p[0];
        let id = u32::from_be_bytes([p[1], p[2], p[3], p[4]]);
        p.drain(..5);
        Some(Msg { typ, id, body: p })
    }

    pub fn status(&self) -> Option<(u32, String)> {
        let mut r = Reader::new(&self.body);
        let code = r.u32()?;
        let msg = r.string().map(|m| String::from_utf8_lossy(m).into_owned()).unwrap_or_default();
        Some((code, msg))
    }

    /// The error a status reply carries, or a protocol error for anything else.
    fn fail(&self, path: &str, want: &str) -> cairn_store::Error {
        match (self.typ, self.status()) {
            (FXP_STATUS, Some((code, msg))) => crate::conn::status_error(path, code, &msg),
            _ => crate::conn::bad_reply(path, want),
        }
    }

    pub fn ok(&self, path: &str) -> cairn_store::Result<()> {
        match (self.typ, self.status()) {
            (FXP_STATUS, Some((FX_OK, _))) => Ok(()),
            _ => Err(self.fail(path, "status")),
        }
    }

    pub fn handle(&self, path: &str) -> cairn_store::Result<Vec<u8>> {
        match self.typ {
            FXP_HANDLE => Reader::new(&self.body).string().map(<[u8]>::to_vec).ok_or_else(|| self.fail(path, "handle")),
            _ => Err(self.fail(path, "handle")),
        }
    }

    pub fn attrs(&self, path: &str) -> cairn_store::Result<Attrs> {
        match self.typ {
            FXP_ATTRS => Reader::new(&self.body).attrs().ok_or_else(|| self.fail(path, "attributes")),
            _ => Err(self.fail(path, "attributes")),
        }
    }

    /// The bytes of a DATA reply; end of file reads as no bytes.
    pub fn data(&self, path: &str) -> cairn_store::Result<&[u8]> {
        match (self.typ, self.status()) {
            (FXP_DATA, _) => Reader::new(&self.body).string().ok_or_else(|| self.fail(path, "data")),
            (FXP_STATUS, Some((FX_EOF, _))) => Ok(&[]),
            _ => Err(self.fail(path, "data")),
        }
    }

    pub fn names(&self) -> Option<Vec<(String, Attrs)>> {
        if self.typ != FXP_NAME {
            return None;
        }
        let mut r = Reader::new(&self.body);
        let n = r.u32()?;
        let mut out = Vec::with_capacity(n.min(4096) as usize);
        for _ in 0..n {
            let name = String::from_utf8_lossy(r.string()?).into_owned();
            r.string()?; // long name, for humans
            out.push((name, r.attrs()?));
        }
        Some(out)
    }
}

/// Runs every reply decoder the client uses over `bytes` as one reply packet (for the
/// fuzz target `sftp_reply`): replies come from the server, which may be hostile.
#[doc(hidden)]
pub fn decode_any_reply(bytes: &[u8]) {
    let Some(m) = Msg::parse(bytes.to_vec()) else { return };
    let _ = m.status();
    let _ = m.ok("/fuzz");
    let _ = m.handle("/fuzz");
    let _ = m.attrs("/fuzz");
    let _ = m.data("/fuzz");
    let _ = m.names();
    let mut r = Reader::new(&m.body);
    let _ = r.attrs();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_replies_are_refused_not_panics() {
        let mut body = Vec::new();
        put_u32(&mut body, 2);
        put_str(&mut body, b"a");
        put_str(&mut body, b"-rw a");
        put_u32(&mut body, ATTR_SIZE | ATTR_PERMISSIONS);
        put_u64(&mut body, 5);
        put_u32(&mut body, 0o100644);
        let full = Msg { typ: FXP_NAME, id: 1, body: body.clone() };
        // Claims two entries, holds one.
        assert!(full.names().is_none());
        for cut in 0..body.len() {
            let m = Msg { typ: FXP_NAME, id: 1, body: body[..cut].to_vec() };
            assert!(m.names().is_none());
            let _ = Msg { typ: FXP_DATA, id: 1, body: body[..cut].to_vec() }.data("x");
            let _ = Msg { typ: FXP_ATTRS, id: 1, body: body[..cut].to_vec() }.attrs("x");
        }
        assert!(Msg::parse(vec![FXP_STATUS, 0, 0]).is_none());
    }

    #[test]
    fn attrs_round_trip() {
        let mut b = Vec::new();
        put_u32(&mut b, ATTR_SIZE | ATTR_UIDGID | ATTR_PERMISSIONS | ATTR_ACMODTIME);
        put_u64(&mut b, 42);
        put_u32(&mut b, 0);
        put_u32(&mut b, 0);
        put_u32(&mut b, 0o040755);
        put_u32(&mut b, 1);
        put_u32(&mut b, 1_700_000_000);
        let a = Reader::new(&b).attrs().unwrap();
        assert_eq!((a.size, a.mtime, a.is_dir(), a.is_file()), (Some(42), Some(1_700_000_000), true, false));
    }
}
