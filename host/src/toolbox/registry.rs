//! An immutable snapshot of what the toolbox offers: every valid file (a
//! version, by digest) and, per workflow name, the current version (the
//! newest file claiming that name). Snapshots are replaced whole on change;
//! a run holds the `Arc<LoadedWorkflow>` it started with, so replacing or
//! deleting a file never affects a run in flight, and an old version is
//! dropped when the last run using it ends.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::manifest::WorkflowInfo;
use crate::runtime::{GuestState, WorkflowPre};

/// A validated, linked workflow component.
pub struct LoadedWorkflow {
    /// Validated metadata from `describe`.
    pub info: WorkflowInfo,
    /// sha256 of the component bytes.
    pub digest: String,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// Component size in bytes.
    pub size: u64,
    /// Modification time of the file when loaded.
    pub modified: SystemTime,
    /// Linked and ready to instantiate.
    pub pre: WorkflowPre<GuestState>,
    /// Compiled parameters schema.
    pub params: Arc<jsonschema::Validator>,
}

/// A file that did not load, and why.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The file.
    pub path: PathBuf,
    /// What was wrong and what to do.
    pub reason: String,
}

/// The workflows a host can run, at one point in time.
#[derive(Default, Clone)]
pub struct Registry {
    files: BTreeMap<PathBuf, Arc<LoadedWorkflow>>,
    current: BTreeMap<String, Arc<LoadedWorkflow>>,
    rejections: BTreeMap<PathBuf, Rejection>,
}

impl Registry {
    /// Sets the version provided by `wf.path` (replacing what that file gave before).
    pub fn insert(&mut self, wf: LoadedWorkflow) {
        self.rejections.remove(&wf.path);
        self.files.insert(wf.path.clone(), Arc::new(wf));
        self.recompute();
    }

    /// Records a rejected file; what it provided before stays in service.
    pub fn reject(&mut self, rejection: Rejection) {
        self.rejections.insert(rejection.path.clone(), rejection);
    }

    /// Forgets that `path` was rejected.
    pub fn clear_rejection(&mut self, path: &PathBuf) {
        self.rejections.remove(path);
    }

    /// Forgets a deleted file (its version stops being offered).
    pub fn remove(&mut self, path: &PathBuf) -> Option<Arc<LoadedWorkflow>> {
        self.rejections.remove(path);
        let removed = self.files.remove(path);
        self.recompute();
        removed
    }

    fn recompute(&mut self) {
        let mut current: BTreeMap<String, Arc<LoadedWorkflow>> = BTreeMap::new();
        for wf in self.files.values() {
            let newer = current
                .get(&wf.info.name)
                .is_none_or(|c| (wf.modified, &wf.path) > (c.modified, &c.path));
            if newer {
                current.insert(wf.info.name.clone(), wf.clone());
            }
        }
        self.current = current;
    }

    /// The current version of workflow `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedWorkflow>> {
        self.current.get(name).cloned()
    }

    /// The version with sha256 `digest`, if a file in the toolbox provides it.
    pub fn by_digest(&self, digest: &str) -> Option<Arc<LoadedWorkflow>> {
        self.files.values().find(|w| w.digest == digest).cloned()
    }

    /// The version loaded from `path`.
    pub fn by_path(&self, path: &PathBuf) -> Option<Arc<LoadedWorkflow>> {
        self.files.get(path).cloned()
    }

    /// Current workflows, by name.
    pub fn workflows(&self) -> impl Iterator<Item = &Arc<LoadedWorkflow>> {
        self.current.values()
    }

    /// Every loaded file (all versions).
    pub fn versions(&self) -> impl Iterator<Item = &Arc<LoadedWorkflow>> {
        self.files.values()
    }

    /// Files that did not load.
    pub fn rejections(&self) -> impl Iterator<Item = &Rejection> {
        self.rejections.values()
    }

    /// Comma-separated names, for "unknown workflow" messages.
    pub fn names(&self) -> String {
        if self.current.is_empty() {
            "(none)".into()
        } else {
            self.current.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}
