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

impl GuestState {
    fn store_artifact(&self, name: &str, contents: &[u8]) -> Result<(), String> {
        store_artifact(&self.run, name, contents)
    }
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

impl Host for GuestState {
    async fn put(&mut self, name: String, contents: Vec<u8>) -> anyhow::Result<Result<(), String>> {
        if let Some(steps) = self.run.steps_for(self.kind) {
            return steps.artifact(name, Some(contents), None).await;
        }
        Ok(self.store_artifact(&name, &contents))
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
        Ok(self.store_artifact(&name, &contents))
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
