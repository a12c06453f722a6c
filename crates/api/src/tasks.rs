//! Work started through the API that outlives its request: manual backups and drills
//! (queued to the daemon, answered when their job ends) and restores (run here). The
//! console polls `/api/tasks/{id}`; the catalog and the audit log hold the lasting record.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use cairn_daemon::restore::Progress;

/// Finished tasks remembered (the oldest are forgotten first).
const KEEP: usize = 1000;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Task {
    pub id: u64,
    pub kind: &'static str,
    pub source: Option<String>,
    /// Who asked (token name).
    pub token: String,
    /// `running`, `succeeded`, `partial` or `failed`.
    pub state: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub bytes_done: Option<u64>,
    pub bytes_total: Option<u64>,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    #[serde(skip)]
    progress: Option<Arc<Progress>>,
}

#[derive(Default)]
pub struct Tasks(Mutex<(u64, BTreeMap<u64, Task>)>);

impl Tasks {
    pub fn start(
        &self,
        kind: &'static str,
        source: Option<String>,
        token: &str,
        progress: Option<Arc<Progress>>,
    ) -> u64 {
        let Ok(mut g) = self.0.lock() else { return 0 };
        g.0 += 1;
        let id = g.0;
        let t = Task {
            id,
            kind,
            source,
            token: token.to_string(),
            state: "running".into(),
            started_at: jiff::Timestamp::now().to_string(),
            ended_at: None,
            bytes_done: None,
            bytes_total: None,
            result: None,
            error: None,
            progress,
        };
        g.1.insert(id, t);
        while g.1.len() > KEEP {
            let Some(old) = g.1.iter().find(|(_, t)| t.ended_at.is_some()).map(|(k, _)| *k) else { break };
            g.1.remove(&old);
        }
        id
    }

    pub fn finish(&self, id: u64, state: &str, result: Option<serde_json::Value>, error: Option<String>) {
        if let Ok(mut g) = self.0.lock() {
            if let Some(t) = g.1.get_mut(&id) {
                t.state = state.to_string();
                t.ended_at = Some(jiff::Timestamp::now().to_string());
                t.result = result;
                t.error = error;
            }
        }
    }

    pub fn get(&self, id: u64) -> Option<Task> {
        let g = self.0.lock().ok()?;
        let mut t = g.1.get(&id)?.clone();
        if let Some(p) = &t.progress {
            t.bytes_done = Some(p.bytes_done.load(Ordering::Relaxed));
            t.bytes_total = Some(p.bytes_total.load(Ordering::Relaxed));
        }
        Some(t)
    }
}
