//! What a backup reads from.

use std::io::{self, Read};
use std::path::Path;
use std::sync::Mutex;

use cairn_format::tree::{Node, NodeKind, Tree};

/// A tree of entries with metadata. Paths are absolute, as the user named them.
pub trait Source: Sync {
    /// Metadata of `path` itself (never following a final symlink), named `name`.
    fn node(&self, path: &Path, name: &[u8]) -> io::Result<Node>;
    /// The entries of a directory, with metadata, minus what the source excludes.
    /// Sorted by name. Per-entry failures are returned as `Err` items, not fatal.
    /// `before`: the directory as the parent snapshot has it. An implementation may take
    /// an entry's extended attributes and symlink target from there instead of reading
    /// them when the entry's kind, inode, mtime and ctime are the same (changing either
    /// changes the ctime): an unchanged re-backup then costs one stat per entry.
    fn read_dir(&self, path: &Path, before: Option<&Tree>) -> io::Result<Vec<(Vec<u8>, io::Result<Node>)>>;
    /// Opens a file for reading from byte `offset`. `walked` is its node from the walk: an
    /// implementation should refuse a different file now at that path (replaced since).
    fn open(&self, path: &Path, walked: &Node, offset: u64) -> io::Result<Box<dyn Read + Send>>;
    /// Asks for the content of a small file the backup will read to be read ahead of its
    /// reader, without waiting for it. Best effort: errors are the reader's to meet. The
    /// default does nothing.
    fn prefetch(&self, _path: &Path, _walked: &Node) {}
    /// Whether the file at `path` changed since `before` was taken (size, mtime, ctime),
    /// asked after reading it.
    fn changed_since(&self, path: &Path, before: &Node) -> bool {
        match self.node(path, &before.name.0) {
            Ok(after) => after.mtime != before.mtime || after.size != before.size || after.ctime != before.ctime,
            Err(_) => true,
        }
    }
    /// Whether `path` (an entry of a directory being walked) should be left out.
    fn is_excluded(&self, _path: &Path, _is_dir: bool) -> bool {
        false
    }
}

/// One stream (stdin, a command's output) as a single file `/<name>`.
pub struct StreamSource {
    name: Vec<u8>,
    node: Node,
    reader: Mutex<Option<Box<dyn Read + Send>>>,
}

impl StreamSource {
    pub fn new(name: &str, template: Node, reader: Box<dyn Read + Send>) -> Self {
        let mut node = template;
        node.kind = NodeKind::File;
        node.name.0 = name.as_bytes().to_vec();
        StreamSource { name: name.as_bytes().to_vec(), node, reader: Mutex::new(Some(reader)) }
    }
    pub fn path(&self) -> String {
        format!("/{}", String::from_utf8_lossy(&self.name))
    }
}

impl Source for StreamSource {
    fn node(&self, path: &Path, name: &[u8]) -> io::Result<Node> {
        if path == Path::new("/") {
            let mut n = self.node.clone();
            n.kind = NodeKind::Dir;
            n.mode = 0o755;
            n.name.0 = name.to_vec();
            return Ok(n);
        }
        Ok(self.node.clone())
    }
    fn read_dir(&self, _path: &Path, _before: Option<&Tree>) -> io::Result<Vec<(Vec<u8>, io::Result<Node>)>> {
        Ok(vec![(self.name.clone(), Ok(self.node.clone()))])
    }
    fn open(&self, _path: &Path, _walked: &Node, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        if offset != 0 {
            return Err(io::Error::other("a stream can only be read from its start"));
        }
        self.reader
            .lock()
            .map_err(|_| io::Error::other("stream lock poisoned"))?
            .take()
            .ok_or_else(|| io::Error::other("the stream can be read only once"))
    }
}
