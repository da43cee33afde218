//! Per-invocation pids cgroups: the process limit that binds root (for
//! whom `RLIMIT_NPROC` does not count) and the way to kill every process a
//! tool left behind.
//!
//! Two hierarchies are supported:
//!
//! * **cgroup v1**: the pids controller's own hierarchy (usually
//!   `/sys/fs/cgroup/pids`); tool cgroups go in its `toolhost/` directory.
//! * **cgroup v2** (unified): a subtree of the cgroup2 mount where the pids
//!   controller is enabled for children: `[sandbox] cgroup_root` when the
//!   operator delegated one (for example a systemd unit with `Delegate=yes`
//!   whose `toolhost/` child is the host's), else `toolhost/` below the
//!   mount's root, where the host enables `+pids` itself (as root). A tool
//!   cgroup gets `pids.max`, and `cgroup.kill` ends everything in it at once.
//!
//! Emptied cgroups are kept for reuse (creating one costs more than
//! starting a tool) and removed when the pool goes. Waiting for a cgroup to
//! empty never blocks an async worker: it runs on a blocking thread.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which cgroup hierarchy tool cgroups live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hierarchy {
    /// The v1 pids controller hierarchy.
    V1,
    /// The unified (v2) hierarchy.
    V2,
}

/// The directory tool cgroups are created in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRoot {
    /// The parent of every tool cgroup.
    pub dir: PathBuf,
    /// Its hierarchy.
    pub hierarchy: Hierarchy,
}

/// A mount point of a cgroup file system, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    point: PathBuf,
    v2: bool,
    pids: bool,
}

fn mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // `id parent major:minor root point options... - fstype source super-options`
            let (head, tail) = line.split_once(" - ")?;
            let point = head.split_whitespace().nth(4)?;
            let mut tail = tail.split_whitespace();
            let fstype = tail.next()?;
            let super_options = tail.nth(1).unwrap_or_default();
            let point = PathBuf::from(point.replace("\\040", " "));
            match fstype {
                "cgroup2" => Some(Mount {
                    point,
                    v2: true,
                    pids: false,
                }),
                "cgroup" => Some(Mount {
                    point,
                    v2: false,
                    pids: super_options.split(',').any(|o| o == "pids"),
                }),
                _ => None,
            }
        })
        .collect()
}

impl CgroupRoot {
    /// Finds where tool cgroups go on this machine: the configured
    /// directory, else the v1 pids hierarchy, else a cgroup2 mount with
    /// the pids controller. `mountinfo` is `/proc/self/mountinfo`.
    pub fn find(configured: Option<&Path>, mountinfo: &str) -> Result<CgroupRoot, String> {
        let all = mounts(mountinfo);
        if let Some(dir) = configured {
            let owner = all
                .iter()
                .filter(|m| dir.starts_with(&m.point))
                .max_by_key(|m| m.point.as_os_str().len())
                .ok_or_else(|| {
                    format!(
                        "[sandbox] cgroup_root = {:?} is not inside a mounted cgroup file system",
                        dir.display()
                    )
                })?;
            if !owner.v2 && !owner.pids {
                return Err(format!(
                    "[sandbox] cgroup_root = {:?} is in a cgroup v1 hierarchy without the pids controller",
                    dir.display()
                ));
            }
            return Ok(CgroupRoot {
                dir: dir.to_path_buf(),
                hierarchy: if owner.v2 {
                    Hierarchy::V2
                } else {
                    Hierarchy::V1
                },
            });
        }
        if let Some(v1) = all.iter().find(|m| !m.v2 && m.pids) {
            return Ok(CgroupRoot {
                dir: v1.point.join("toolhost"),
                hierarchy: Hierarchy::V1,
            });
        }
        if let Some(v2) = all.iter().find(|m| m.v2) {
            let controllers =
                std::fs::read_to_string(v2.point.join("cgroup.controllers")).unwrap_or_default();
            if controllers.split_whitespace().any(|c| c == "pids") {
                return Ok(CgroupRoot {
                    dir: v2.point.join("toolhost"),
                    hierarchy: Hierarchy::V2,
                });
            }
            return Err(format!(
                "the cgroup2 mount {} does not offer the pids controller (offered: {}); it is bound to another hierarchy or not delegated. Set [sandbox] cgroup_root to a delegated cgroup with the pids controller",
                v2.point.display(),
                if controllers.trim().is_empty() {
                    "none"
                } else {
                    controllers.trim()
                }
            ));
        }
        Err("no cgroup file system with the pids controller is mounted".into())
    }

