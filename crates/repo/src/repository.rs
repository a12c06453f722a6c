//! Init, open, sealed objects, snapshots, blobs and trees.

use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::sync::Arc;

use cairn_chunker::ChunkerParams;
use cairn_crypto::{IdKey, KdfParams, MasterKey};
use cairn_format::config::{ChunkerConfig, Config};
use cairn_format::index::IndexFile;
use cairn_format::keyfile::KeyFile;
use cairn_format::magic::{COMPRESSION_NONE, COMPRESSION_ZSTD, CONFIG_VERSION, PACK_PREFIX_LEN};
use cairn_format::pack::BlobEntry;
use cairn_format::snapshot::Snapshot;
use cairn_format::tree::Tree;
use cairn_format::{BlobId, Id, IndexId, KeyId, PackId, SnapshotId, TreeId};
use cairn_store::{PutMode, Store};

use crate::index::{Index, IndexBuilder};
use crate::keys::{make_key_file, try_unlock, KeyMeta};
use crate::lease::LeaseState;
use crate::{blob, layout, packer, Error, Result};

/// Index files with their ids.
pub type IndexFiles = Vec<(IndexId, IndexFile)>;

pub struct Repository {
    store: Arc<dyn Store>,
    rt: tokio::runtime::Handle,
    master: MasterKey,
    id_key: IdKey,
    config: Config,
    key_id: KeyId,
    /// The writer lease this process holds, if any (see `lease.rs`).
    lease: std::sync::Mutex<Option<Arc<LeaseState>>>,
    /// Small trees recently loaded, by id (see [`Repository::load_tree`]).
    small_trees: std::sync::Mutex<HashMap<TreeId, Tree>>,
}

/// Trees of at most this many entries are kept once loaded, up to [`SMALL_TREES`] of
/// them: a snapshot whose directories share subtrees (legitimately, or thousands of
/// times over in a hostile one) then costs one decryption per distinct tree, not per path.
const SMALL_TREE_NODES: usize = 64;
const SMALL_TREES: usize = 4096;

/// Index files fetched ahead of the one being added to the index while loading.
const INDEX_FETCHES_AHEAD: usize = 4;

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub kdf: KdfParams,
    pub compression_level: i32,
    pub pack_size: u32,
    /// Chunker parameters and id key of another repository, so both chunk and name blobs
    /// identically.
    pub chunker_from: Option<(ChunkerParams, [u8; 32])>,
    /// Chunk size limits (min, avg, max) other than the defaults; ignored with `chunker_from`.
    pub chunk_sizes: Option<(u32, u32, u32)>,
    /// See `Config::object_lock_days` and `object_lock_mode`.
    pub object_lock_days: u32,
    pub object_lock_mode: String,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            kdf: KdfParams::DEFAULT,
            compression_level: 3,
            pack_size: 8 * 1024 * 1024,
            chunker_from: None,
            chunk_sizes: None,
            object_lock_days: 0,
            object_lock_mode: String::new(),
        }
    }
}

/// The sealed config, or "no repository" when there is none.
fn read_config(store: &Arc<dyn Store>, rt: &tokio::runtime::Handle) -> Result<Vec<u8>> {
    match block(rt, store.get(layout::CONFIG, None)) {
        Ok(b) => Ok(b),
        Err(e) if e.is_not_found() => Err(Error::NoRepository { location: store.location() }),
        Err(e) => Err(e.into()),
    }
}

fn block<F: Future>(rt: &tokio::runtime::Handle, f: F) -> F::Output {
    rt.block_on(f)
}

