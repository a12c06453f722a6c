//! Typed 32-byte ids. Each kind of object has its own type so a pack id can never be
//! passed where a blob id is expected.

use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }
    pub fn from_hex(s: &str) -> Option<Id> {
        let v = from_hex(s)?;
        let a: [u8; 32] = v.try_into().ok()?;
        Some(Id(a))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex()[..16])
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

pub fn to_hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(H[(x >> 4) as usize] as char);
        s.push(H[(x & 15) as usize] as char);
    }
    s
}

pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let d = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes().chunks(2).map(|p| Some(d(p[0])? << 4 | d(p[1])?)).collect()
}

macro_rules! typed_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub Id);
        impl $name {
            pub fn to_hex(&self) -> String { self.0.to_hex() }
            pub fn from_hex(s: &str) -> Option<Self> { Id::from_hex(s).map($name) }
            pub fn short(&self) -> String { self.0.to_hex()[..8].to_string() }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { write!(f, "{}({:?})", stringify!($name), self.0) }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { fmt::Display::fmt(&self.0, f) }
        }
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> { s.serialize_str(&self.0.to_hex()) }
        }
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
            }
        }
    };
}

typed_id!(
    /// Keyed BLAKE3 of a blob's plaintext (data or tree).
    BlobId
);
typed_id!(
    /// The blob id of a tree blob.
    TreeId
);
typed_id!(
    /// BLAKE3 of a pack file's bytes; also its name.
    PackId
);
typed_id!(
    /// BLAKE3 of a snapshot file's bytes; also its name.
    SnapshotId
);
typed_id!(
    /// BLAKE3 of an index file's bytes; also its name.
    IndexId
);
typed_id!(
    /// BLAKE3 of a key file's bytes; also its name.
    KeyId
);
typed_id!(
    /// BLAKE3 of a prune document's bytes (a deletion marker or its arming); also its name.
    MarkerId
);
typed_id!(
    /// Random name of one writer's lease object, chosen when the writer starts.
    WriterId
);

impl TreeId {
    pub fn blob(self) -> BlobId {
        BlobId(self.0)
    }
}

impl BlobId {
    pub fn tree(self) -> TreeId {
        TreeId(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn hex_round_trip() {
        let id = Id([0xab; 32]);
        assert_eq!(Id::from_hex(&id.to_hex()), Some(id));
        assert_eq!(Id::from_hex("zz"), None);
        assert_eq!(Id::from_hex("abc"), None);
    }
}
