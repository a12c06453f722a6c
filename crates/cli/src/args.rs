//! Raw command-line arguments, exactly as parsed.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "cairn", version, about = "Encrypted, deduplicated backups and disaster recovery")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Repository: a directory path (default: $XDG_DATA_HOME/cairn/repo) or a URL:
    /// s3://BUCKET/PREFIX?endpoint=..., az://CONTAINER/PREFIX, gs://BUCKET/PREFIX,
    /// sftp://[USER@]HOST[:PORT]/PATH
    #[arg(long, short = 'r', env = "CAIRN_REPO", global = true)]
    pub repo: Option<String>,
    /// Trust the CA certificates in this PEM file for an object store's HTTPS endpoint
    /// (a private CA: MinIO, Ceph RGW, SeaweedFS on premises); also CAIRN_CACERT
    #[arg(long, env = "CAIRN_CACERT", global = true)]
    pub cacert: Option<PathBuf>,
    /// Read the password from this file (also CAIRN_PASSWORD_FILE)
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// Progress as JSON lines on stderr, one a second (for tools following a long run)
    #[arg(long, global = true)]
    pub json_progress: bool,
    /// Print only errors
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// Print more detail (warnings, each file with an error)
    #[arg(long, short = 'v', global = true)]
    pub verbose: bool,
    /// Limit uploads to this many KiB/s
    #[arg(long, env = "CAIRN_LIMIT_UPLOAD", global = true)]
    pub limit_upload: Option<u64>,
    /// Limit downloads to this many KiB/s
    #[arg(long, env = "CAIRN_LIMIT_DOWNLOAD", global = true)]
    pub limit_download: Option<u64>,
    /// Parallel uploads (and, for restore, reads): default 2 for a local repository, 8
    /// for a remote one, where each request waits on the network
    #[arg(long, env = "CAIRN_CONNECTIONS", global = true, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub connections: Option<u16>,
    /// Cache directory for remote repositories' metadata (default ~/.cache/cairn/repos; "off" disables it)
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// The policy file (daemon, run, status, jobs, policy check)
    #[arg(long, env = "CAIRN_CONFIG", global = true, default_value = "/etc/cairn/cairn.toml")]
    pub config: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a repository
    Init(InitArgs),
    /// Back up files, stdin or a command's output
    Backup(BackupArgs),
    /// List snapshots
    Snapshots(SnapshotsArgs),
    /// List the files of a snapshot
    Ls(LsArgs),
    /// Find files by name across snapshots
    Find(FindArgs),
    /// Show what changed between two snapshots
    Diff(DiffArgs),
    /// Write a file of a snapshot to stdout
    Dump(DumpArgs),
    /// Browse every snapshot as a read-only filesystem (FUSE) until unmounted
    Mount(MountArgs),
    /// Sizes, deduplication and compression
    Stats(StatsArgs),
    /// Restore a snapshot
    Restore(RestoreArgs),
    /// Verify the repository
    Check(CheckArgs),
    /// Manage the repository's keys (passwords)
    Key(KeyArgs),
    /// Remove snapshots by keep-rules or by id (their data stays until prune)
    Forget(ForgetArgs),
    /// Write new snapshots without the excluded paths (erasure requests)
    Rewrite(RewriteArgs),
    /// Delete data no snapshot references; never blocks backups
    Prune(PruneArgs),
    /// PostgreSQL: base backups, WAL archiving and streaming, point-in-time restore
    Pg(PgArgs),
    /// Copy snapshots to another repository (only what it lacks travels)
    Copy(CopyArgs),
    /// Check a policy file and show what it resolves to
    Policy(PolicyArgs),
    /// Run the policy: scheduled backups, copies, retention and verification
    Daemon(DaemonArgs),
    /// Back up a policy source now (a manual job, recorded with its label and reason)
    Run(RunArgs),
    /// The jobs in the catalog, newest first
    Jobs(JobsArgs),
    /// Each source's newest recoverable point and data age against its RPO
    Status(StatusArgs),
    /// Restore a policy source into a sandbox, validate it, measure RTO and RPO, record
    /// it (`drill report` writes the evidence document)
    Drill(DrillArgs),
    /// The history of restore drills: date, scenario, recovery time, targets met
    Drills(DrillsArgs),
    /// Alert targets: send a test notification
    Alert(AlertArgs),
    /// The alert conditions active now and the recent deliveries
    Alerts(AlertsArgs),
    /// The audit log kept in the repository: list records, verify the chains
    Audit(AuditArgs),
    /// API tokens for the daemon's HTTP API and console (kept in the policy's catalog)
    Token(TokenArgs),
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(CompletionsArgs),
    /// Write man pages (cairn.1 and one per subcommand) into a directory
    Man(ManArgs),
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell, e.g. `source <(cairn completions bash)`
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Where to write them (e.g. /usr/local/share/man/man1)
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub action: TokenAction,
}

