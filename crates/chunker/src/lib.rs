//! Content-defined chunking over `Read`.
//!
//! [`Chunker`] cuts a byte stream into chunks whose boundaries depend on the content
//! (FastCDC 2020, normalized level 1), so an insertion changes only the chunks around it.
//! The gear table is XOR-ed with a per-repository secret seed so that chunk lengths do not
//! fingerprint well-known files.
//!
//! Key decision: we drive `fastcdc::v2020::cut_gear` over our own reusable buffer instead
//! of `StreamCDC`, which allocates a `max_size` buffer per stream and moves the whole tail
//! after every chunk. One `Chunker` per thread is reused for every file, so a tree of
//! 100k small files costs no large allocation per file. The cut points are exactly those of
//! `cut_gear` (pinned `fastcdc = "=5.0.0"`), which the golden tests below hold fixed: they
//! are part of the on-disk format.

use std::borrow::Cow;
use std::io::{self, Read};

use fastcdc::v2020::{cut_gear, get_gear_with_seed, select_masks, Normalization};

/// Chunk size limits and the gear seed. Stored in the repository config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
    pub seed: u64,
}

impl ChunkerParams {
    /// The defaults of format v1: 256 KiB / 1 MiB / 4 MiB.
    pub fn with_seed(seed: u64) -> Self {
        ChunkerParams { min_size: 256 * 1024, avg_size: 1024 * 1024, max_size: 4 * 1024 * 1024, seed }
    }

