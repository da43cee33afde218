//! The `artifacts` interface: files kept with the run's results. Names are
//! plain file names; bytes count against the run's write quota.

use crate::runtime::GuestState;
use crate::runtime::bindings::toolhost::workflow::artifacts::Host;

/// Checks an artifact name: a plain, visible file name.
pub fn check_name(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.len() > 255
        || name == "."
        || name == ".."
        || name.starts_with('.')
        || name.contains(['/', '\\', '\0']);
    if bad {
        return Err(format!(
            "artifact name `{}` is invalid: use a plain file name (no `/`, not starting with `.`, at most 255 bytes)",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// Stores artifact `name` of `run` in its artifacts directory, charged to
/// the write quota.
pub fn store_artifact(run: &super::RunContext, name: &str, contents: &[u8]) -> Result<(), String> {
    {
        check_name(name)?;
        run.workspace
            .charge_write(contents.len() as u64)
            .map_err(|e| super::workspace::describe(&e))?;
        std::fs::create_dir_all(&run.artifacts_dir)
            .and_then(|()| std::fs::write(run.artifacts_dir.join(name), contents))
            .map_err(|e| format!("cannot store artifact `{name}`: {e}"))?;
        run.journal.host_log(
            "info",
            &format!("stored artifact `{name}` ({} bytes)", contents.len()),
        );
        Ok(())
    }
}

/// Reads artifact `name` of `run`: from this host's artifacts directory,
/// else (distributed steps) from the blob store.
pub async fn read_artifact(run: &super::RunContext, name: &str) -> Result<Option<Vec<u8>>, String> {
    check_name(name)?;
    match std::fs::read(run.artifacts_dir.join(name)) {
        Ok(bytes) => return Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read artifact `{name}`: {e}")),
    }
    let Some(blobs) = &run.artifact_blobs else {
        return Ok(None);
    };
    let key = crate::engine::RunRecord::key(&run.run_id, &format!("artifacts/{name}"));
    match blobs.get(&key).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(crate::storage::StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(format!(
            "cannot read artifact `{name}` from {}: {e}",
            blobs.describe()
        )),
    }
}

/// Stores artifact `name` of `run`; in distributed steps it is also
/// written to the blob store at once.
async fn keep_artifact(run: &super::RunContext, name: &str, contents: &[u8]) -> Result<(), String> {
    store_artifact(run, name, contents)?;
    if let Some(blobs) = &run.artifact_blobs {
        let key = crate::engine::RunRecord::key(&run.run_id, &format!("artifacts/{name}"));
        blobs.put(&key, contents.to_vec()).await.map_err(|e| {
            format!(
                "cannot store artifact `{name}` in {}: {e}",
                blobs.describe()
            )
        })?;
    }
    Ok(())
}

impl Host for GuestState {
    async fn put(&mut self, name: String, contents: Vec<u8>) -> anyhow::Result<Result<(), String>> {
        if let Some(steps) = self.run.steps_for(self.kind) {
            return steps.artifact(name, Some(contents), None).await;
        }
        Ok(keep_artifact(&self.run.clone(), &name, &contents).await)
    }

    async fn put_file(&mut self, name: String, path: String) -> anyhow::Result<Result<(), String>> {
        if let Some(steps) = self.run.steps_for(self.kind) {
            return steps.artifact(name, None, Some(path)).await;
        }
        let contents = match self.run.workspace.read(&path) {
            Ok(c) => c,
            Err(e) => {
                return Ok(Err(format!(
                    "cannot read `{path}`: {}",
                    super::workspace::describe(&e)
                )));
            }
        };
        Ok(keep_artifact(&self.run.clone(), &name, &contents).await)
    }

    async fn get(&mut self, name: String) -> anyhow::Result<Result<Option<Vec<u8>>, String>> {
        if self.kind != crate::runtime::state::CodeKind::Activity {
            return Ok(Err(
                "`artifacts.get` is only available to activity code (a read is not a replayable step)".into(),
            ));
        }
        Ok(read_artifact(&self.run, &name).await)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_plain_files() {
        assert!(super::check_name("crash-1234.bin").is_ok());
        for bad in ["", "..", ".hidden", "a/b", "a\\b", "a\0"] {
            assert!(super::check_name(bad).is_err(), "{bad:?}");
        }
    }
}