    /// Creates the directory and, for v2, enables the pids controller for
    /// its children (and in its parent, for the directory itself).
    pub fn prepare(&self) -> std::io::Result<()> {
        if self.hierarchy == Hierarchy::V2
            && let Some(parent) = self.dir.parent()
        {
            enable_pids(parent)?;
        }
        match std::fs::create_dir(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if self.hierarchy == Hierarchy::V2 {
            enable_pids(&self.dir)?;
        }
        Ok(())
    }

    /// Creates a cgroup `name` limited to `max` processes, removes it, and
    /// says what worked (for `toolhost doctor` and the start-up check).
    pub fn probe(&self) -> Result<String, String> {
        self.prepare()
            .map_err(|e| format!("{}: {e}", self.dir.display()))?;
        // Unique per probe: several engines of one process may probe at once.
        static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.dir.join(format!("probe-{}-{n}", std::process::id()));
        let result =
            std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join("pids.max"), "64"));
        let kill = self.hierarchy == Hierarchy::V2 && dir.join("cgroup.kill").exists();
        let _ = std::fs::remove_dir(&dir);
        result.map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(match self.hierarchy {
            Hierarchy::V1 => format!("cgroup v1, {} is writable", self.dir.display()),
            Hierarchy::V2 => format!(
                "cgroup v2, {} delegates pids{}",
                self.dir.display(),
                if kill { " (with cgroup.kill)" } else { "" }
            ),
        })
    }
}

/// Writes `+pids` to `dir/cgroup.subtree_control` unless it is there.
fn enable_pids(dir: &Path) -> std::io::Result<()> {
    let control = dir.join("cgroup.subtree_control");
    let current = std::fs::read_to_string(&control)?;
    if current.split_whitespace().any(|c| c == "pids") {
        return Ok(());
    }
    std::fs::write(&control, "+pids").map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot enable the pids controller in {}: {e} (a cgroup with processes of its own cannot delegate controllers; give the host a delegated cgroup and set [sandbox] cgroup_root)",
                control.display()
            ),
        )
    })
}

/// Emptied tool cgroups kept for reuse.
#[derive(Debug)]
pub struct CgroupPool {
    root: CgroupRoot,
    free: Mutex<Vec<PathBuf>>,
}

impl CgroupPool {
    /// A pool creating cgroups in `root` (already prepared).
    pub fn new(root: CgroupRoot) -> Arc<Self> {
        Arc::new(CgroupPool {
            root,
            free: Mutex::new(Vec::new()),
        })
    }

    /// Where its cgroups live.
    pub fn root(&self) -> &CgroupRoot {
        &self.root
    }

    fn give_back(&self, dir: PathBuf) {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(dir);
    }

    /// A cgroup for one invocation, limited to `max` processes.
    pub fn acquire(self: &Arc<Self>, name: &str, max: u64) -> std::io::Result<CgroupGuard> {
        let reused = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let dir = match reused {
            Some(dir) => dir,
            None => {
                let dir = self.root.dir.join(name);
                std::fs::create_dir_all(&dir)?;
                dir
            }
        };
        std::fs::write(dir.join("pids.max"), max.to_string())?;
        Ok(CgroupGuard {
            dir,
            hierarchy: self.root.hierarchy,
            pool: self.clone(),
        })
    }
}

