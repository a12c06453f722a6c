//! What to delete and what to repack, the repacking itself, and the consolidated index.

use std::collections::HashSet;

use cairn_format::index::{IndexFile, IndexedPack};
use cairn_format::{BlobType, Id, IndexId, PackId};
use cairn_store::PutMode;

use super::state::{Source, State, Used};
use super::{PruneOptions, PruneReport};
use crate::lease::unix_now;
use crate::{layout, Error, Packer, Repository, Result};

pub(super) struct Plan {
    /// Catalog positions of packs with no referenced blob.
    pub(super) delete: Vec<usize>,
    /// Catalog positions of packs to repack.
    pub(super) repack: Vec<usize>,
    pub(super) repack_blobs: usize,
    pub(super) bytes_used: u64,
    pub(super) bytes_unused: u64,
}

/// Classifies the indexed and adopted packs.
pub(super) fn plan(st: &State, used: &Used, opts: &PruneOptions) -> Plan {
    let cat = &st.catalog;
    let mut delete = Vec::new();
    let mut partial = Vec::new(); // (position, used bytes, unused bytes)
    let (mut bytes_used, mut bytes_unused) = (0u64, 0u64);
    for (i, p) in cat.packs.iter().enumerate() {
        if p.source == Source::Marked || !st.sizes.contains_key(&p.id) {
            continue;
        }
        // Stored bytes of the blobs this pack is the home of, and of the others.
        let (mut u, mut unused) = (0u64, 0u64);
        for (j, b) in p.blobs.iter().enumerate() {
            if used.blobs.contains(&b.id) && cat.home.get(&b.id) == Some(&(i as u32, j as u32)) {
                u += b.length as u64;
            } else {
                unused += b.length as u64;
            }
        }
        if u == 0 {
            delete.push(i);
            bytes_unused += unused;
        } else {
            bytes_used += u;
            bytes_unused += unused;
            if unused > 0 {
                partial.push((i, u, unused));
            }
        }
    }
    // Repack the packs with the largest share of unused bytes first, until what stays
    // unused in kept packs is within the tolerance.
    partial.sort_by(|a, b| {
        let fa = a.2 as f64 / (a.1 + a.2) as f64;
        let fb = b.2 as f64 / (b.1 + b.2) as f64;
        fb.total_cmp(&fa).then(a.0.cmp(&b.0))
    });
    let mut remaining_unused: u64 = partial.iter().map(|p| p.2).sum();
    let allowed = (opts.max_unused.max(0.0) * bytes_used as f64) as u64;
    let mut repack = Vec::new();
    let mut repack_bytes = 0u64;
    let mut repack_blobs = 0usize;
    for (i, u, unused) in partial {
        if remaining_unused <= allowed {
            break;
        }
        if opts.max_repack_bytes.is_some_and(|m| repack_bytes + u > m) {
            continue;
        }
        repack_bytes += u;
        remaining_unused -= unused;
        repack_blobs += cat.packs[i]
            .blobs
            .iter()
            .enumerate()
            .filter(|(j, b)| used.blobs.contains(&b.id) && cat.home.get(&b.id) == Some(&(i as u32, *j as u32)))
            .count();
        repack.push(i);
    }
    Plan { delete, repack, repack_blobs, bytes_used, bytes_unused }
}