    /// Whether fastcdc accepts these limits (it asserts them only in debug builds).
    pub fn is_valid(&self) -> bool {
        let (min, avg, max) = (self.min_size as usize, self.avg_size as usize, self.max_size as usize);
        (fastcdc::v2020::MINIMUM_MIN..=fastcdc::v2020::MINIMUM_MAX).contains(&min)
            && (fastcdc::v2020::AVERAGE_MIN..=fastcdc::v2020::AVERAGE_MAX).contains(&avg)
            && (fastcdc::v2020::MAXIMUM_MIN..=fastcdc::v2020::MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0
    }
}

/// A reusable chunker: feed it one stream at a time with [`Chunker::start`] and pull chunks
/// with [`Chunker::next_chunk`].
pub struct Chunker {
    params: ChunkerParams,
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
    mask_s: u64,
    mask_l: u64,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl Chunker {
    /// Panics never; invalid params are clamped by the caller checking [`ChunkerParams::is_valid`].
    pub fn new(params: ChunkerParams) -> Self {
        let (gear, gear_ls) = get_gear_with_seed(params.seed);
        let (mask_s, mask_l) = select_masks(params.avg_size as usize, Normalization::Level1);
        Chunker { params, gear, gear_ls, mask_s, mask_l, buf: Vec::new(), start: 0, end: 0, eof: true }
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Begins a new stream, discarding anything left of the previous one.
    pub fn start(&mut self) {
        self.start = 0;
        self.end = 0;
        self.eof = false;
    }

    /// Returns the next chunk of `reader`, or `None` at the end of the stream.
    /// `reader` must be the same stream for every call between two [`Chunker::start`]s.
    pub fn next_chunk<R: Read + ?Sized>(&mut self, reader: &mut R) -> io::Result<Option<&[u8]>> {
        let max = self.params.max_size as usize;
        if self.end - self.start < max && !self.eof {
            self.fill(reader)?;
        }
        let avail = self.end - self.start;
        if avail == 0 {
            return Ok(None);
        }
        let len = if avail <= self.params.min_size as usize {
            avail
        } else {
            let (_, cut) = cut_gear(
                &self.buf[self.start..self.end],
                self.params.min_size as usize,
                self.params.avg_size as usize,
                max,
                self.mask_s,
                self.mask_l,
                self.mask_s << 1,
                self.mask_l << 1,
                &self.gear,
                &self.gear_ls,
            );
            if cut == 0 {
                avail
            } else {
                cut
            }
        };
        let s = self.start;
        self.start += len;
        Ok(Some(&self.buf[s..s + len]))
    }

    /// Tops the window up to at least `max_size` bytes (or EOF). The buffer is twice
    /// `max_size`, so the tail is moved at most once per `max_size` bytes consumed.
    fn fill<R: Read + ?Sized>(&mut self, reader: &mut R) -> io::Result<()> {
        let max = self.params.max_size as usize;
        let cap = 2 * max;
        if self.buf.len() < cap {
            self.buf.resize(cap, 0);
        }
        if self.start > 0 && self.start + max > cap {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end - self.start < max {
            match reader.read(&mut self.buf[self.end..cap]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Chunk lengths of a whole slice, for tests and tools.
pub fn chunk_lengths(params: ChunkerParams, data: &[u8]) -> Vec<usize> {
    let mut c = Chunker::new(params);
    c.start();
    let mut r = data;
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = c.next_chunk(&mut r) {
        out.push(chunk.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pseudo_random(n: usize, mut state: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            v.extend_from_slice(&state.to_le_bytes());
        }
        v.truncate(n);
        v
    }

    fn small() -> ChunkerParams {
        ChunkerParams { min_size: 2048, avg_size: 8192, max_size: 65536, seed: 0x1234_5678_9abc_def0 }
    }

    /// Golden cut points: if this test changes, every existing repository stops
    /// deduplicating against new backups. Never update it without a format version bump.
    #[test]
    fn golden_cut_points_v1() {
        let data = pseudo_random(8 << 20, 42);
        let lens = chunk_lengths(ChunkerParams::with_seed(0x0123_4567_89ab_cdef), &data);
        assert_eq!(lens.iter().sum::<usize>(), data.len());
        assert_eq!(lens, GOLDEN_V1.to_vec(), "chunk boundaries of format v1 changed");
    }

    const GOLDEN_V1: [usize; 8] = [349793, 1373948, 1078930, 1381965, 1529991, 1293444, 894101, 486436];

    #[test]
    fn seed_changes_boundaries() {
        let data = pseudo_random(1 << 20, 7);
        let mut p = small();
        let a = chunk_lengths(p, &data);
        p.seed ^= 1;
        let b = chunk_lengths(p, &data);
        assert_ne!(a, b);
    }

    #[test]
    fn tiny_reads_give_same_chunks() {
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(777);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let data = pseudo_random(600_000, 3);
        let mut c = Chunker::new(small());
        c.start();
        let mut t = Trickle(&data);
        let mut lens = Vec::new();
        while let Some(ch) = c.next_chunk(&mut t).unwrap() {
            lens.push(ch.len());
        }
        assert_eq!(lens, chunk_lengths(small(), &data));
    }

    #[test]
    fn default_params_are_valid() {
        assert!(ChunkerParams::with_seed(1).is_valid());
        assert!(small().is_valid());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Inserting bytes changes only the chunks around the edit: most chunks of the
        /// original appear unchanged in the edited stream.
        #[test]
        fn boundaries_stable_under_insertion(seed in any::<u64>(), at in 0usize..400_000, ins in proptest::collection::vec(any::<u8>(), 1..500)) {
            let data = pseudo_random(400_000, seed | 1);
            let mut edited = data[..at].to_vec();
            edited.extend_from_slice(&ins);
            edited.extend_from_slice(&data[at..]);
            let chunks = |d: &[u8]| {
                let mut out = std::collections::HashSet::new();
                let mut off = 0;
                for l in chunk_lengths(small(), d) { out.insert(d[off..off + l].to_vec()); off += l; }
                out
            };
            let a = chunks(&data);
            let b = chunks(&edited);
            let lost = a.difference(&b).count();
            // Usually 1-2 chunks change; an edit can shift a few following cut points before
            // they resynchronise (rarely 4, CI saw it once), so the bound leaves room: what
            // must hold is that an edit stays local, not a fixed count.
            prop_assert!(lost <= 8, "{} of {} chunks changed", lost, a.len());
        }
    }
}