impl Drop for CgroupPool {
    fn drop(&mut self) {
        let free = std::mem::take(&mut *self.free.lock().unwrap_or_else(|p| p.into_inner()));
        for dir in free {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// A pids cgroup for one tool invocation; dropping it kills whatever is
/// left inside and returns it, empty, to the pool.
#[derive(Debug)]
pub struct CgroupGuard {
    dir: PathBuf,
    hierarchy: Hierarchy,
    pool: Arc<CgroupPool>,
}

impl CgroupGuard {
    /// The cgroup's directory (the supervisor joins it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Processes still in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        pids_in(&self.dir)
    }
}

fn pids_in(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills everything in `dir`: `cgroup.kill` on v2 (one write, race-free
/// against forks), a `SIGKILL` to each listed process on v1.
fn kill_all(dir: &Path, hierarchy: Hierarchy) {
    if hierarchy == Hierarchy::V2 && std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for pid in pids_in(dir) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Kills until `dir` is empty (at most ~0.5 s); true when it emptied.
fn drain(dir: &Path, hierarchy: Hierarchy) -> bool {
    for _ in 0..50 {
        if pids_in(dir).is_empty() {
            return true;
        }
        kill_all(dir, hierarchy);
        std::thread::sleep(Duration::from_millis(10));
    }
    pids_in(dir).is_empty()
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        // Usually the tool and its descendants are gone already.
        if self.pids().is_empty() {
            self.pool.give_back(self.dir.clone());
            return;
        }
        kill_all(&self.dir, self.hierarchy);
        let (dir, hierarchy, pool) = (self.dir.clone(), self.hierarchy, self.pool.clone());
        let finish = move || {
            if drain(&dir, hierarchy) {
                pool.give_back(dir);
            } else {
                tracing::warn!(dir = %dir.display(), "a tool's pids cgroup could not be emptied; not reused");
            }
        };
        // Waiting for the kernel to reap them sleeps: not on an async worker.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(finish);
            }
            Err(_) => finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn v1_pids_is_preferred_and_v2_needs_the_pids_controller() {
        let root = CgroupRoot::find(None, HYBRID).unwrap();
        assert_eq!(root.hierarchy, Hierarchy::V1);
        assert_eq!(root.dir, PathBuf::from("/sys/fs/cgroup/pids/toolhost"));

        // A v2-only machine: a fake cgroup2 mount point with the controller list.
        let fake = tempfile::tempdir().unwrap();
        let point = fake.path().display().to_string();
        let only_v2 = format!("24 1 0:22 / {point} rw - cgroup2 cgroup2 rw,nsdelegate\n");
        std::fs::write(fake.path().join("cgroup.controllers"), "cpu io memory\n").unwrap();
        let e = CgroupRoot::find(None, &only_v2).unwrap_err();
        assert!(
            e.contains("does not offer the pids controller") && e.contains("cgroup_root"),
            "{e}"
        );
        std::fs::write(
            fake.path().join("cgroup.controllers"),
            "cpu io memory pids\n",
        )
        .unwrap();
        let root = CgroupRoot::find(None, &only_v2).unwrap();
        assert_eq!(root.hierarchy, Hierarchy::V2);
        assert_eq!(root.dir, fake.path().join("toolhost"));

        let delegated = fake.path().join("system.slice/toolhost.service/tools");
        let root = CgroupRoot::find(Some(&delegated), &only_v2).unwrap();
        assert_eq!(
            root,
            CgroupRoot {
                dir: delegated,
                hierarchy: Hierarchy::V2
            }
        );
        let e = CgroupRoot::find(Some(Path::new("/elsewhere")), &only_v2).unwrap_err();
        assert!(e.contains("not inside a mounted cgroup"), "{e}");
        let e = CgroupRoot::find(Some(Path::new("/sys/fs/cgroup/memory/x")), HYBRID).unwrap_err();
        assert!(e.contains("without the pids controller"), "{e}");
    }

    /// The v2 file protocol, on a directory laid out like cgroupfs: the
    /// kernel's side is simulated by the files a real one would have.
    #[test]
    fn v2_enables_pids_for_children_and_limits_each_tool() {
        let fake = tempfile::tempdir().unwrap();
        std::fs::write(fake.path().join("cgroup.subtree_control"), "cpu\n").unwrap();
        let root = CgroupRoot {
            dir: fake.path().join("toolhost"),
            hierarchy: Hierarchy::V2,
        };
        // The kernel creates the control files of a new cgroup; here the
        // test does, before `prepare` writes to them.
        std::fs::create_dir(&root.dir).unwrap();
        std::fs::write(root.dir.join("cgroup.subtree_control"), "").unwrap();
        root.prepare().unwrap();
        assert_eq!(
            std::fs::read_to_string(fake.path().join("cgroup.subtree_control")).unwrap(),
            "+pids"
        );
        assert_eq!(
            std::fs::read_to_string(root.dir.join("cgroup.subtree_control")).unwrap(),
            "+pids"
        );
        let pool = CgroupPool::new(root.clone());
        let guard = pool.acquire("run-1", 64).unwrap();
        assert_eq!(
            std::fs::read_to_string(guard.dir().join("pids.max")).unwrap(),
            "64"
        );
        let dir = guard.dir().to_path_buf();
        drop(guard);
        let again = pool.acquire("run-2", 8).unwrap();
        assert_eq!(again.dir(), dir, "an emptied cgroup is reused");
        assert_eq!(
            std::fs::read_to_string(again.dir().join("pids.max")).unwrap(),
            "8"
        );
    }
}