impl Repository {
    /// Creates a repository: the first key file, then the config (whose presence is what
    /// makes a repository exist). Refuses to touch an existing one.
    pub fn init(
        store: Arc<dyn Store>,
        rt: tokio::runtime::Handle,
        password: &[u8],
        meta: &KeyMeta,
        opts: InitOptions,
    ) -> Result<Repository> {
        let location = store.location();
        match block(&rt, store.head(layout::CONFIG)) {
            Ok(_) => return Err(Error::AlreadyExists { location }),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let master = MasterKey::generate()?;
        let (chunker, id_key) = match opts.chunker_from {
            Some((p, k)) => (p, k),
            None => {
                let mut p = ChunkerParams::with_seed(u64::from_le_bytes(cairn_crypto::random_array()?));
                if let Some((min_size, avg_size, max_size)) = opts.chunk_sizes {
                    p = ChunkerParams { min_size, avg_size, max_size, ..p };
                }
                (p, cairn_crypto::random_array()?)
            }
        };
        if !chunker.is_valid() {
            return Err(Error::Invalid(format!(
                "chunk sizes {}/{}/{} outside 64..1M / 256..4M / 1K..16M, or not min <= avg <= max, or odd",
                chunker.min_size, chunker.avg_size, chunker.max_size
            )));
        }
        let repo_id: [u8; 32] = cairn_crypto::random_array()?;
        let config = Config {
            version: CONFIG_VERSION,
            id: Config::hex(&repo_id),
            chunker: ChunkerConfig {
                min_size: chunker.min_size,
                avg_size: chunker.avg_size,
                max_size: chunker.max_size,
                seed: chunker.seed,
            },
            id_key: Config::hex(&id_key),
            compression_level: opts.compression_level,
            pack_size: opts.pack_size,
            object_lock_days: opts.object_lock_days,
            object_lock_mode: opts.object_lock_mode,
        };
        let (key_id, key_bytes) = make_key_file(&master, password, meta, opts.kdf)?;
        block(&rt, store.put(&layout::key(&key_id), key_bytes, PutMode::Create))?;
        let sealed = seal(&master, KIND_CONFIG, &config.encode(), 3)?;
        match block(&rt, store.put(layout::CONFIG, sealed, PutMode::Create)) {
            Err(e) if e.kind() == cairn_store::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists { location })
            }
            r => r?,
        }
        Ok(Repository {
            store,
            rt,
            master,
            id_key: IdKey::from_bytes(id_key),
            config,
            key_id,
            lease: Default::default(),
            small_trees: Default::default(),
        })
    }

    /// Opens a repository with any of its keys' passwords.
    pub fn open(store: Arc<dyn Store>, rt: tokio::runtime::Handle, password: &[u8]) -> Result<Repository> {
        Repository::open_preferring(store, rt, password, None)
    }

    /// [`Repository::open`], trying the key file `preferred` first (the one that opened
    /// this repository last time, remembered by the caller): then key files planted by
    /// whoever controls the storage cost nothing on hosts that opened it before.
    pub fn open_preferring(
        store: Arc<dyn Store>,
        rt: tokio::runtime::Handle,
        password: &[u8],
        preferred: Option<KeyId>,
    ) -> Result<Repository> {
        let location = store.location();
        let config_bytes = read_config(&store, &rt)?;
        let keys = block(&rt, store.list(layout::KEYS))?;
        // Key files are read first and tried cheapest first: a planted key file with
        // costly (but allowed) KDF parameters is then tried after ours, not before it.
        // Those outside the bounds are never run; a malformed one must not stop the
        // others from being tried.
        let mut candidates = Vec::new();
        for k in &keys {
            let Some(id) = layout::id_of(&k.path) else { continue };
            // A key file is a few hundred bytes: never read a planted giant whole.
            if k.size > 64 * 1024 {
                continue;
            }
            let bytes = block(&rt, store.get(&k.path, None))?;
            // A key file must be named by its hash: one copied or renamed in is ignored.
            if Id(cairn_crypto::content_hash(&bytes)) != id {
                continue;
            }
            let Ok(kf) = KeyFile::decode(&bytes) else { continue };
            if crate::keys::kdf_in_bounds(&kf) {
                candidates.push((crate::keys::kdf_cost(&kf), id, kf));
            }
        }
        candidates.sort_by_key(|(cost, id, _)| (Some(KeyId(*id)) != preferred, *cost));
        for (_, id, kf) in candidates {
            if let Ok(Some(master)) = try_unlock(&id, &kf, password) {
                let Ok(plain) = open_sealed(&master, KIND_CONFIG, &config_bytes, 1 << 20) else {
                    continue; // a key of another (half-created) repository: try the next
                };
                return Repository::with_config(store, rt, master, &plain, KeyId(id));
            }
        }
        Err(Error::WrongPassword { location })
    }

    /// Opens a repository with its master key itself (from a key cache): no key file is
    /// read and no KDF runs. Fails like a wrong password if the key does not open `config`.
    pub fn open_with_master(
        store: Arc<dyn Store>,
        rt: tokio::runtime::Handle,
        master: MasterKey,
    ) -> Result<Repository> {
        let config_bytes = read_config(&store, &rt)?;
        let plain = open_sealed(&master, KIND_CONFIG, &config_bytes, 1 << 20)
            .map_err(|_| Error::WrongPassword { location: store.location() })?;
        Repository::with_config(store, rt, master, &plain, KeyId::default())
    }

    /// The repository once `config` opened with `master`: checks what it says.
    fn with_config(
        store: Arc<dyn Store>,
        rt: tokio::runtime::Handle,
        master: MasterKey,
        config_plain: &[u8],
        key_id: KeyId,
    ) -> Result<Repository> {
        let config = Config::decode(config_plain)?;
        let damaged = |detail: String| Error::Damaged { what: "config", id: "config".into(), detail };
        let id_key = IdKey::from_bytes(config.id_key_bytes().ok_or_else(|| damaged("malformed id key".into()))?);
        let params = chunker_params(&config);
        if !params.is_valid() {
            return Err(damaged(format!("invalid chunker parameters {params:?}")));
        }
        Ok(Repository {
            store,
            rt,
            master,
            id_key,
            config,
            key_id,
            lease: Default::default(),
            small_trees: Default::default(),
        })
    }

    /// Until when (Unix seconds) an object written at `modified` may not be deleted, if
    /// the repository has an object-lock period and that time is still ahead. An object
    /// whose write time the store does not report counts as written now.
    pub fn locked_until(&self, modified: Option<i64>, now: i64) -> Option<i64> {
        let days = self.config.object_lock_days;
        if days == 0 {
            return None;
        }
        let until = modified.unwrap_or(now) + days as i64 * 86400;
        (until > now).then_some(until)
    }

    /// Swaps the store under an open repository (the same objects reached another way,
    /// e.g. with object-lock headers once the config says the repository wants them).
    pub fn replace_store(&mut self, store: Arc<dyn Store>) {
        self.store = store;
    }

    /// Until when the object at `path` may not be deleted (see [`Repository::locked_until`]).
    /// Asks the store for the object's write time only when the repository has a lock
    /// period: an unlocked repository pays no request per deletion.
    pub fn object_locked_until(&self, path: &str, now: i64) -> Option<i64> {
        if self.config.object_lock_days == 0 {
            return None;
        }
        let written = self.block_on(self.store.head(path)).ok().and_then(|m| m.modified);
        self.locked_until(written, now)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn master(&self) -> &MasterKey {
        &self.master
    }
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
    pub fn chunker_params(&self) -> ChunkerParams {
        chunker_params(&self.config)
    }
    pub fn id_key(&self) -> &IdKey {
        &self.id_key
    }
    pub fn blob_id(&self, data: &[u8]) -> BlobId {
        BlobId(Id(self.id_key.id(data)))
    }
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        block(&self.rt, f)
    }

    // ---- keys ----

    pub fn list_keys(&self) -> Result<Vec<(KeyId, KeyFile)>> {
        let mut out = Vec::new();
        for k in self.block_on(self.store.list(layout::KEYS))? {
            let Some(id) = layout::id_of(&k.path) else { continue };
            let bytes = self.block_on(self.store.get(&k.path, None))?;
            out.push((KeyId(id), KeyFile::decode(&bytes)?));
        }
        out.sort_by(|a, b| a.1.created.cmp(&b.1.created));
        Ok(out)
    }

    pub fn add_key(&self, password: &[u8], meta: &KeyMeta, kdf: KdfParams) -> Result<KeyId> {
        let (id, bytes) = make_key_file(&self.master, password, meta, kdf)?;
        self.block_on(self.store.put(&layout::key(&id), bytes, PutMode::Create))?;
        Ok(id)
    }

    /// Removes a key; refuses the key this repository was opened with and the last key.
    pub fn remove_key(&self, id: KeyId) -> Result<()> {
        if id == self.key_id {
            return Err(Error::Invalid(
                "refusing to remove the key in use; open the repository with another key".into(),
            ));
        }
        let keys = self.list_keys()?;
        if !keys.iter().any(|(k, _)| *k == id) {
            return Err(Error::Invalid(format!("no key {}", id.short())));
        }
        self.block_on(self.store.delete(&layout::key(&id)))?;
        Ok(())
    }

    /// Adds a key for `password`, then removes the key in use: the new key file is durable
    /// before the old one goes, so a crash leaves both, never neither.
    pub fn change_password(&self, password: &[u8], meta: &KeyMeta, kdf: KdfParams) -> Result<KeyId> {
        let id = self.add_key(password, meta, kdf)?;
        self.block_on(self.store.delete(&layout::key(&self.key_id)))?;
        Ok(id)
    }

    // ---- writer lease ----

    pub(crate) fn set_lease(&self, l: Option<Arc<LeaseState>>) {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = l;
    }

    /// Index files and snapshots publish references to blobs; only a writer holding a valid
    /// lease may publish them, or prune could delete what they reference.
    pub(crate) fn ensure_lease(&self) -> Result<()> {
        match &*self.lease.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(l) if l.usable() => Ok(()),
            Some(_) => Err(Error::LeaseLost),
            None => Err(Error::Internal("writing index files or snapshots needs a writer lease".into())),
        }
    }

    /// The id of the lease this process holds.
    pub fn lease_id(&self) -> Option<cairn_format::WriterId> {
        self.lease.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|l| l.id)
    }

    // ---- sealed objects ----

    pub(crate) fn save_sealed(&self, kind: &[u8], prefix_path: impl Fn(Id) -> String, plain: &[u8]) -> Result<Id> {
        let sealed = seal(&self.master, kind, plain, 3)?;
        let id = Id(cairn_crypto::content_hash(&sealed));
        match self.block_on(self.store.put(&prefix_path(id), sealed, PutMode::Create)) {
            Err(e) if e.kind() == cairn_store::ErrorKind::AlreadyExists => Ok(id),
            r => r.map(|_| id).map_err(Into::into),
        }
    }

    pub(crate) fn load_sealed(&self, kind: &[u8], path: &str, what: &'static str) -> Result<Vec<u8>> {
        let bytes = self.block_on(self.store.get(path, None))?;
        self.open_named(kind, path, &bytes, what)
    }

    /// Checks that `bytes` hash to the id their `path` names, then opens them.
    fn open_named(&self, kind: &[u8], path: &str, bytes: &[u8], what: &'static str) -> Result<Vec<u8>> {
        let id = layout::id_of(path).unwrap_or_default();
        let damaged = |detail: String| Error::Damaged { what, id: id.to_hex(), detail };
        if Id(cairn_crypto::content_hash(bytes)) != id {
            return Err(damaged("content does not match its name".into()));
        }
        let max = max_document(kind);
        if bytes.len() > max + 1024 {
            return Err(damaged(format!("{} bytes, more than a {what} may hold ({max})", bytes.len())));
        }
        open_sealed(&self.master, kind, bytes, max).map_err(|e| damaged(damage_detail(&e)))
    }

    /// The ids named by the objects under `prefix`.
    fn list_ids(&self, prefix: &str) -> Result<Vec<Id>> {
        Ok(self.block_on(self.store.list(prefix))?.iter().filter_map(|m| layout::id_of(&m.path)).collect())
    }

    // ---- named objects ----

    /// Stores an object named by its role rather than its hash (PostgreSQL WAL files),
    /// sealed with its path as associated data so that one cannot pass for another. The
    /// plaintext is the concatenation of `parts` (see `seal_parts`).
    pub fn put_named(&self, path: &str, parts: &[&[u8]], zstd: impl Into<Zstd>, mode: PutMode) -> Result<()> {
        let sealed = seal_parts(&self.master, &named_kind(path), parts, zstd.into())?;
        Ok(self.block_on(self.store.put(path, sealed, mode))?)
    }

    /// Reads and opens a named object (at most `max` bytes of plaintext); a missing one is
    /// an `Error::Store` of kind NotFound.
    pub fn get_named(&self, path: &str, max: usize) -> Result<Vec<u8>> {
        self.get_named_with(path, |r| {
            let mut out = Vec::new();
            r.take(max as u64 + 1).read_to_end(&mut out)?;
            if out.len() > max {
                return Err(std::io::Error::other(format!("larger than {max} bytes")));
            }
            Ok(out)
        })
    }

    /// Opens a named object and hands its plaintext to `read` as a stream (decompressed
    /// as it is read): a WAL file goes to its destination without a 16 MiB buffer.
    pub fn get_named_with<T>(
        &self,
        path: &str,
        read: impl FnOnce(&mut dyn std::io::Read) -> std::io::Result<T>,
    ) -> Result<T> {
        let bytes = self.block_on(self.store.get(path, None))?;
        let damaged = |d: String| Error::Damaged { what: "object", id: path.to_string(), detail: d };
        let (buf, n) = cairn_crypto::open_object_in_place(&self.master, &named_kind(path), bytes)
            .map_err(|e| damaged(e.to_string()))?;
        let plain = &buf[cairn_crypto::SEALED_PREFIX..cairn_crypto::SEALED_PREFIX + n];
        match plain.first() {
            Some(&COMPRESSION_NONE) => read(&mut &plain[1..]).map_err(|e| damaged(e.to_string())),
            Some(&COMPRESSION_ZSTD) => {
                let mut dec =
                    zstd::stream::read::Decoder::with_buffer(&plain[1..]).map_err(|e| damaged(e.to_string()))?;
                read(&mut dec).map_err(|e| damaged(e.to_string()))
            }
            _ => Err(damaged("unknown compression".into())),
        }
    }

    // ---- index ----

    pub fn save_index(&self, f: &IndexFile) -> Result<IndexId> {
        self.ensure_lease()?;
        self.save_sealed(KIND_INDEX, |id| layout::index(&IndexId(id)), &f.encode()).map(IndexId)
    }

    pub fn list_index_ids(&self) -> Result<Vec<IndexId>> {
        Ok(self.list_ids(layout::INDEX)?.into_iter().map(IndexId).collect())
    }

    pub fn load_index_file(&self, id: IndexId) -> Result<IndexFile> {
        Ok(IndexFile::decode(&self.load_sealed(KIND_INDEX, &layout::index(&id), "index file")?)?)
    }

    /// Loads every index file (in parallel on the runtime), skipping files that another
    /// file supersedes; see [`Repository::load_index_reporting`] for damaged ones.
    pub fn load_index(&self) -> Result<Index> {
        Ok(self.load_index_reporting()?.0)
    }

    /// [`Repository::load_index`], and the index files that could not be read (name,
    /// why). A damaged index file does not stop every command: it is left out, and then
    /// the packs that no readable index file names are read from their own headers (the
    /// format keeps a pack's contents in its header so that the index can always be rebuilt),
    /// so reads and dedup see everything that is there. A file deleted by a prune between
    /// listing and reading means a consolidated file replaced it: list again. Prune does
    /// not use this: it needs every index file to decide what is referenced where.
    ///
    /// Packs a prune has marked are read from their headers too: a snapshot saved while
    /// that prune ran may use blobs only they hold (its next sweep indexes them again,
    /// format.md §13.2), and until then the snapshot must restore.
    pub fn load_index_reporting(&self) -> Result<(Index, Vec<(String, String)>)> {
        let (mut index, damaged) = self.load_index_files_readable()?;
        let marked = self.marked_packs().unwrap_or_default();
        if !damaged.is_empty() || !marked.is_empty() {
            for p in self.unindexed_packs(&index)? {
                if damaged.is_empty() && !marked.contains(&p) {
                    continue;
                }
                // A pack that cannot be read either is left to check.
                if let Ok((salt, entries)) = self.read_pack_header(p) {
                    index.add_pack(p, salt, &entries);
                }
            }
        }
        Ok((index, damaged))
    }

    /// For writers: the index of the readable index files only, damaged ones left out and
    /// nothing adopted; a writer then adopts what no readable file names
    /// ([`Repository::recover_unindexed`]) and records it in its own index file, so a
    /// damaged index file stops mattering once a writer has run.
    pub fn load_index_for_writing(&self) -> Result<Index> {
        Ok(self.load_index_files_readable()?.0)
    }

    fn load_index_files_readable(&self) -> Result<(Index, Vec<(String, String)>)> {
        let max = max_document(KIND_INDEX) as u64 + 1024;
        let mut attempt = 0;
        loop {
            let metas = self.block_on(self.store.list(layout::INDEX))?;
            let mut damaged = Vec::new();
            let mut builder = IndexBuilder::default();
            let mut gone = false;
            // A few fetches ahead of the file being added, not all at once: the raw files
            // of a large repository are as large as its index.
            let mut inflight = std::collections::VecDeque::new();
            let mut metas = metas.into_iter();
            loop {
                while inflight.len() < INDEX_FETCHES_AHEAD {
                    let Some(m) = metas.next() else { break };
                    let Some(id) = layout::id_of(&m.path).map(IndexId) else { continue };
                    if m.size > max {
                        damaged.push((id.short(), format!("{} bytes, more than an index file may hold", m.size)));
                        continue;
                    }
                    let store = self.store.clone();
                    let p = layout::index(&id);
                    inflight.push_back((id, self.rt.spawn(async move { store.get(&p, None).await })));
                }
                let Some((id, h)) = inflight.pop_front() else { break };
                match self.block_on(h).map_err(|e| Error::Internal(format!("task failed: {e}")))? {
                    Ok(bytes) => match self
                        .open_named(KIND_INDEX, &layout::index(&id), &bytes, "index file")
                        .and_then(|d| IndexFile::decode(&d).map_err(Error::from))
                    {
                        Ok(f) => builder.add(id, f),
                        Err(e) => damaged.push((id.short(), damage_detail(&e))),
                    },
                    Err(e) if e.kind() == cairn_store::ErrorKind::NotFound => gone = true,
                    Err(e) => return Err(e.into()),
                }
            }
            // A file gone between the listing and its read was replaced by a prune's
            // consolidated index: list again.
            if !gone || attempt >= 4 {
                return Ok((builder.finish(), damaged));
            }
            attempt += 1;
        }
    }

    /// Every index file that no other supersedes, with its id (see [`Repository::load_index`]).
    pub fn load_index_files(&self) -> Result<IndexFiles> {
        Ok(self.load_index_files_listed()?.1)
    }

    /// [`Repository::load_index_files`], with the listing it read them from (every index
    /// object, superseded ones included, with its size and time): prune needs both, and
    /// one listing is one request fewer and cannot disagree with the files read.
    pub fn load_index_files_listed(&self) -> Result<(Vec<cairn_store::ObjectMeta>, IndexFiles)> {
        let mut attempt = 0;
        let (metas, ids, files) = loop {
            let metas = self.block_on(self.store.list(layout::INDEX))?;
            // Never read whole an object larger than an index file can be.
            let max = max_document(KIND_INDEX) as u64 + 1024;
            if let Some(m) = metas.iter().find(|m| m.size > max) {
                return Err(Error::Damaged {
                    what: "index file",
                    id: m.path.clone(),
                    detail: format!("{} bytes, more than an index file may hold", m.size),
                });
            }
            let ids: Vec<IndexId> = metas.iter().filter_map(|m| layout::id_of(&m.path).map(IndexId)).collect();
            match self.load_many(KIND_INDEX, ids.iter().map(layout::index).collect(), "index file") {
                Err(e) if attempt < 5 && e.store_kind() == Some(cairn_store::ErrorKind::NotFound) => attempt += 1,
                r => {
                    let files = r?.iter().map(|f| IndexFile::decode(f)).collect::<std::result::Result<Vec<_>, _>>()?;
                    break (metas, ids, files);
                }
            }
        };
        let superseded: std::collections::HashSet<IndexId> =
            files.iter().flat_map(|f| f.supersedes.iter().copied()).collect();
        Ok((metas, ids.into_iter().zip(files).filter(|(id, _)| !superseded.contains(id)).collect()))
    }

    /// Fetches and opens many sealed objects concurrently, in order.
    fn load_many(&self, kind: &[u8], paths: Vec<String>, what: &'static str) -> Result<Vec<Vec<u8>>> {
        let mut handles = Vec::new();
        for p in paths.iter() {
            let store = self.store.clone();
            let p = p.clone();
            handles.push(self.rt.spawn(async move { store.get(&p, None).await }));
        }
        let mut out = Vec::new();
        for (h, p) in handles.into_iter().zip(paths.iter()) {
            let bytes = self.block_on(h).map_err(|e| Error::Internal(format!("task failed: {e}")))??;
            out.push(self.open_named(kind, p, &bytes, what)?);
        }
        Ok(out)
    }

    /// Packs in the store that no index names. A backup killed after uploading packs and
    /// before writing their index leaves these; their headers let us adopt them.
    pub fn unindexed_packs(&self, index: &Index) -> Result<Vec<PackId>> {
        Ok(self.list_ids(layout::DATA)?.into_iter().map(PackId).filter(|p| !index.has_pack(p)).collect())
    }

    /// Reads a pack's header through two ranged reads (prefix for the salt, then tail).
    pub fn read_pack_header(&self, pack: PackId) -> Result<([u8; 32], Vec<BlobEntry>)> {
        let path = layout::pack(&pack);
        let size = self.block_on(self.store.head(&path))?.size;
        if size < (PACK_PREFIX_LEN + 4) as u64 {
            return Err(Error::BadPack { pack, detail: format!("only {size} bytes") });
        }
        let prefix = self.block_on(self.store.get(&path, Some(0..PACK_PREFIX_LEN as u64)))?;
        let salt = packer::parse_prefix(pack, &prefix)?;
        let tail_len = size.min(64 * 1024);
        let mut tail = self.block_on(self.store.get(&path, Some(size - tail_len..size)))?;
        let n = tail.len();
        if n >= 4 {
            let hl = u32::from_le_bytes([tail[n - 4], tail[n - 3], tail[n - 2], tail[n - 1]]) as u64;
            if hl + 4 > tail_len && hl + 4 <= size {
                tail = self.block_on(self.store.get(&path, Some(size - hl - 4..size)))?;
            }
        }
        let entries = packer::read_header(&self.master, pack, &salt, &tail)?;
        Ok((salt, entries))
    }

    /// Adopts packs no index names (see [`Repository::unindexed_packs`]): adds them to
    /// `index` and returns them so the caller's next index file records them.
    /// Packs that a prune has marked for deletion are never adopted: the protocol relies on
    /// no writer that started after the marking referencing them.
    pub fn recover_unindexed(&self, index: &mut Index) -> Result<Vec<cairn_format::index::IndexedPack>> {
        let marked = self.marked_packs()?;
        let mut out = Vec::new();
        for p in self.unindexed_packs(index)? {
            if marked.contains(&p) {
                continue;
            }
            // A pack that cannot be read (being deleted, damaged) is left to check/prune.
            if let Ok((salt, entries)) = self.read_pack_header(p) {
                index.add_pack(p, salt, &entries);
                out.push(Index::indexed_pack(p, salt, entries));
            }
        }
        Ok(out)
    }

    // ---- blobs and trees ----

    pub fn read_pack(&self, pack: PackId) -> Result<Vec<u8>> {
        Ok(self.block_on(self.store.get(&layout::pack(&pack), None))?)
    }

    /// Decrypts, decompresses and authenticates one blob's ciphertext.
    pub fn open_blob(
        &self,
        id: &BlobId,
        salt: &[u8; 32],
        offset: u32,
        raw_length: u32,
        mut ct: Vec<u8>,
    ) -> Result<Vec<u8>> {
        self.open_blob_in(id, salt, offset, raw_length, &mut ct).map(std::borrow::Cow::into_owned)
    }

    /// As [`Repository::open_blob`], decrypting in place in `ct` (a blob's bytes inside a
    /// pack read whole): a blob stored raw comes back borrowed from it, not copied.
    pub fn open_blob_in<'a>(
        &self,
        id: &BlobId,
        salt: &[u8; 32],
        offset: u32,
        raw_length: u32,
        ct: &'a mut [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>> {
        let dmg = |d: String| Error::Damaged { what: "blob", id: id.to_hex(), detail: d };
        let key = self.master.object_key(salt);
        let n = key.open_in_place(cairn_crypto::offset_nonce(offset as u64), ct).map_err(|e| dmg(e.to_string()))?;
        let data = blob::decode(&ct[..n], raw_length as usize).map_err(|e| dmg(e.to_string()))?;
        if data.len() != raw_length as usize || self.blob_id(&data) != *id {
            return Err(dmg("content does not match its id".into()));
        }
        Ok(data)
    }

    pub fn read_blob(&self, index: &Index, id: &BlobId) -> Result<Vec<u8>> {
        let loc = index.get(id).ok_or(Error::BlobNotIndexed(*id))?;
        let (pack, salt) = index.pack(loc.pack);
        self.read_blob_at(id, pack, &salt, loc)
    }

    /// Reads a blob whose location the caller already looked up.
    pub fn read_blob_at(&self, id: &BlobId, pack: PackId, salt: &[u8; 32], loc: &crate::Location) -> Result<Vec<u8>> {
        let ct = self.block_on(
            self.store.get(&layout::pack(&pack), Some(loc.offset as u64..loc.offset as u64 + loc.length as u64)),
        )?;
        self.open_blob(id, salt, loc.offset, loc.raw_length, ct)
    }

    /// Reads several blobs whose locations the caller looked up, their requests all in
    /// flight at once; in order.
    pub fn read_blobs_at(&self, wanted: &[(BlobId, PackId, [u8; 32], crate::Location)]) -> Result<Vec<Vec<u8>>> {
        let handles: Vec<_> = wanted
            .iter()
            .map(|(_, pack, _, loc)| {
                let store = self.store.clone();
                let path = layout::pack(pack);
                let range = loc.offset as u64..loc.offset as u64 + loc.length as u64;
                self.rt.spawn(async move { store.get(&path, Some(range)).await })
            })
            .collect();
        let mut out = Vec::with_capacity(wanted.len());
        for (h, (id, _, salt, loc)) in handles.into_iter().zip(wanted) {
            let ct = self.block_on(h).map_err(|e| Error::Internal(format!("task failed: {e}")))??;
            out.push(self.open_blob(id, salt, loc.offset, loc.raw_length, ct)?);
        }
        Ok(out)
    }

    /// Loads and decodes a tree. Safe to cache by id: a tree's id is a MAC of its bytes.
    pub fn load_tree(&self, index: &Index, id: TreeId) -> Result<Tree> {
        if let Some(t) = self.small_trees.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return Ok(t.clone());
        }
        let t = self.load_tree_uncached(index, id)?;
        if t.nodes.len() <= SMALL_TREE_NODES {
            let mut c = self.small_trees.lock().unwrap_or_else(|p| p.into_inner());
            if c.len() >= SMALL_TREES {
                c.clear();
            }
            c.insert(id, t.clone());
        }
        Ok(t)
    }

    /// Loads and decodes a tree, leaving the small-tree cache alone: for a walk that
    /// visits each tree once (check), which would fill the cache for nothing.
    pub fn load_tree_uncached(&self, index: &Index, id: TreeId) -> Result<Tree> {
        let data = self.read_blob(index, &id.blob())?;
        Tree::decode(&data).map_err(|e| Error::Damaged { what: "tree", id: id.to_hex(), detail: e.to_string() })
    }

    // ---- snapshots ----

    pub fn save_snapshot(&self, s: &Snapshot) -> Result<SnapshotId> {
        self.ensure_lease()?;
        self.save_sealed(KIND_SNAPSHOT, |id| layout::snapshot(&SnapshotId(id)), &s.encode()).map(SnapshotId)
    }

    pub fn list_snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self.list_ids(layout::SNAPSHOTS)?.into_iter().map(SnapshotId).collect())
    }

    /// Every snapshot, oldest first; fails if any snapshot is damaged. For what acts on
    /// the whole set (prune and forget must not take an unreadable snapshot for absent).
    pub fn list_snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let list = self.list_snapshots_lenient()?;
        if let Some((id, detail)) = list.damaged.into_iter().next() {
            return Err(Error::Damaged { what: "snapshot", id: id.to_hex(), detail });
        }
        Ok(list.snapshots)
    }

    /// Every readable snapshot, oldest first, and the damaged ones apart: one flipped byte
    /// in one snapshot must not hide all the others from `snapshots`, `find`, `check` or
    /// `restore latest`. A snapshot forgotten between listing and reading is left out;
    /// store errors (unreachable, no permission) still fail.
    pub fn list_snapshots_lenient(&self) -> Result<SnapshotList> {
        let mut out = SnapshotList::default();
        let max = max_document(KIND_SNAPSHOT) as u64 + 1024;
        let mut ids = Vec::new();
        for m in self.block_on(self.store.list(layout::SNAPSHOTS))? {
            let Some(id) = layout::id_of(&m.path).map(SnapshotId) else { continue };
            // Never read whole an object larger than a snapshot can be.
            if m.size > max {
                out.damaged.push((id, format!("{} bytes, more than a snapshot may hold", m.size)));
            } else {
                ids.push(id);
            }
        }
        let mut handles = Vec::with_capacity(ids.len());
        for id in &ids {
            let store = self.store.clone();
            let p = layout::snapshot(id);
            handles.push(self.rt.spawn(async move { store.get(&p, None).await }));
        }
        for (id, h) in ids.into_iter().zip(handles) {
            let bytes = match self.block_on(h).map_err(|e| Error::Internal(format!("task failed: {e}")))? {
                Ok(b) => b,
                Err(e) if e.kind() == cairn_store::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let doc = self
                .open_named(KIND_SNAPSHOT, &layout::snapshot(&id), &bytes, "snapshot")
                .and_then(|d| Snapshot::decode(&d).map_err(Error::from));
            match doc {
                Ok(s) => out.snapshots.push((id, s)),
                Err(e) => out.damaged.push((id, damage_detail(&e))),
            }
        }
        out.snapshots.sort_by(|a, b| sort_key(&a.1).cmp(&sort_key(&b.1)).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    pub fn load_snapshot(&self, id: SnapshotId) -> Result<Snapshot> {
        Ok(Snapshot::decode(&self.load_sealed(KIND_SNAPSHOT, &layout::snapshot(&id), "snapshot")?)?)
    }

    /// `latest`, a full id, or a unique prefix of at least 4 hex digits.
    pub fn resolve_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        if spec == "latest" {
            return self
                .list_snapshots_lenient()?
                .snapshots
                .pop()
                .ok_or_else(|| Error::SnapshotNotFound("latest (the repository has no snapshots)".into()));
        }
        if spec.len() < 4 || !spec.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::SnapshotNotFound(format!(
                "{spec} (give 'latest', an id, or at least 4 hex digits of one)"
            )));
        }
        let spec_l = spec.to_ascii_lowercase();
        let matches: Vec<SnapshotId> =
            self.list_snapshot_ids()?.into_iter().filter(|id| id.to_hex().starts_with(&spec_l)).collect();
        match matches.as_slice() {
            [one] => Ok((*one, self.load_snapshot(*one)?)),
            [] => Err(Error::SnapshotNotFound(spec.into())),
            _ => Err(Error::AmbiguousSnapshot(spec.into())),
        }
    }

    pub fn delete_snapshot(&self, id: SnapshotId) -> Result<()> {
        Ok(self.block_on(self.store.delete(&layout::snapshot(&id)))?)
    }
}

