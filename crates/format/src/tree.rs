//! Trees: one JSON document per directory, `{"version":1,"nodes":[...]}`, nodes sorted by
//! the bytes of their names, names unique. A directory node points to its subtree by id, so
//! an unchanged subtree is stored once across all snapshots.
//!
//! Names and symlink targets are bytes on Unix. They are written as a JSON string when they
//! are valid UTF-8 and as `{"hex": "..."}` otherwise, so no name is ever altered.

use serde::{Deserialize, Serialize};

use crate::id::{from_hex, to_hex};
use crate::magic::TREE_VERSION;
use crate::{BlobId, Error, TreeId};

/// Bytes that are usually UTF-8 (file names, link targets, xattr names).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RawName(pub Vec<u8>);

impl std::fmt::Debug for RawName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl RawName {
    pub fn lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawRepr {
    Utf8(String),
    Hex { hex: String },
}

impl Serialize for RawName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) => RawRepr::Utf8(t.to_string()).serialize(s),
            Err(_) => RawRepr::Hex { hex: to_hex(&self.0) }.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for RawName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match RawRepr::deserialize(d)? {
            RawRepr::Utf8(s) => Ok(RawName(s.into_bytes())),
            RawRepr::Hex { hex } => from_hex(&hex).map(RawName).ok_or_else(|| serde::de::Error::custom("bad hex name")),
        }
    }
}

/// Hex-encoded bytes (xattr values).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct HexBytes(pub Vec<u8>);

impl Serialize for HexBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        from_hex(&s).map(HexBytes).ok_or_else(|| serde::de::Error::custom("bad hex"))
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Chardev,
    Blockdev,
    Socket,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Xattr {
    pub name: RawName,
    pub value: HexBytes,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One directory entry with its full metadata. Times are nanoseconds since the Unix epoch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: RawName,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub mtime: i64,
    pub atime: i64,
    pub ctime: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inode: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub device: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub links: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<BlobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<TreeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<RawName>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
}

impl Node {
    pub fn new(name: Vec<u8>, kind: NodeKind) -> Self {
        Node {
            name: RawName(name),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            mtime: 0,
            atime: 0,
            ctime: 0,
            inode: 0,
            device: 0,
            links: 0,
            size: 0,
            content: Vec::new(),
            subtree: None,
            link_target: None,
            rdev: 0,
            xattrs: Vec::new(),
        }
    }
}

/// Whether `name` may be a directory entry: not empty, not `.` or `..`, no `/`, no NUL.
/// Restore refuses trees with any other name, so a hostile tree cannot escape the target.
pub fn is_safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Tree {
    pub version: u32,
    #[serde(deserialize_with = "bounded_nodes")]
    pub nodes: Vec<Node>,
}

/// The most entries a tree may hold (§11). A real directory reaches the 128 MiB blob limit
/// near 400,000 entries (a real node encodes to 200-350 bytes); hostile nodes of 80 bytes
/// would fit 1.7 million into that limit and take ~290 bytes each once decoded, so the
/// count, not the bytes, is what bounds a reader's memory (about 300 MiB at this cap).
pub const MAX_TREE_ENTRIES: usize = 1_000_000;

/// `nodes`, refused as soon as it holds more than [`MAX_TREE_ENTRIES`] (before the rest is
/// decoded), and never preallocated from a hostile length hint.
fn bounded_nodes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Node>, D::Error> {
    struct Nodes;
    impl<'de> serde::de::Visitor<'de> for Nodes {
        type Value = Vec<Node>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "an array of at most {MAX_TREE_ENTRIES} nodes")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Node>, A::Error> {
            let mut nodes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(n) = seq.next_element()? {
                if nodes.len() == MAX_TREE_ENTRIES {
                    return Err(serde::de::Error::custom(format!("more than {MAX_TREE_ENTRIES} entries")));
                }
                nodes.push(n);
            }
            Ok(nodes)
        }
    }
    d.deserialize_seq(Nodes)
}

impl Tree {
    pub fn new(mut nodes: Vec<Node>) -> Self {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Tree { version: TREE_VERSION, nodes }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain structs of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes and validates: known version, safe and unique names in sorted order.
    pub fn decode(buf: &[u8]) -> Result<Self, Error> {
        let t: Tree = serde_json::from_slice(buf).map_err(|source| Error::Json { what: "tree", source })?;
        if t.version != TREE_VERSION {
            return Err(Error::Version { what: "tree", version: t.version.into() });
        }
        for (i, n) in t.nodes.iter().enumerate() {
            if !is_safe_name(&n.name.0) {
                return Err(Error::malformed("tree", format!("unsafe entry name {:?}", n.name)));
            }
            if i > 0 && t.nodes[i - 1].name >= n.name {
                return Err(Error::malformed("tree", format!("entries not sorted or duplicate at {:?}", n.name)));
            }
        }
        Ok(t)
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes.binary_search_by(|n| n.name.0.as_slice().cmp(name)).ok().map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Id;
    use proptest::prelude::*;

    fn arb_node() -> impl Strategy<Value = Node> {
        (
            proptest::collection::vec(1u8..=255, 1..20),
            any::<u32>(),
            any::<i64>(),
            any::<u64>(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..3),
            any::<bool>(),
        )
            .prop_filter("safe", |(n, ..)| is_safe_name(n))
            .prop_map(|(name, mode, t, size, content, link)| {
                let mut n = Node::new(name, if link { NodeKind::Symlink } else { NodeKind::File });
                n.mode = mode;
                n.mtime = t;
                n.size = size;
                n.content = content.into_iter().map(|c| BlobId(Id(c))).collect();
                if link {
                    n.link_target = Some(RawName(vec![0xff, b'/', b'x']));
                }
                n.xattrs = vec![Xattr { name: RawName(b"user.a".to_vec()), value: HexBytes(vec![0, 1, 255]) }];
                n
            })
    }

    proptest! {
        #[test]
        fn tree_round_trip(nodes in proptest::collection::vec(arb_node(), 0..10)) {
            let mut nodes = nodes;
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            nodes.dedup_by(|a, b| a.name == b.name);
            let t = Tree::new(nodes);
            prop_assert_eq!(Tree::decode(&t.encode()).unwrap(), t);
        }

        #[test]
        fn tree_decoder_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Tree::decode(&buf);
        }
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in [&b".."[..], b".", b"a/b", b"", b"a\0b"] {
            let mut t = Tree::new(vec![]);
            t.nodes.push(Node::new(bad.to_vec(), NodeKind::File));
            assert!(Tree::decode(&t.encode()).is_err(), "{bad:?} accepted");
        }
    }
}
