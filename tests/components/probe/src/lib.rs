//! `probe`: a test workflow that performs the actions its parameters list
//! (call tools, touch the workspace, loop, allocate, flood, read clocks...)
//! and returns what each action observed. The integration and hostile tests
//! drive the host through it.

use std::time::Duration;

use serde_json::{Value, json};
use toolhost_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Actions, performed in order.
    pub actions: Vec<Action>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Action {
    Tool {
        tool: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        cwd: Option<String>,
        #[serde(default)]
        env: Vec<(String, String)>,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    Read {
        path: String,
    },
    Write {
        path: String,
        data: String,
    },
    List {
        path: String,
    },
    Exists {
        path: String,
    },
    Loop,
    Alloc {
        mib: u64,
    },
    Recurse,
    Clock,
    Findings {
        count: u32,
    },
    Log {
        count: u32,
        size: u32,
    },
    /// Logs `message` once, as given.
    Say {
        message: String,
    },
    Print {
        count: u32,
        size: u32,
    },
    Progress {
        count: u32,
    },
    Sleep {
        ms: u64,
    },
    Panic {
        message: String,
    },
    Fail {
        message: String,
    },
    Artifact {
        name: String,
        data: String,
    },
    Activity {
        actions: Vec<Action>,
    },
    NestedActivity,
    FsRead {
        path: String,
    },
}

pub struct Probe;

impl Workflow for Probe {
    const NAME: &'static str = "probe";
    const VERSION: &'static str = "0.1.0";
    const DESCRIPTION: &'static str = "Test probe: performs the listed actions.";
    const VERTICAL: &'static str = "test";
    const TOOLS: &'static [&'static str] = &["sleep", "sh", "cat", "true", "env", "python3"];
    const TIMEOUT_SECS: u32 = 300;

    type Params = Params;
    type Output = Value;

    fn run(ctx: &Context, params: Params) -> Result<Value> {
        let mut results = Vec::new();
        for action in params.actions {
            results.push(perform(Some(ctx), action)?);
        }
        Ok(json!({ "results": results }))
    }

    fn activity(name: &str, input: &str) -> Result<String> {
        match name {
            "actions" => toolhost_sdk::activity::handle(input, |actions: Vec<Action>| {
                let mut results = Vec::new();
                for action in actions {
                    results.push(perform(None, action)?);
                }
                Ok(results)
            }),
            other => Err(Error::msg(format!("unknown activity `{other}`"))),
        }
    }
}

