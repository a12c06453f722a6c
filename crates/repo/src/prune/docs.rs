//! Prune's documents: markers (packs to delete) and arming records (the leases that were
//! live once no index named them), and the rule writers follow: never adopt a marked pack.

use std::collections::HashSet;

use cairn_format::lease::{Armed, Marker, PruneBody, PruneDoc};
use cairn_format::{MarkerId, PackId};

use crate::repository::KIND_PRUNE;
use crate::{layout, Error, Repository, Result};

/// A marker and the arming records that refer to it.
#[derive(Debug, Clone)]
pub struct MarkerState {
    pub id: MarkerId,
    pub marker: Marker,
    pub arms: Vec<(MarkerId, Armed)>,
}

/// Every prune document: markers (with their arms), arms whose marker is gone, and
/// documents that could not be read.
#[derive(Debug, Default)]
pub struct PruneDocs {
    pub markers: Vec<MarkerState>,
    pub orphan_arms: Vec<MarkerId>,
    pub unreadable: Vec<(MarkerId, String)>,
}

impl PruneDocs {
    pub fn marked_packs(&self) -> HashSet<PackId> {
        self.markers.iter().flat_map(|m| m.marker.packs.iter().copied()).collect()
    }
}

impl Repository {
    pub fn load_prune_docs(&self) -> Result<PruneDocs> {
        let mut docs = PruneDocs::default();
        let mut arms = Vec::new();
        for m in self.block_on(self.store().list(layout::PRUNE))? {
            let Some(id) = layout::id_of(&m.path).map(MarkerId) else { continue };
            let bytes = match self.load_sealed(KIND_PRUNE, &m.path, "prune document") {
                Ok(b) => b,
                Err(Error::Store(e)) if e.is_not_found() => continue, // swept meanwhile
                Err(e) => {
                    docs.unreadable.push((id, e.to_string()));
                    continue;
                }
            };
            match PruneDoc::decode(&bytes) {
                Ok(PruneDoc { body: PruneBody::Marker(marker), .. }) => {
                    docs.markers.push(MarkerState { id, marker, arms: Vec::new() })
                }
                Ok(PruneDoc { body: PruneBody::Armed(a), .. }) => arms.push((id, a)),
                Err(e) => docs.unreadable.push((id, e.to_string())),
            }
        }
        for (id, a) in arms {
            match docs.markers.iter_mut().find(|m| m.id == a.marker) {
                Some(m) => m.arms.push((id, a)),
                None => docs.orphan_arms.push(id),
            }
        }
        docs.markers.sort_by_key(|m| m.marker.created);
        Ok(docs)
    }

    /// Packs named by some readable prune marker: writers must not adopt them.
    pub fn marked_packs(&self) -> Result<HashSet<PackId>> {
        Ok(self.load_prune_docs()?.marked_packs())
    }

    pub(super) fn save_prune_doc(&self, body: PruneBody) -> Result<MarkerId> {
        self.save_sealed(KIND_PRUNE, |id| layout::prune_doc(&MarkerId(id)), &PruneDoc::new(body).encode()).map(MarkerId)
    }
}
