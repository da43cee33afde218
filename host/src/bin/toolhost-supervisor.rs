//! `toolhost-supervisor`: the small, single-threaded process that confines
//! one tool (see `toolhost::sandbox::supervisor`). A separate binary so that
//! starting it costs little more than starting the tool itself.

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("--probe") => toolhost::sandbox::supervisor::probe_main(),
        Some("--hold-netns") => toolhost::sandbox::supervisor::hold_netns_main(),
        Some("run") => toolhost::sandbox::supervisor::main(args.collect()),
        _ => {
            eprintln!(
                "toolhost-supervisor is started by toolhost to confine tools:\n  toolhost-supervisor run <plan> -- <program> [args...]\n  toolhost-supervisor --probe"
            );
            std::process::exit(2)
        }
    }
}
