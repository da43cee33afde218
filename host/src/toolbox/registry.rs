//! Name -> loaded workflow. A workflow name maps to exactly one current
//! component (by digest); a second file claiming a taken name is rejected.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

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

/// The workflows a host can run.
#[derive(Default)]
pub struct Registry {
    workflows: BTreeMap<String, Arc<LoadedWorkflow>>,
    rejections: Vec<Rejection>,
}

impl Registry {
    /// Adds `wf`, or rejects it when its name is taken by another file.
    pub fn insert(&mut self, wf: LoadedWorkflow) {
        if let Some(existing) = self.workflows.get(&wf.info.name) {
            let reason = format!(
                "workflow `{}` is already provided by `{}` (sha256 {}); each workflow name may come from one file",
                wf.info.name,
                existing.path.display(),
                &existing.digest[..12]
            );
            self.rejections.push(Rejection {
                path: wf.path,
                reason,
            });
            return;
        }
        self.workflows.insert(wf.info.name.clone(), Arc::new(wf));
    }

    /// Records a rejected file.
    pub fn reject(&mut self, rejection: Rejection) {
        self.rejections.push(rejection);
    }

    /// The workflow called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedWorkflow>> {
        self.workflows.get(name).cloned()
    }

    /// All workflows, by name.
    pub fn workflows(&self) -> impl Iterator<Item = &Arc<LoadedWorkflow>> {
        self.workflows.values()
    }

    /// Files that did not load.
    pub fn rejections(&self) -> &[Rejection] {
        &self.rejections
    }

    /// Comma-separated names, for "unknown workflow" messages.
    pub fn names(&self) -> String {
        if self.workflows.is_empty() {
            "(none)".into()
        } else {
            self.workflows
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}