#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Create a token and print its secret (shown this once; only a hash is kept)
    Create {
        /// A name for it (audit records name the token by it)
        name: String,
        /// admin, operator, restore or auditor
        #[arg(long)]
        role: String,
        /// Refused after this long (e.g. 90d); default: never
        #[arg(long)]
        expires: Option<String>,
    },
    /// The tokens with their role, expiry and last use (never their secrets)
    List,
    /// Refuse a token from now on (its console sessions end too)
    Revoke { name: String },
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub action: AuditAction,
}

#[derive(Subcommand, Debug)]
pub enum AuditAction {
    /// List the records, oldest first
    Log {
        /// Records since this time (RFC 3339) or this long ago (e.g. 7d)
        #[arg(long)]
        since: Option<String>,
        /// Only records whose actor (user, token or host) is this
        #[arg(long)]
        actor: Option<String>,
        /// Only records of this action (backup, restore, forget, ...)
        #[arg(long)]
        action: Option<String>,
    },
    /// Check every chain for changed, missing, inserted, reordered or cut-off records
    Verify,
    /// Audit retention: remove the segments whose records all ended before a time
    Forget {
        /// Records that ended longer ago than this (e.g. 400d)
        #[arg(long, conflicts_with = "before", required_unless_present = "before")]
        older_than: Option<String>,
        /// Records that ended before this time (RFC 3339)
        #[arg(long)]
        before: Option<String>,
        /// Say what would be removed; remove nothing
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args, Debug)]
pub struct AlertArgs {
    #[command(subcommand)]
    pub action: AlertAction,
}

#[derive(Subcommand, Debug)]
pub enum AlertAction {
    /// Send a test notification to a target ([alert.NAME]) now; exit 1 if it fails
    Test { name: String },
}

#[derive(Args, Debug)]
pub struct AlertsArgs {
    /// Deliveries since this time (RFC 3339) or this long ago (default 1d)
    #[arg(long, default_value = "1d")]
    pub since: String,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DrillArgs {
    #[command(subcommand)]
    pub action: Option<DrillAction>,
    /// The source ([source.NAME] in the policy)
    #[arg(required = true)]
    pub source: Option<String>,
    /// Restore this snapshot (id prefix or `latest`) instead of the policy's pick
    #[arg(long, conflicts_with = "time")]
    pub snapshot: Option<String>,
    /// PostgreSQL: recover to this time (RFC 3339) instead of the end of the archived WAL
    #[arg(long)]
    pub time: Option<String>,
    /// Restore only from this copy repository; the primary is not read (site failure)
    #[arg(long, value_name = "REPOSITORY")]
    pub from: Option<String>,
    /// Leave the sandbox for inspection (nothing is left running)
    #[arg(long)]
    pub keep: bool,
}

#[derive(Subcommand, Debug)]
pub enum DrillAction {
    /// The evidence document for auditors: per source the drills, targets, results,
    /// failures and a chart of RTO over time
    Report(DrillReportArgs),
}

#[derive(Args, Debug)]
pub struct DrillReportArgs {
    /// Only drills started since this time (RFC 3339) or this long ago (`90d`)
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub source: Option<String>,
    #[arg(long, value_enum, default_value_t = ReportFormat::Md)]
    pub format: ReportFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    Md,
    Html,
}

#[derive(Args, Debug)]
pub struct DrillsArgs {
    #[arg(long)]
    pub source: Option<String>,
    /// Read the drill records sealed in this policy repository instead of the catalog
    /// (what an auditor with only the repository sees)
    #[arg(long, value_name = "NAME")]
    pub repository: Option<String>,
    /// Only drills started since this time (RFC 3339) or this long ago (`30d`)
    #[arg(long)]
    pub since: Option<String>,
}

#[derive(Args, Debug)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub action: PolicyAction,
}

