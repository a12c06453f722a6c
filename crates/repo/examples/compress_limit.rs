//! The backup pipeline's raw limit for `bench/run.sh`: the time that compressing the same
//! bytes at the same level takes alone, on all cores, with the codec backups use
//! (incompressibility sample included). Files are loaded into memory first (untimed) and
//! cut into blobs of the chunker's average size, 1 MiB; a smaller file is one blob.
//!
//! Usage: compress_limit LEVEL THREADS DIR... → prints seconds and the stored fraction.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

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
    let blobs: Vec<&[u8]> = files.iter().flat_map(|f| f.chunks(1 << 20)).collect();
    let total: usize = blobs.iter().map(|b| b.len()).sum();
    let next = AtomicUsize::new(0);
    let stored = AtomicUsize::new(0);
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut codec = cairn_repo::BlobCodec::new(level);
                let mut out = Vec::with_capacity(5 << 20);
                let mut mine = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(b) = blobs.get(i) else { break };
                    out.clear();
                    codec.encode_into(b, &mut out);
                    mine += out.len();
                }
                stored.fetch_add(mine, Ordering::Relaxed);
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    println!("{secs:.2} {:.3}", stored.load(Ordering::Relaxed) as f64 / total.max(1) as f64);
    Ok(())
}
