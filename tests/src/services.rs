//! The shared Temporal and S3 (Garage) dev servers for the distributed tests:
//! taken from the environment `cargo xtask test` exports, or, when a test
//! binary runs by hand, from `Services::up` (which reuses running servers and
//! starts missing ones, once, under a file lock). Tests never stop the shared
//! servers; a test that needs S3 to go away uses [`private_garage`].

use std::path::Path;
use std::sync::OnceLock;

pub use devservices::{Env, Garage};

/// The shared services, for the whole test process.
pub fn shared() -> &'static Env {
    static SHARED: OnceLock<Env> = OnceLock::new();
    SHARED.get_or_init(|| {
        match Env::from_process_env() {
            Ok(Some(env)) => return env,
            Ok(None) => {}
            Err(e) => panic!("the dev services' environment is incomplete: {e:#}"),
        }
        devservices::Services::up(&crate::repo()).unwrap_or_else(|e| {
            panic!("cannot start the dev services (see docs/SERVICES.md): {e:#}")
        })
    })
}

/// A private Garage with its data under `dir`, on free ports: stop and
/// start it to take S3 away and bring it back. Same bucket and key as the
/// shared one; `shared().with_s3(&garage)` points an `Env` at it.
pub fn private_garage(dir: &Path) -> Garage {
    let port = || devservices::free_port().expect("a free port on 127.0.0.1");
    Garage::start_private(dir, port(), port(), port())
        .unwrap_or_else(|e| panic!("cannot start a private Garage: {e:#}"))
}