#[derive(Subcommand, Debug)]
pub enum PolicyAction {
    /// Validate a policy; print each source's resolved settings (and where each came
    /// from) and the next runs of its schedules
    Check {
        /// The policy file (default: --config)
        file: Option<PathBuf>,
        /// Upcoming runs to show per schedule
        #[arg(long, default_value_t = 5)]
        next: usize,
    },
}

#[derive(Args, Debug)]
pub struct DaemonArgs {
    #[command(subcommand)]
    pub action: Option<DaemonAction>,
}

#[derive(Subcommand, Debug)]
pub enum DaemonAction {
    /// Make the running daemon re-read its policy (as SIGHUP does)
    Reload,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The source ([source.NAME] in the policy)
    pub source: String,
    /// A descriptive label for the snapshot's job
    #[arg(long)]
    pub label: Option<String>,
    /// Why it is taken (recorded in the catalog)
    #[arg(long)]
    pub reason: Option<String>,
    /// If a job of the source is running, wait for it to end instead of refusing
    #[arg(long)]
    pub wait: bool,
}

#[derive(Args, Debug)]
pub struct JobsArgs {
    #[arg(long)]
    pub source: Option<String>,
    /// Only jobs started since this time (RFC 3339) or this long ago (`2h`, `7d`)
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many jobs
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Only this source
    pub source: Option<String>,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Chunk and name blobs exactly like this other repository, so copies between the two
    /// deduplicate (its password: --from-password-file or CAIRN_FROM_PASSWORD)
    #[arg(long, value_name = "REPO")]
    pub copy_chunker_params_from: Option<String>,
    #[arg(long, env = "CAIRN_FROM_PASSWORD_FILE")]
    pub from_password_file: Option<PathBuf>,
    /// Chunk size limits MIN,AVG,MAX (e.g. 64K,256K,1M; default 256K,1M,4M): smaller
    /// chunks find more duplicates inside large files that change in place (VM images,
    /// database files) at the cost of more index memory per byte (about 100 bytes per chunk)
    #[arg(long, value_name = "MIN,AVG,MAX", conflicts_with = "copy_chunker_params_from")]
    pub chunk_size: Option<String>,
    /// Target size of pack files (64K to 1G; default 8M): larger packs mean fewer objects
    /// on object stores, smaller ones less repacking
    #[arg(long, value_name = "SIZE")]
    pub pack_size: Option<String>,
    /// Objects stay undeletable for this many days after they are written: cairn itself
    /// never deletes a younger one (pair it with S3 Object Lock default retention on the
    /// bucket, see the README)
    #[arg(long, value_name = "DAYS")]
    pub object_lock_days: Option<u32>,
    /// S3 Object Lock mode of the retention cairn sets on every object of an s3://
    /// repository (with --object-lock-days)
    #[arg(long, value_name = "MODE", default_value = "compliance", value_parser = ["compliance", "governance"])]
    pub object_lock_mode: String,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and directories to back up
    pub paths: Vec<PathBuf>,
    /// A live SQLite database, copied consistently through SQLite's online backup API
    #[arg(long, value_name = "DB_FILE")]
    pub sqlite: Option<PathBuf>,
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Host name to record (default: this machine's)
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long)]
    pub label: Option<String>,
    /// Exclude paths matching this gitignore-style pattern
    #[arg(long = "exclude")]
    pub excludes: Vec<String>,
    /// Read exclude patterns from a file, one per line
    #[arg(long = "exclude-file")]
    pub exclude_files: Vec<PathBuf>,
    /// Do not cross filesystem boundaries
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Keep access times (default: a node's atime is its mtime, so that reading files
    /// and listing directories does not make the next backup write every tree again)
    #[arg(long)]
    pub atime: bool,
    /// Snapshot to compare against (default: latest with the same host and paths)
    #[arg(long)]
    pub parent: Option<String>,
    /// Compression of new data: auto (the repository's level, 3 unless set at init),
    /// fast (zstd 1), max (zstd 9), off, or a zstd level 1-19
    #[arg(long, default_value = "auto", value_parser = cairn_policy::file::Compression::parse)]
    pub compression: cairn_policy::file::Compression,
    /// Read every file, even unchanged ones
    #[arg(long)]
    pub force: bool,
    /// Snapshot time (RFC 3339), for imports and tests
    #[arg(long)]
    pub time: Option<String>,
    /// Do everything but write to the repository
    #[arg(long)]
    pub dry_run: bool,
    /// Back up standard input as the file --stdin-name
    #[arg(long)]
    pub stdin: bool,
    /// Back up this shell command's standard output as the file --stdin-name
    #[arg(long)]
    pub command: Option<String>,
    #[arg(long, default_value = "stdin")]
    pub stdin_name: String,
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    #[arg(long = "path")]
    pub paths: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    pub snapshot: String,
    pub path: Option<String>,
    #[arg(long, short = 'l')]
    pub long: bool,
}

