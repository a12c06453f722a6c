//! The backup pipeline's raw limit for `bench/run.sh`: the time that compressing the same
//! bytes at the same level takes alone, on all cores, with the codec backups use
//! (incompressibility sample included). Files are loaded into memory first (untimed) and
//! cut into blobs of the chunker's average size, 1 MiB; a smaller file is one blob.
//!
//! It then measures the floor of everything a backup must do with each byte in memory, on
//! the same cores: content-defined chunking, the keyed BLAKE3 blob id, a set lookup to
//! store each blob once, compression, AES-256-GCM into 8 MiB packs, and the BLAKE3 that
//! names each pack. No reads, no writes, no threads handing data over: what no pipeline
//! of this format can go below. Issue 15 asks for a backup within 1.3x of the raw limit;
//! when the floor alone is past that, the target cannot be met by this format here.
//!
//! Usage: compress_limit LEVEL THREADS DIR... → prints the raw limit's seconds, the stored
//! fraction and the floor's seconds.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use cairn_chunker::{Chunker, ChunkerParams};
use cairn_crypto::{IdKey, MasterKey};
use cairn_repo::format::{BlobId, BlobType, Id};
use cairn_repo::{BlobCodec, Packer};

fn load(dir: &Path, out: &mut Vec<Vec<u8>>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            load(&e.path(), out)?;
        } else if t.is_file() {
            out.push(std::fs::read(e.path())?);
        }
    }
    Ok(())
}

/// Runs `work(i)` for every `i < n` on `threads` workers; the seconds it took and the
/// bytes the workers stored.
fn timed(
    threads: usize,
    n: usize,
    work: impl Fn(&mut Worker, usize) + Sync,
    new: impl Fn() -> Worker + Sync,
) -> (f64, usize) {
    let next = AtomicUsize::new(0);
    let stored = AtomicUsize::new(0);
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut w = new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    work(&mut w, i);
                }
                seal(&mut w.packer);
                stored.fetch_add(w.stored, Ordering::Relaxed);
            });
        }
    });
    (start.elapsed().as_secs_f64(), stored.into_inner())
}

struct Worker {
    codec: BlobCodec,
    out: Vec<u8>,
    stored: usize,
    chunker: Chunker,
    packer: Option<Packer>,
}

const PACK: usize = 8 << 20;
/// `cairn_engine::backup::SEGMENT` (not a dependency of this crate).
const SEGMENT: usize = 256 << 20;

/// Seals the pack (header, then the BLAKE3 that names it), if it holds anything.
fn seal(packer: &mut Option<Packer>) {
    if let Some(p) = packer.take().filter(|p| !p.is_empty()) {
        std::hint::black_box(p.finish().map(|f| f.id).ok());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [level, threads, dirs @ ..] = &args[..] else {
        return Err("usage: compress_limit LEVEL THREADS DIR...".into());
    };
    let (level, threads): (i32, usize) = (level.parse()?, threads.parse()?);
    let mut files = Vec::new();
    for d in dirs {
        load(Path::new(d), &mut files)?;
    }
    let master = MasterKey::generate()?;
    let ids = IdKey::from_bytes(cairn_crypto::random_array()?);
    let params = ChunkerParams::with_seed(u64::from_le_bytes(cairn_crypto::random_array()?));
    let worker = || Worker {
        codec: BlobCodec::new(level),
        out: Vec::with_capacity(5 << 20),
        stored: 0,
        chunker: Chunker::new(params),
        packer: None,
    };

    let blobs: Vec<&[u8]> = files.iter().flat_map(|f| f.chunks(1 << 20)).collect();
    let total: usize = blobs.iter().map(|b| b.len()).sum();
    let (raw, stored) = timed(
        threads,
        blobs.len(),
        |w, i| {
            w.out.clear();
            w.codec.encode_into(blobs[i], &mut w.out);
            w.stored += w.out.len();
        },
        worker,
    );

    let seen: Mutex<HashSet<[u8; 32]>> = Mutex::new(HashSet::new());
    // A large file is chunked in segments, several at once, as the backup does.
    let segments: Vec<&[u8]> = files.iter().flat_map(|f| f.chunks(SEGMENT)).collect();
    let (floor, _) = timed(
        threads,
        segments.len(),
        |w, i| {
            let mut r: &[u8] = segments[i];
            w.chunker.start();
            while let Ok(Some(chunk)) = w.chunker.next_chunk(&mut r) {
                let id = ids.id(chunk);
                if !seen.lock().map(|mut s| s.insert(id)).unwrap_or(false) {
                    continue; // stored already
                }
                if w.packer.as_ref().is_some_and(|p| p.len() >= PACK) {
                    seal(&mut w.packer);
                }
                if w.packer.is_none() {
                    w.packer = Packer::new(&master, BlobType::Data, PACK).ok();
                }
                let (Some(p), codec) = (w.packer.as_mut(), &mut w.codec) else { return };
                let _ = p.add_with(BlobId(Id(id)), chunk.len() as u32, |buf| codec.encode_into(chunk, buf));
            }
        },
        worker,
    );
    println!("{raw:.2} {:.3} {floor:.2}", stored as f64 / total.max(1) as f64);
    Ok(())
}