fn perform(ctx: Option<&Context>, action: Action) -> Result<Value> {
    Ok(match action {
        Action::Tool {
            tool,
            args,
            cwd,
            env,
            timeout_ms,
        } => {
            let mut call = tools::run(&tool).args(args);
            if let Some(c) = cwd {
                call = call.cwd(c);
            }
            for (k, v) in env {
                call = call.env(k, v);
            }
            if let Some(t) = timeout_ms {
                call = call.timeout(Duration::from_millis(t));
            }
            match call.output() {
                Ok(o) => json!({"ok": {"exit_code": o.exit_code, "signal": o.signal,
                    "stdout": o.stdout_str(), "stderr": o.stderr_str(), "truncated": o.truncated,
                    "stdout_len": o.stdout.len()}}),
                Err(e) => json!({"err": tool_error(&e)}),
            }
        }
        Action::Read { path } => match workspace::read(&path) {
            Ok(b) => json!({"ok": String::from_utf8_lossy(&b)}),
            Err(e) => json!({"err": fs_error(&e)}),
        },
        Action::Write { path, data } => match workspace::write(&path, data) {
            Ok(()) => json!({"ok": null}),
            Err(e) => json!({"err": fs_error(&e)}),
        },
        Action::List { path } => match workspace::list(&path, true) {
            Ok(entries) => {
                json!({"ok": entries.iter().map(|e| e.path.clone()).collect::<Vec<_>>()})
            }
            Err(e) => json!({"err": fs_error(&e)}),
        },
        Action::Exists { path } => match workspace::exists(&path) {
            Ok(b) => json!({"ok": b}),
            Err(e) => json!({"err": fs_error(&e)}),
        },
        Action::Loop => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        Action::Alloc { mib } => {
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            for _ in 0..mib {
                chunks.push(vec![1u8; 1 << 20]);
            }
            json!({"ok": chunks.len()})
        }
        Action::Recurse => json!({"ok": recurse(std::hint::black_box(1))}),
        Action::Clock => {
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            let mut buf = [0u8; 8];
            let std_random = {
                use std::hash::{BuildHasher, Hasher};
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u8(0);
                h.finish()
            };
            buf.copy_from_slice(&std_random.to_le_bytes());
            json!({"ok": {"now_ms": toolhost_sdk::durable::now_ms(),
                          "random": toolhost_sdk::durable::random_u64(),
                          "wall_ns": wall, "std_random": u64::from_le_bytes(buf)}})
        }
        Action::Findings { count } => {
            for i in 0..count {
                report(
                    Finding::new("probe/flood", Severity::Low, format!("finding {i}"))
                        .at("src/lib.rs", i + 1),
                );
            }
            json!({"ok": count})
        }
        Action::Log { count, size } => {
            let line = "x".repeat(size as usize);
            for _ in 0..count {
                toolhost_sdk::log::info!("{line}");
            }
            json!({"ok": count})
        }
        Action::Say { message } => {
            toolhost_sdk::log::info!("{message}");
            json!({"ok": null})
        }
        Action::Print { count, size } => {
            let line = "p".repeat(size as usize);
            for _ in 0..count {
                println!("{line}");
            }
            json!({"ok": count})
        }
        Action::Progress { count } => {
            for i in 0..count {
                progress(&json!({"step": i, "pad": "y".repeat(1000)}));
            }
            json!({"ok": count})
        }
        Action::Sleep { ms } => {
            toolhost_sdk::durable::sleep(Duration::from_millis(ms));
            json!({"ok": ms})
        }
        Action::Panic { message } => panic!("{message}"),
        Action::Fail { message } => return Err(Error::msg(message)),
        Action::Artifact { name, data } => match toolhost_sdk::artifacts::put(&name, data) {
            Ok(()) => json!({"ok": null}),
            Err(e) => json!({"err": e.to_string()}),
        },
        Action::Activity { actions } => match ctx {
            Some(ctx) => match ctx.activity::<_, Vec<Value>>("actions", &actions) {
                Ok(v) => json!({"ok": v}),
                Err(e) => json!({"err": e.to_string()}),
            },
            None => json!({"err": "no context in activity code"}),
        },
        Action::NestedActivity => {
            // Called from activity code through the raw import path the SDK uses.
            let ctx = Context::__new();
            match ctx.activity::<_, Value>("actions", &Vec::<Action>::new()) {
                Ok(v) => json!({"ok": v}),
                Err(e) => json!({"err": e.to_string()}),
            }
        }
        Action::FsRead { path } => match std::fs::read(&path) {
            Ok(b) => json!({"ok": String::from_utf8_lossy(&b)}),
            Err(e) => json!({"err": e.to_string()}),
        },
    })
}

#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let buf = std::hint::black_box([n; 64]);
    recurse(buf[3].wrapping_add(1)).wrapping_add(buf[7])
}

fn tool_error(e: &ToolError) -> Value {
    match e {
        ToolError::NotPermitted(m) => json!({"not_permitted": m}),
        ToolError::NotFound(m) => json!({"not_found": m}),
        ToolError::TimedOut => json!("timed_out"),
        ToolError::Failed(m) => json!({"failed": m}),
        ToolError::Cancelled => json!("cancelled"),
    }
}

fn fs_error(e: &workspace::FsError) -> Value {
    match e {
        workspace::FsError::InvalidPath(m) => json!({"invalid_path": m}),
        workspace::FsError::NotFound(m) => json!({"not_found": m}),
        workspace::FsError::QuotaExceeded(m) => json!({"quota_exceeded": m}),
        workspace::FsError::Io(m) => json!({"io": m}),
    }
}

toolhost_sdk::export_workflow!(Probe);