#[derive(Args, Debug)]
pub struct FindArgs {
    /// Glob on file names (or on whole paths when it contains a '/')
    pub pattern: String,
    #[arg(long)]
    pub host: Option<String>,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    pub snapshot1: String,
    pub snapshot2: String,
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    pub snapshot: String,
    /// Path of the file in the snapshot (optional for a stdin snapshot)
    pub path: Option<String>,
}

#[derive(Args, Debug)]
pub struct MountArgs {
    /// An existing empty directory; unmount with Ctrl-C, SIGTERM or `fusermount3 -u`
    pub mountpoint: PathBuf,
    /// Mount only this snapshot's tree (an id or prefix, or `latest`)
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Let other users in (FUSE's allow_other; as a user other than root, /etc/fuse.conf
    /// must allow it)
    #[arg(long)]
    pub allow_other: bool,
    /// How often (seconds) the snapshot list is read again for new snapshots
    #[arg(long, default_value_t = 5)]
    pub refresh: u64,
}

#[derive(Args, Debug)]
pub struct StatsArgs {}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OverwriteArg {
    Always,
    IfChanged,
    Never,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// SNAPSHOT or SNAPSHOT:SUBPATH
    pub snapshot: String,
    #[arg(long, short = 't')]
    pub target: PathBuf,
    #[arg(long = "include")]
    pub includes: Vec<String>,
    #[arg(long = "exclude")]
    pub excludes: Vec<String>,
    #[arg(long, value_enum, default_value = "always")]
    pub overwrite: OverwriteArg,
    /// Re-read what was written and check it against the snapshot
    #[arg(long)]
    pub verify: bool,
    /// Also restore device nodes, setuid/setgid bits and file capabilities (the default
    /// only for a restore to /; otherwise they are left out with a warning)
    #[arg(long)]
    pub privileged: bool,
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Read and authenticate every blob of every pack
    #[arg(long)]
    pub read_data: bool,
    /// Read a subset: N% (random) or K/M (the K-th of M parts)
    #[arg(long)]
    pub read_data_subset: Option<String>,
}

#[derive(Args, Debug)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub action: KeyAction,
}