/// Snapshots as [`Repository::list_snapshots_lenient`] found them.
#[derive(Debug, Default)]
pub struct SnapshotList {
    pub snapshots: Vec<(SnapshotId, Snapshot)>,
    /// Snapshots that exist but cannot be read (damaged or not ours), and why.
    pub damaged: Vec<(SnapshotId, String)>,
}

fn damage_detail(e: &Error) -> String {
    match e {
        Error::Damaged { detail, .. } => detail.clone(),
        e => e.to_string(),
    }
}

fn sort_key(s: &Snapshot) -> i128 {
    s.time.parse::<jiff::Timestamp>().map(|t| t.as_nanosecond()).unwrap_or(0)
}

pub(crate) fn chunker_params(c: &Config) -> ChunkerParams {
    ChunkerParams {
        min_size: c.chunker.min_size,
        avg_size: c.chunker.avg_size,
        max_size: c.chunker.max_size,
        seed: c.chunker.seed,
    }
}

/// Sealed-object plaintext: `compression(1) || payload`.
/// Associated data of sealed objects: binds each to its kind.
pub(crate) const KIND_CONFIG: &[u8] = b"cairn v1 config";
pub(crate) const KIND_INDEX: &[u8] = b"cairn v1 index";
pub(crate) const KIND_SNAPSHOT: &[u8] = b"cairn v1 snapshot";
pub(crate) const KIND_LEASE: &[u8] = b"cairn v1 writer lease";
pub(crate) const KIND_PRUNE: &[u8] = b"cairn v1 prune";

