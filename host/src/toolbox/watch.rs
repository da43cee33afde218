//! Watching the toolbox directory: filesystem events are collected until the
//! directory has been quiet for [`DEBOUNCE`], then each touched path is
//! reloaded. A new file becomes runnable, a changed one replaces its version
//! (unless broken), a deleted one stops being offered.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::Toolbox;

/// Quiet period before changed files are loaded.
pub const DEBOUNCE: Duration = Duration::from_millis(30);

/// Keeps the watcher alive; dropping it stops watching.
pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Toolbox {
    /// Starts watching the toolbox directory for changes.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<WatchHandle> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Option<PathBuf>>();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<Event>| match res {
                Ok(event) => {
                    if matches!(event.kind, EventKind::Access(_)) {
                        return;
                    }
                    if event.need_rescan() {
                        let _ = tx.send(None);
                    }
                    for path in event.paths {
                        let _ = tx.send(Some(path));
                    }
                }
                Err(_) => {
                    let _ = tx.send(None);
                }
            })
            .map_err(|e| anyhow::anyhow!("cannot watch the toolbox: {e}"))?;
        watcher
            .watch(&self.config.toolbox, RecursiveMode::NonRecursive)
            .map_err(|e| {
                anyhow::anyhow!("cannot watch `{}`: {e}", self.config.toolbox.display())
            })?;
        let toolbox = self.clone();
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut paths = BTreeSet::new();
                let mut rescan = first.is_none();
                paths.extend(first);
                // Collect until the directory is quiet.
                loop {
                    match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                        Ok(Some(Some(p))) => {
                            paths.insert(p);
                        }
                        Ok(Some(None)) => rescan = true,
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                if rescan {
                    toolbox.rescan().await;
                    continue;
                }
                for path in paths {
                    toolbox.reload_path(&path).await;
                }
            }
        });
        Ok(WatchHandle {
            _watcher: watcher,
            task,
        })
    }
}
