//! The `cairn` binary: raw arguments (clap) -> validated options -> library calls.
//! User guidance, output formats and exit codes live here and nowhere else; `anyhow` is
//! used only in this crate.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error (clap), 3 backup saved but some files
//! could not be read.

mod alert;
mod args;
mod audit;
mod backup;
mod browse;
mod check;
mod context;
mod copy;
mod drill;
mod forget;
mod keys;
mod mount;
mod output;
mod pg;
mod policy;
mod prune;
mod restore;
mod rewrite;
mod token;

use clap::Parser;

use args::{Cli, Command};

/// An error that already printed what it had to say and wants a specific exit code.
#[derive(Debug)]
pub struct Exit(pub i32);

/// The exit status of a command whose stdout reader went away (`| head`): what a death by
/// SIGPIPE gives in a shell, so `set -o pipefail` scripts see the same as with other tools.
pub const CLOSED_OUTPUT: i32 = 128 + libc::SIGPIPE;

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}
impl std::error::Error for Exit {}

fn main() {
    tune_allocator();
    let cli = Cli::parse();
    if let Some(ca) = &cli.global.cacert {
        // The object-store clients read it where they read their other settings (AWS_*):
        // set before any thread starts.
        std::env::set_var("CAIRN_CACERT", ca);
    }
    quiet_on_closed_output();
    // Tree walks (ls, find, diff, copy, rewrite, restore lookups) recurse up to the
    // format's 4096 levels: the command runs on a thread with room for that (reserved
    // address space; only what a deep tree uses is touched).
    let code = match std::thread::Builder::new()
        .name("cairn".into())
        .stack_size(cairn_repo::check::WALK_STACK)
        .spawn(move || exit_code(run(cli)))
    {
        Ok(h) => h.join().unwrap_or(1),
        Err(e) => {
            eprintln!("cairn: error: starting: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn exit_code(r: anyhow::Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<Exit>() {
            Some(Exit(c)) => *c,
            None => {
                eprintln!("cairn: error: {}", output::one_line(&e));
                1
            }
        },
    }
}

/// `cairn snapshots | head`: when the reader of stdout goes away, the command ends quietly
/// with the status a death by SIGPIPE would give (128 + 13), as any Unix tool does, instead
/// of a panic in `println!`. SIGPIPE itself stays ignored (Rust's default) for every
/// command: cairn writes to children (hooks, psql, ssh for SFTP) and sockets, and a peer
/// that exits early there must be an EPIPE error with its message ("Connection refused"
/// from ssh), not a silent death of the process.
fn quiet_on_closed_output() {
    let epipe = std::io::Error::from_raw_os_error(libc::EPIPE).to_string();
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        // std's print macros panic with "failed printing to stdout: <io error>".
        if msg.starts_with("failed printing to std") && msg.ends_with(&epipe) {
            std::process::exit(CLOSED_OUTPUT);
        }
        default(info);
    }));
}

/// Pack (8 MiB) and chunk (~1 MiB) buffers are allocated and freed at a high rate. By
/// default glibc mmaps the packs and faults in fresh zeroed pages for each one (a third of
/// the kernel time of a backup), and its dynamic thresholds let freed buffers fragment
/// across per-thread arenas. Fixed thresholds keep them in two arenas where they are
/// reused. Measured on a 1.7 GB file: backup 5.3 s -> about 3.9 s at a similar peak RSS.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 * 1024 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Completions and man pages come from the same argument definitions as the parser, so
/// they cannot drift from it; neither needs a repository.
fn generate(cmd: &Command) -> Option<anyhow::Result<()>> {
    use clap::CommandFactory;
    match cmd {
        Command::Completions(a) => {
            // Into memory first: the generator panics on a write error (a closed pipe).
            let mut out = Vec::new();
            clap_complete::generate(a.shell, &mut Cli::command(), "cairn", &mut out);
            Some(std::io::Write::write_all(&mut std::io::stdout(), &out).map_err(|e| anyhow::anyhow!("writing: {e}")))
        }
        Command::Man(a) => Some(man_pages(&a.dir)),
        _ => None,
    }
}