fn named_kind(path: &str) -> Vec<u8> {
    let mut k = b"cairn v1 named ".to_vec();
    k.extend_from_slice(path.as_bytes());
    k
}

pub(crate) fn seal(master: &MasterKey, kind: &[u8], payload: &[u8], level: i32) -> Result<Vec<u8>> {
    seal_parts(master, kind, &[payload], Zstd::level(level))
}

/// How a sealed object is compressed: a zstd level and, optionally, smaller match-finder
/// tables than the level's own (`hashLog` = `chainLog` = `table_log`) and no block
/// pre-splitting. Only the writer's speed and ratio depend on it; every reader decodes any
/// setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zstd {
    pub level: i32,
    pub table_log: Option<u32>,
    /// zstd 1.5.7 fingerprints every full 128 KiB block at levels 2 and up to find a
    /// better place to cut it. `false` skips that pass by making blocks one byte shorter
    /// (it only looks at full blocks): on WAL 17% less compression time for 0.5% more size.
    pub presplit: bool,
}

impl Zstd {
    pub const fn level(level: i32) -> Zstd {
        Zstd { level, table_log: None, presplit: true }
    }
}

impl From<i32> for Zstd {
    fn from(level: i32) -> Zstd {
        Zstd::level(level)
    }
}

/// Seals the concatenation of `parts`, each compressed as its own zstd frame in one pass
/// straight into the buffer that is then encrypted in place, or stored as is when
/// compression does not make the whole strictly smaller. One-pass frames matter for a
/// 16 MiB WAL segment (`parts` = a 9-byte header, then the mapped file): a streaming
/// encoder copies every input byte into its window first, and a frame that spans both
/// parts could not be compressed in one pass without copying the file behind the header.
pub(crate) fn seal_parts(master: &MasterKey, kind: &[u8], parts: &[&[u8]], zstd: Zstd) -> Result<Vec<u8>> {
    use zstd::zstd_safe::{compress_bound, CCtx, CParameter, InBuffer, OutBuffer};
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let bound: usize = parts.iter().map(|p| compress_bound(p.len())).sum();
    let fill = |buf: &mut Vec<u8>| -> std::result::Result<(), String> {
        let start = buf.len();
        buf.push(COMPRESSION_ZSTD);
        let mut cctx = CCtx::try_create().ok_or("no memory for a zstd context")?;
        let err = |c: usize| zstd::zstd_safe::get_error_name(c).to_string();
        cctx.set_parameter(CParameter::CompressionLevel(zstd.level)).map_err(err)?;
        if let Some(log) = zstd.table_log {
            cctx.set_parameter(CParameter::HashLog(log)).map_err(err)?;
            cctx.set_parameter(CParameter::ChainLog(log)).map_err(err)?;
        }
        if !zstd.presplit {
            cctx.set_parameter(CParameter::MaxBlockSize((128 << 10) - 1)).map_err(err)?;
        }
        for p in parts {
            // The whole part with `e_end` and room for its bound: zstd compresses it
            // in place in one call, without its input buffer.
            cctx.set_pledged_src_size(Some(p.len() as u64)).map_err(err)?;
            let pos = buf.len();
            let mut out = OutBuffer::around_pos(buf, pos);
            let mut input = InBuffer::around(p);
            let left = cctx
                .compress_stream2(&mut out, &mut input, zstd::zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_end)
                .map_err(err)?;
            if left != 0 || input.pos() != p.len() {
                return Err("zstd did not finish a frame in one pass".into());
            }
        }
        if buf.len() - start > total {
            buf.truncate(start);
            buf.push(COMPRESSION_NONE);
            for p in parts {
                buf.extend_from_slice(p);
            }
        }
        Ok(())
    };
    cairn_crypto::seal_object_with(master, kind, 1 + bound, fill)?
        .map_err(|e| Error::Internal(format!("compressing: {e}")))
}