#[derive(Subcommand, Debug)]
pub enum KeyAction {
    /// List keys
    List,
    /// Add a key (new password from --new-password-file, CAIRN_NEW_PASSWORD or a prompt)
    Add(NewPassword),
    /// Remove a key by id (prefix)
    Remove { id: String },
    /// Change the password of the key in use
    Passwd(NewPassword),
}

#[derive(Args, Debug)]
pub struct NewPassword {
    #[arg(long, env = "CAIRN_NEW_PASSWORD_FILE")]
    pub new_password_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to forget explicitly (instead of, or besides, the rules)
    pub snapshots: Vec<String>,
    #[arg(long)]
    pub keep_last: Option<i64>,
    #[arg(long)]
    pub keep_hourly: Option<i64>,
    #[arg(long)]
    pub keep_daily: Option<i64>,
    #[arg(long)]
    pub keep_weekly: Option<i64>,
    #[arg(long)]
    pub keep_monthly: Option<i64>,
    #[arg(long)]
    pub keep_yearly: Option<i64>,
    /// Keep everything newer than the newest snapshot minus this (e.g. 2y5m7d3h)
    #[arg(long)]
    pub keep_within: Option<String>,
    #[arg(long)]
    pub keep_within_hourly: Option<String>,
    #[arg(long)]
    pub keep_within_daily: Option<String>,
    #[arg(long)]
    pub keep_within_weekly: Option<String>,
    #[arg(long)]
    pub keep_within_monthly: Option<String>,
    #[arg(long)]
    pub keep_within_yearly: Option<String>,
    /// Keep snapshots carrying every tag of this comma-separated list (repeatable)
    #[arg(long = "keep-tag")]
    pub keep_tags: Vec<String>,
    /// Group snapshots by these fields before applying the rules
    #[arg(long, default_value = "host,paths")]
    pub group_by: String,
    /// Only consider snapshots of this host
    #[arg(long)]
    pub host: Option<String>,
    /// Only consider snapshots with this tag
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Show what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Prune afterwards (with the prune options below)
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_opts: PruneOpts,
}

#[derive(Args, Debug)]
pub struct RewriteArgs {
    /// Snapshots to rewrite (`latest`, ids or prefixes)
    #[arg(required = true)]
    pub snapshots: Vec<String>,
    /// gitignore-style pattern of paths to remove (as backed up, e.g. /home/a/secret.txt)
    #[arg(long = "exclude")]
    pub excludes: Vec<String>,
    #[arg(long = "exclude-file")]
    pub exclude_files: Vec<std::path::PathBuf>,
    /// Forget each original once its rewritten snapshot is saved
    #[arg(long)]
    pub forget: bool,
    /// Show what would be removed, change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Show what would be deleted and repacked, change nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub opts: PruneOpts,
}

#[derive(Args, Debug, Clone)]
pub struct PruneOpts {
    /// Unused space tolerated in kept packs, as a percentage of the used space; packs with
    /// the most unused space are repacked until the rest fits ("0" repacks every pack with
    /// an unused blob)
    #[arg(long, default_value = "5%", value_name = "PERCENT")]
    pub max_unused: String,
    /// Repack at most this much per run (e.g. 500M, 10G)
    #[arg(long, value_name = "SIZE")]
    pub max_repack_size: Option<String>,
    /// Delete now instead of after the grace period; refused while another cairn process
    /// writes to the repository (for erasure requests and disposals)
    #[arg(long)]
    pub delete_now: bool,
    /// How long marked packs wait before a later prune deletes them (s, m = minutes, h, d)
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub grace: String,
}

#[derive(Args, Debug)]
pub struct PgArgs {
    #[command(subcommand)]
    pub action: PgAction,
}