/// Copies the referenced blobs of the packs to repack into new packs (decrypted and
/// sealed again under a new pack key; never decompressed), uploads them, and returns them.
pub(super) fn repack(
    repo: &Repository,
    st: &State,
    used: &Used,
    plan: &Plan,
    r: &mut PruneReport,
    meter: &crate::Meter,
) -> Result<Vec<IndexedPack>> {
    let cat = &st.catalog;
    let target = repo.config().pack_size as usize;
    let mut out = Vec::new();
    let mut packers: [Option<Packer>; 2] = [None, None];
    let flush = |p: Packer, out: &mut Vec<IndexedPack>, r: &mut PruneReport| -> Result<()> {
        let f = p.finish()?;
        r.bytes_repack_written += f.data.len() as u64;
        match repo.block_on(repo.store().put(&layout::pack(&f.id), f.data, PutMode::Create)) {
            Err(e) if e.kind() == cairn_store::ErrorKind::AlreadyExists => {}
            res => res?,
        }
        out.push(IndexedPack { id: f.id, salt: f.salt, blobs: f.entries });
        Ok(())
    };
    for &i in &plan.repack {
        let p = &cat.packs[i];
        let data = repo.read_pack(p.id)?;
        if Id(cairn_crypto::content_hash(&data)) != p.id.0 {
            return Err(Error::BadPack {
                pack: p.id,
                detail: "content does not match its name; not repacking it (run 'cairn check --read-data')".into(),
            });
        }
        let key = repo.master().object_key(&p.salt);
        for (j, b) in p.blobs.iter().enumerate() {
            if cat.home.get(&b.id) != Some(&(i as u32, j as u32)) {
                continue;
            }
            // Unreferenced blobs are dropped here; referenced ones move.
            if !used.blobs.contains(&b.id) {
                continue;
            }
            let (s, e) = (b.offset as usize, b.offset as usize + b.length as usize);
            let mut ct = data
                .get(s..e)
                .ok_or_else(|| Error::BadPack { pack: p.id, detail: "blob beyond the end".into() })?
                .to_vec();
            let n = key
                .open_in_place(cairn_crypto::offset_nonce(b.offset as u64), &mut ct)
                .map_err(|err| Error::Damaged { what: "blob", id: b.id.to_hex(), detail: err.to_string() })?;
            ct.truncate(n);
            let slot = &mut packers[if b.kind == BlobType::Tree { 1 } else { 0 }];
            if slot.as_ref().is_some_and(|k| !k.is_empty() && k.len() + ct.len() + 16 > target) {
                if let Some(k) = slot.take() {
                    flush(k, &mut out, r)?;
                }
            }
            if slot.is_none() {
                *slot = Some(Packer::new(repo.master(), b.kind, target)?);
            }
            if let Some(k) = slot.as_mut() {
                k.add_with(b.id, b.raw_length, |buf| buf.extend_from_slice(&ct))?;
            }
        }
        meter.done(1, p.size);
    }
    for k in packers.into_iter().flatten() {
        if !k.is_empty() {
            flush(k, &mut out, r)?;
        }
    }
    Ok(out)
}

/// Writes one index for every kept pack (indexed, adopted, and the new repacked ones),
/// superseding every index file read, then deletes those files. Files are written so that
/// the one carrying `supersedes` comes last: a reader never sees a kept pack unindexed.
pub(super) fn consolidate(
    repo: &Repository,
    st: &State,
    plan: &Plan,
    new_packs: Vec<IndexedPack>,
    swept: &HashSet<PackId>,
    r: &mut PruneReport,
) -> Result<()> {
    const BLOBS_PER_FILE: usize = 200_000;
    let gone: HashSet<usize> = plan.delete.iter().chain(&plan.repack).copied().collect();
    let mut packs: Vec<IndexedPack> = st
        .catalog
        .packs
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            p.source != Source::Marked && !gone.contains(i) && !swept.contains(&p.id) && st.sizes.contains_key(&p.id)
        })
        .map(|(_, p)| IndexedPack { id: p.id, salt: p.salt, blobs: p.blobs.clone() })
        .collect();
    packs.extend(new_packs);
    let mut files: Vec<IndexFile> = Vec::new();
    let mut cur = IndexFile::default();
    let mut n = 0;
    for p in packs {
        n += p.blobs.len();
        cur.packs.push(p);
        if n >= BLOBS_PER_FILE {
            files.push(std::mem::take(&mut cur));
            n = 0;
        }
    }
    files.push(cur);
    let last = files.pop().unwrap_or_default();
    let mut written = HashSet::new();
    for f in &files {
        written.insert(repo.save_index(f)?);
        r.index_files_written += 1;
    }
    // A file written now can have the content, hence the name, of one read before: it must
    // be neither superseded nor deleted.
    let old: Vec<IndexId> = st.index_ids.iter().filter(|id| !written.contains(id)).copied().collect();
    written.insert(repo.save_index(&IndexFile { supersedes: old.clone(), packs: last.packs })?);
    r.index_files_written += 1;
    let now = unix_now();
    for id in old.iter().filter(|id| !written.contains(id)) {
        // A superseded file is ignored by readers; a locked one is deleted by a later prune.
        if repo.locked_until(st.index_modified.get(id).copied().flatten(), now).is_some() {
            r.index_files_locked += 1;
            continue;
        }
        repo.block_on(repo.store().delete(&layout::index(id)))?;
        r.index_files_deleted += 1;
    }
    Ok(())
}