/// The largest plaintext a sealed document of `kind` may have (format.md §5): bounds what
/// untrusted storage can make a reader allocate, far below what a real repository needs
/// (a consolidated index file of 200,000 blobs is about 30 MiB; a snapshot a few KiB).
pub(crate) fn max_document(kind: &[u8]) -> usize {
    match kind {
        KIND_INDEX | KIND_PRUNE => 256 << 20,
        KIND_SNAPSHOT => 16 << 20,
        _ => 1 << 20,
    }
}

pub(crate) fn open_sealed(master: &MasterKey, kind: &[u8], sealed: &[u8], max: usize) -> Result<Vec<u8>> {
    let plain = cairn_crypto::open_object(master, kind, sealed)?;
    match plain.first() {
        Some(&COMPRESSION_NONE) => Ok(plain[1..].to_vec()),
        Some(&COMPRESSION_ZSTD) => {
            let mut out = Vec::new();
            let damaged = |detail: String| Error::Damaged { what: "sealed object", id: String::new(), detail };
            let mut dec = zstd::stream::read::Decoder::new(&plain[1..]).map_err(|e| damaged(format!("zstd: {e}")))?;
            use std::io::Read;
            (&mut dec).take(max as u64 + 1).read_to_end(&mut out).map_err(|e| damaged(format!("zstd: {e}")))?;
            if out.len() > max {
                return Err(damaged(format!("larger than {max} bytes once decompressed")));
            }
            Ok(out)
        }
        _ => Err(Error::Damaged { what: "sealed object", id: String::new(), detail: "unknown compression".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_parts_open_as_their_concatenation_in_every_form() {
        let master = MasterKey::from_bytes([7; 32]);
        let kind = named_kind("wal/00000001/000000010000000000000001");
        let header = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let body = b"INSERT INTO t VALUES (42); ".repeat(40_000);
        let whole = [&header[..], &body[..]].concat();
        let zstd = Zstd { level: 3, table_log: Some(14), presplit: false };

        // Compressible: one frame per part, read back as one stream.
        let sealed = seal_parts(&master, &kind, &[&header, &body], zstd).unwrap();
        assert!(sealed.len() < body.len() / 20, "compressed: {}", sealed.len());
        assert_eq!(open_sealed(&master, &kind, &sealed, whole.len()).unwrap(), whole);

        // Incompressible: stored as is.
        let mut x = 1u64;
        let noise: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let sealed = seal_parts(&master, &kind, &[&header, &noise], zstd).unwrap();
        let plain = cairn_crypto::open_object(&master, &kind, &sealed).unwrap();
        assert_eq!(plain[0], COMPRESSION_NONE);
        assert_eq!(open_sealed(&master, &kind, &sealed, 200_000).unwrap(), [&header[..], &noise[..]].concat());

        // What earlier writers made (one streamed frame over both parts) still opens.
        let mut plain = vec![COMPRESSION_ZSTD];
        plain.extend(zstd::stream::encode_all(&whole[..], 1).unwrap());
        let sealed = cairn_crypto::seal_object(&master, &kind, &plain).unwrap();
        assert_eq!(open_sealed(&master, &kind, &sealed, whole.len()).unwrap(), whole);

        // The size limit holds across frames.
        let sealed = seal_parts(&master, &kind, &[&header, &body], zstd).unwrap();
        assert!(open_sealed(&master, &kind, &sealed, body.len()).is_err());
    }
}