#[derive(Subcommand, Debug)]
pub enum PgAction {
    /// Take a base backup of a running cluster (deduplicated against the previous one)
    Backup(PgBackupArgs),
    /// For archive_command: store one WAL file ('cairn pg archive-push %p')
    ArchivePush {
        /// The file, as PostgreSQL passes it (relative to the data directory)
        path: PathBuf,
    },
    /// For restore_command: fetch one WAL file ('cairn pg archive-get %f %p'); exits 1 when
    /// the repository does not have it
    ArchiveGet {
        /// The WAL file name PostgreSQL asks for
        name: String,
        /// Where to write it
        path: PathBuf,
    },
    /// Fetch the segments after the one recovery last asked for into SPOOL (started by
    /// archive-get; ends when recovery stops asking)
    #[command(hide = true)]
    ArchivePrefetch { spool: PathBuf },
    /// Stream WAL continuously through pg_receivewal (long-running): an RPO of seconds
    WalStream(PgStreamArgs),
    /// Restore a base backup and set up recovery to a target; start PostgreSQL on the
    /// directory to replay and promote
    Restore(PgRestoreArgs),
    /// WAL timelines, ranges and gaps, and the window each base backup can recover to
    WalList,
    /// Check that every base backup has the WAL it needs; with --connection, also that
    /// archiving from the server reaches the repository
    Check(PgCheckArgs),
}

#[derive(Args, Debug)]
pub struct PgBackupArgs {
    /// The cluster's data directory
    #[arg(long)]
    pub data_dir: PathBuf,
    /// libpq connection string or URI (default: libpq's defaults and PG* variables)
    #[arg(long, env = "CAIRN_PG_CONNECTION", default_value = "")]
    pub connection: String,
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Let the starting checkpoint spread out instead of forcing it now
    #[arg(long)]
    pub spread_checkpoint: bool,
    /// Seconds to wait for the WAL the backup needs to reach the repository
    #[arg(long, default_value_t = 300)]
    pub wal_timeout: u64,
    /// Compression of new data: auto (the repository's level), fast, max, off, or 1-19
    #[arg(long, default_value = "auto", value_parser = cairn_policy::file::Compression::parse)]
    pub compression: cairn_policy::file::Compression,
}

#[derive(Args, Debug)]
pub struct PgStreamArgs {
    /// libpq connection string with replication rights
    #[arg(long, env = "CAIRN_PG_CONNECTION", default_value = "")]
    pub connection: String,
    /// Local spool directory for pg_receivewal (default: under the user's cache directory)
    #[arg(long)]
    pub spool: Option<PathBuf>,
    /// Replication slot (created if missing)
    #[arg(long, default_value = "cairn")]
    pub slot: String,
    /// Milliseconds between looks at the spool
    #[arg(long, default_value_t = 500)]
    pub poll_ms: u64,
}

#[derive(Args, Debug)]
pub struct PgRestoreArgs {
    /// An empty or new directory to restore the cluster into
    #[arg(long)]
    pub target_dir: PathBuf,
    /// Recover to this time (with its UTC offset), inclusive
    #[arg(long)]
    pub time: Option<String>,
    /// Recover to this WAL position
    #[arg(long)]
    pub lsn: Option<String>,
    /// Recover to this transaction id
    #[arg(long)]
    pub xid: Option<String>,
    /// Recover to this restore point (pg_create_restore_point)
    #[arg(long)]
    pub name: Option<String>,
    /// Replay all WAL in the repository (the default)
    #[arg(long)]
    pub latest: bool,
    /// Use this base backup instead of the newest that fits the target
    #[arg(long)]
    pub snapshot: Option<String>,
}

#[derive(Args, Debug)]
pub struct PgCheckArgs {
    /// Also switch WAL on this server and wait until the segment is in the repository
    #[arg(long)]
    pub connection: Option<String>,
    /// Seconds to wait for the switched segment
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// The destination repository: a directory or a URL (s3://, az://, gs://, sftp://)
    #[arg(long)]
    pub to: String,
    /// The destination's password file (or CAIRN_TO_PASSWORD)
    #[arg(long, env = "CAIRN_TO_PASSWORD_FILE")]
    pub to_password_file: Option<PathBuf>,
    /// Snapshots to copy (default: all that the destination lacks)
    pub snapshots: Vec<String>,
    /// Only snapshots of this host
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots with this tag
    #[arg(long = "tag")]
    pub tags: Vec<String>,
}