fn man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let top = Cli::command();
    let mut pages = vec![("cairn".to_string(), top.clone())];
    for sub in top.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("cairn-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().bin_name(name)));
    }
    for (name, cmd) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd)
            .title(name.clone())
            .render(&mut out)
            .with_context(|| format!("rendering {name}.1"))?;
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(r) = generate(&cli.command) {
        return r;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cairn-io")
        .enable_time()
        .enable_io()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the I/O runtime: {e}"))?;
    let ctx = context::Context::new(&cli.global, rt.handle().clone())?;
    // Commands on the --repo repository; the policy's commands name their repositories.
    let on_repo = !matches!(
        cli.command,
        Command::Policy(_)
            | Command::Daemon(_)
            | Command::Run(_)
            | Command::Jobs(_)
            | Command::Status(_)
            | Command::Drill(_)
            | Command::Drills(_)
            | Command::Alert(_)
            | Command::Alerts(_)
            | Command::Token(_)
    );
    let r = match cli.command {
        Command::Init(a) => context::init(&ctx, &a),
        Command::Backup(a) => backup::run(&ctx, &a),
        Command::Snapshots(a) => browse::snapshots(&ctx, &a),
        Command::Ls(a) => browse::ls(&ctx, &a),
        Command::Find(a) => browse::find(&ctx, &a),
        Command::Diff(a) => browse::diff(&ctx, &a),
        Command::Dump(a) => browse::dump(&ctx, &a),
        Command::Mount(a) => mount::run(&ctx, &a),
        Command::Stats(a) => browse::stats(&ctx, &a),
        Command::Restore(a) => restore::run(&ctx, &a),
        Command::Check(a) => check::run(&ctx, &a),
        Command::Key(a) => keys::run(&ctx, &a),
        Command::Forget(a) => forget::run(&ctx, &a),
        Command::Rewrite(a) => rewrite::run(&ctx, &a),
        Command::Prune(a) => prune::run(&ctx, &a),
        Command::Pg(a) => pg::run(&ctx, a),
        Command::Copy(a) => copy::run(&ctx, &a),
        Command::Policy(a) => policy::check(&ctx, &a),
        Command::Daemon(a) => policy::daemon(&ctx, &a),
        Command::Run(a) => policy::run(&ctx, &a),
        Command::Jobs(a) => policy::jobs(&ctx, &a),
        Command::Status(a) => policy::status(&ctx, &a),
        Command::Drill(a) => drill::run(&ctx, &a),
        Command::Drills(a) => drill::history(&ctx, &a),
        Command::Alert(a) => alert::run(&ctx, &a),
        Command::Alerts(a) => alert::list(&ctx, &a),
        Command::Audit(a) => audit::run(&ctx, &a),
        Command::Token(a) => token::run(&ctx, &a),
        Command::Completions(_) | Command::Man(_) => Ok(()),
    };
    // Named as given for a URL, absolute for a directory (`--repo .` names nothing).
    let location = match &ctx.remote {
        Some(u) => u.clone(),
        None => std::path::absolute(&ctx.repo_path).unwrap_or_else(|_| ctx.repo_path.clone()).display().to_string(),
    };
    r.map_err(|e| if on_repo { name_repository(e, &location) } else { e })
}

/// An error that comes from the repository (its store, its content) names it, unless it
/// already does: "repository s3://b/p: ... connection refused" rather than a bare
/// transport error. Errors about the command's input (a source path) are left alone.
fn name_repository(e: anyhow::Error, location: &str) -> anyhow::Error {
    if e.downcast_ref::<Exit>().is_some()
        || e.downcast_ref::<copy::Destination>().is_some()
        || output::one_line(&e).contains(location)
    {
        return e;
    }
    if e.chain().any(from_repository) {
        return e.context(format!("repository {location}"));
    }
    e
}

fn from_repository(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.is::<cairn_repo::Error>() || e.is::<cairn_store::Error>() {
        return true;
    }
    if let Some(e) = e.downcast_ref::<cairn_engine::Error>() {
        return matches!(e, cairn_engine::Error::Repo(_) | cairn_engine::Error::Damaged(_));
    }
    if let Some(e) = e.downcast_ref::<cairn_pg::Error>() {
        return match e {
            cairn_pg::Error::Repo(_) | cairn_pg::Error::Damaged(_) => true,
            cairn_pg::Error::Engine(x) => from_repository(x),
            _ => false,
        };
    }
    if let Some(e) = e.downcast_ref::<cairn_mount::Error>() {
        return matches!(e, cairn_mount::Error::Repo(_));
    }
    if let Some(e) = e.downcast_ref::<cairn_daemon::Error>() {
        return match e {
            cairn_daemon::Error::Repo(_) => true,
            cairn_daemon::Error::Engine(x) => from_repository(x),
            cairn_daemon::Error::Pg(x) => from_repository(x),
            _ => false,
        };
    }
    false
}
