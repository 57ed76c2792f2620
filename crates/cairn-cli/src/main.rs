//! `cairn`: one binary for every role and every command.

mod bench;
mod bench_locks;
mod bench_prefetch;
mod bench_s3;
mod bench_schemes;
mod commands;
mod config;
mod convert;
mod dashboard;
mod fleet;
mod lock;
mod meta_tools;
mod mount;
mod progress;
mod roles;
mod settings;
mod simulate;
mod sync;
mod tier;
mod transfer;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: a distributed file system for fleets of machines"
)]
struct Cli {
    /// Log lines as text, or as one JSON object per line (time, level,
    /// target, message and fields) for log shippers
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "CAIRN_LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// TLS on every connection between Cairn processes (`off`: plain TCP,
    /// for a trusted network only; every process of the cluster and every
    /// client must agree)
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "on",
        env = "CAIRN_TLS"
    )]
    tls: Tls,
    /// No progress bars or progress lines on stderr (summaries and errors
    /// stay); commands given --json show none either
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Settings for every role (a section each) and client [env:
    /// CAIRN_CONFIG; default: /etc/cairn/cairn.toml if it exists]; flags
    /// and CAIRN_<FLAG> variables win over it
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Tls {
    On,
    Off,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Where a client command finds the cluster.
#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// Meta address(es), comma-separated [env: CAIRN_META; default: the local `cairn server`]
    #[arg(long, global = true)]
    meta: Option<String>,
    /// File with the client key, an identity's credentials (`cairn key create --native`) or the cluster secret [env: CAIRN_SECRET_FILE]
    #[arg(long, global = true)]
    secret_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run meta and storage nodes in one process on one data directory
    #[command(
        after_help = "Examples:\n  cairn server\n  cairn server --nodes 3 --data /srv/cairn\n  cairn --config /etc/cairn/cairn.toml server"
    )]
    Server(roles::ServerArgs),
    /// Run the meta service alone
    #[command(
        after_help = "Examples:\n  cairn meta --data /var/lib/cairn/meta --listen 0.0.0.0:7420 --metrics-listen 0.0.0.0:7490\n  cairn meta --store etcd://10.0.0.1:2379,10.0.0.2:2379/cairn"
    )]
    Meta(roles::MetaArgs),
    /// Run a storage node alone
    #[command(
        after_help = "Examples:\n  cairn storage --meta meta1:7420 --secret-file /etc/cairn/cluster.secret --zone rack1 --data /srv/cairn"
    )]
    Storage(roles::StorageArgs),
    /// Copy a local file (or - for stdin) into Cairn
    #[command(
        after_help = "Examples:\n  cairn put ./run1.bin /fleet/car42/run1.bin\n  cairn put -r ./drive-logs /fleet/car42/logs\n  tar c logs | cairn put - /fleet/car42/logs.tar\n  cairn put --cue rep=2,place=local ./ckpt.pt /ckpt/step-100.pt"
    )]
    Put {
        local: String,
        path: String,
        /// Copy a local directory tree (files in parallel; symlinks, modes
        /// and mtimes kept)
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Parallel file transfers with -r [default: 4 per core, 4 to 32]
        #[arg(short = 'j', long)]
        jobs: Option<usize>,
        /// Fail if the destination's parent directory is missing, instead
        /// of making it (and its parents)
        #[arg(long)]
        no_parents: bool,
        /// Copies per chunk (default: the cluster's)
        #[arg(long)]
        rep: Option<u8>,
        /// Chunk size, e.g. 32MiB (default: the cluster's)
        #[arg(long)]
        chunk_size: Option<String>,
        /// Cues for this write, e.g. rep=2,place=buddy (also possible inside
        /// the path: /data/.cue/rep=2/file)
        #[arg(long)]
        cue: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Copy a Cairn file to a local file (or - for stdout)
    #[command(
        after_help = "Examples:\n  cairn get /datasets/train.tar ./train.tar\n  cairn get -r /fleet/car42/logs ./logs\n  cairn get --version 3 /config/model.yaml ./old.yaml"
    )]
    Get {
        path: String,
        local: String,
        /// Copy a Cairn directory tree into a local directory
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Parallel file transfers with -r [default: 4 per core, 4 to 32]
        #[arg(short = 'j', long)]
        jobs: Option<usize>,
        /// Read this version of the file (see `cairn versions`) instead of
        /// the current one
        #[arg(long, conflicts_with = "recursive")]
        version: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Write a Cairn file to stdout
    #[command(
        after_help = "Examples:\n  cairn cat /config/model.yaml\n  cairn cat --version 2 /config/model.yaml | diff - model.yaml"
    )]
    Cat {
        path: String,
        /// Read this version of the file (see `cairn versions`)
        #[arg(long)]
        version: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Bytes and files under each path: logical (one copy), stored on the
    /// nodes (every copy or shard), files; `-d N` also shows each directory
    /// up to N levels below. Current versions only; a file with several
    /// names counts once
    #[command(after_help = "Examples:\n  cairn du /fleet\n  cairn du -d 1 --json /datasets")]
    Du {
        #[arg(required = true)]
        paths: Vec<String>,
        /// Also show directories this many levels below
        #[arg(short = 'd', long, default_value_t = 0)]
        depth: usize,
        /// One JSON object per line: path, files, dirs, logical_bytes,
        /// stored_bytes, inline_bytes
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List the versions of a file that can be read: the current one and
    /// the older ones its `versions=N` cue keeps (`cairn cue set DIR
    /// versions=10`; without the cue a replaced version is collected)
    #[command(after_help = "Examples:\n  cairn versions /config/model.yaml")]
    Versions {
        path: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List a directory
    #[command(
        after_help = "Examples:\n  cairn ls -l /fleet/car42\n  cairn ls -R /datasets\n  cairn ls --json /"
    )]
    Ls {
        #[arg(default_value = "/")]
        path: String,
        /// Long format: type, size, version, modification time
        #[arg(short = 'l')]
        long: bool,
        /// Every directory below too, each under a `PATH:` heading (with
        /// --json: one array of every entry, with full paths)
        #[arg(short = 'R', long)]
        recursive: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Show a file's or directory's attributes
    #[command(
        after_help = "Examples:\n  cairn stat /datasets/train.tar\n  cairn stat --json /datasets"
    )]
    Stat {
        path: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Make a directory
    #[command(after_help = "Examples:\n  cairn mkdir -p /fleet/car42/2026-12-07")]
    Mkdir {
        path: String,
        /// Make parents as needed; no error if it exists
        #[arg(short = 'p')]
        parents: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a file or an empty directory
    #[command(
        after_help = "Examples:\n  cairn rm /tmp/old.bin\n  cairn rm -r /fleet/car42/2026-01"
    )]
    Rm {
        path: String,
        /// Remove a directory and everything below it
        #[arg(short = 'r')]
        recursive: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Rename atomically (replaces an existing file)
    #[command(after_help = "Examples:\n  cairn mv /incoming/run1.bin /fleet/car42/")]
    Mv {
        src: String,
        dst: String,
        #[command(flatten)]
        target: Target,
    },
    /// Copy a file (or with -r a tree) inside Cairn, as a new file sharing
    /// nothing with its source: cairn cp /datasets/v1 /datasets/v2 -r
    #[command(
        after_help = "Examples:\n  cairn cp /config/model.yaml /config/model-v2.yaml\n  cairn cp -r /datasets/v1 /datasets/v2"
    )]
    Cp {
        src: String,
        dst: String,
        /// Copy a directory tree
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Parallel file copies with -r [default: 4 per core, 4 to 32]
        #[arg(short = 'j', long)]
        jobs: Option<usize>,
        #[command(flatten)]
        target: Target,
    },
    /// Give a file another name (a hard link): both name one file
    #[command(after_help = "Examples:\n  cairn ln /datasets/train.tar /experiments/e1/train.tar")]
    Ln {
        src: String,
        dst: String,
        #[command(flatten)]
        target: Target,
    },
    /// Show each chunk of a file: id, size, checksum, nodes holding it;
    /// with --by-host, how many bytes of the files (or trees) each host holds
    #[command(
        after_help = "Examples:\n  cairn locate /datasets/train.tar\n  cairn locate --by-host /datasets"
    )]
    Locate {
        #[arg(required = true)]
        paths: Vec<String>,
        /// Bytes per host, durable and cached, for schedulers
        #[arg(long)]
        by_host: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Give every node of a group a cache copy of files (or trees), ahead of reads
    #[command(
        after_help = "Examples:\n  cairn prefetch --group gpu /datasets/train\n  cairn prefetch status"
    )]
    Prefetch(PrefetchArgs),
    /// Make DST a copy of SRC, copying only what differs (a local
    /// directory and cairn:/path, either way, or two Cairn directories)
    #[command(
        after_help = "Examples:\n  cairn sync ./drive-logs cairn:/fleet/car42/logs\n  cairn sync --delete cairn:/datasets/v2 /scratch/v2\n  cairn sync -n -c ./ckpt cairn:/ckpt"
    )]
    Sync(sync::SyncArgs),
    /// Run a command holding an advisory lock on a file (the same locks as
    /// flock/fcntl on every mount): cairn lock /jobs/q.lock -- ./step.sh
    #[command(after_help = "Examples:\n  cairn lock /jobs/queue.lock -- ./take-next-job.sh")]
    Lock(lock::LockArgs),
    /// Rewrite files in the redundancy their directory asks for now
    /// (after `cue set DIR ec=4+2`, say), each as a new version
    #[command(
        after_help = "Examples:\n  cairn convert -r /archive\n  cairn convert --dry-run -r /archive"
    )]
    Convert(convert::ConvertArgs),
    /// The remote tier: bytes per tier, recall offloaded files, verify a store
    #[command(after_help = "Examples:\n  cairn tier status\n  cairn tier recall /archive/2025")]
    Tier {
        #[command(subcommand)]
        cmd: tier::TierCmd,
    },
    /// Semantic cues of a path: redundancy, placement, consistency (inherited by everything below a directory)
    #[command(
        after_help = "Examples:\n  cairn cue set /fleet rep=3,place=local\n  cairn cue get /fleet/car42\n  cairn cue clear /fleet"
    )]
    Cue {
        #[command(subcommand)]
        cmd: CueCmd,
    },
    /// Cluster operations
    #[command(
        after_help = "Examples:\n  cairn cluster status\n  cairn cluster drain NODE_ID --wait"
    )]
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Mount the namespace as a POSIX file system (FUSE); runs until unmounted or Ctrl-C
    #[command(
        after_help = "Examples:\n  cairn mount /mnt/cairn\n  cairn mount /mnt/cairn --writeback --metrics-listen 127.0.0.1:7493"
    )]
    Mount(mount::MountArgs),
    /// Measure throughput against a cluster (a temporary local one by default); prints JSON
    #[command(
        after_help = "Examples:\n  cairn bench\n  cairn bench --meta meta1:7420 --secret-file client.key"
    )]
    Bench(bench::BenchArgs),
    /// Compare placement schemes on a simulated cluster: data loss under node
    /// failures, load balance, repair parallelism (JSON and SVG)
    #[command(
        after_help = "Examples:\n  cairn simulate --nodes 10000 --zones 10 --chunks 1000000 --rep 3\n  cairn simulate --ec 4+2,8+3 --json > sim.json"
    )]
    Simulate(simulate::SimulateArgs),
    /// Config files: `cairn config check [FILE]` reads one as every role
    /// would and prints the settings it gives
    #[command(after_help = "Examples:\n  cairn config check /etc/cairn/cairn.toml")]
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Run a front-end gateway alone against a cluster
    #[command(
        after_help = "Examples:\n  cairn gateway s3 --listen 0.0.0.0:7480 --meta meta1:7420 --secret-file /etc/cairn/client.key"
    )]
    Gateway {
        #[command(subcommand)]
        cmd: GatewayCmd,
    },
    /// Client identities (native clients) and S3 access keys
    #[command(
        after_help = "Examples:\n  cairn key create car42 --native --prefix /fleet/car42 --out car42.key\n  cairn key create backup --bucket backups\n  cairn key list\n  cairn key revoke car42"
    )]
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct PrefetchArgs {
    #[command(subcommand)]
    cmd: Option<PrefetchCmd>,
    /// Files or directories (recursively)
    #[arg(required = true)]
    paths: Vec<String>,
    /// The node group to fill
    #[arg(long, required = true)]
    group: Option<String>,
    /// Return once the job is started
    #[arg(long)]
    no_wait: bool,
    /// Drop the group's cache copies of these files instead
    #[arg(long)]
    evict: bool,
    /// Per-job results as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(Subcommand)]
enum PrefetchCmd {
    /// Prefetch jobs and their progress
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum GroupCmd {
    /// Put a node in a group
    Add {
        node: String,
        group: String,
        #[command(flatten)]
        target: Target,
    },
    /// Take a node out of a group
    Rm {
        node: String,
        group: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum CueCmd {
    /// Show a path's own, inherited and effective cues
    Get {
        path: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Set cues on a path, over those it has: e.g. rep=2,place=buddy,lax
    Set {
        path: String,
        cues: String,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a path's own cues (it inherits again)
    Clear {
        path: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Check a config file (unknown sections, keys and values are errors
    /// naming their line) and print each role's settings with where each
    /// comes from: cairn config check /etc/cairn/cairn.toml
    Check {
        /// The file [default: --config, CAIRN_CONFIG or /etc/cairn/cairn.toml]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum GatewayCmd {
    /// The S3-compatible HTTP API
    S3(roles::GatewayArgs),
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Make an S3 access key (prints the access key and secret), or with
    /// `--native` a client identity (prints its credential file)
    ///
    /// Example: cairn key create car42 --native --prefix /fleet/car42 --read-prefix /datasets --out car42.key
    Create {
        /// A name to recognise the key by
        name: String,
        /// A client identity for native clients (CLI, mount, Python),
        /// limited to `--prefix`/`--read-prefix` unless `--admin`
        #[arg(long)]
        native: bool,
        /// (--native) May read and change this path and all below it; repeatable
        #[arg(long, value_name = "PATH")]
        prefix: Vec<String>,
        /// (--native) May read this path and all below it; repeatable
        #[arg(long, value_name = "PATH")]
        read_prefix: Vec<String>,
        /// (--native) Every right: every path, drain, groups, keys, cues on /
        #[arg(long)]
        admin: bool,
        /// (--native) Write the credential file here (mode 0600) instead of stdout
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
        /// Only reads (S3: Get, Head, List; --native: every prefix read-only)
        #[arg(long)]
        read_only: bool,
        /// (S3) Only this bucket
        #[arg(long)]
        bucket: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Every client identity and S3 key, with its rights
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Remove the identity or S3 key NAME (an S3 key also by its access
    /// key); its clients are refused within seconds on every meta
    Revoke {
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Nodes, liveness, capacity, chunks short of redundancy
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Move every chunk off a storage node so it can be stopped
    Drain {
        /// Node id (as `cairn cluster status` shows it)
        node: String,
        /// Wait until the node holds nothing any file needs
        #[arg(long)]
        wait: bool,
        /// Stop draining; the node takes new chunks again
        #[arg(long)]
        undo: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Change a node's groups
    Group {
        #[command(subcommand)]
        cmd: GroupCmd,
    },
    /// Every node group with its nodes
    Groups {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

fn init_logging(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a terminal (journald and log files get plain text).
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

fn main() {
    let cli = parse_with_settings();
    let is_role = matches!(
        cli.cmd,
        Cmd::Server(_) | Cmd::Meta(_) | Cmd::Storage(_) | Cmd::Gateway { .. }
    );
    // A benchmark's failure experiments fail reads on purpose: only errors.
    let is_bench = matches!(cli.cmd, Cmd::Bench(_));
    init_logging(
        if is_role {
            "info"
        } else if is_bench {
            "error"
        } else {
            "warn"
        },
        cli.log_format,
    );
    progress::set_quiet(cli.quiet);
    if cli.tls == Tls::Off {
        cairn_proto::tls::set_enabled(false);
        if is_role {
            tracing::warn!(
                "TLS is off (--tls off): requests, file bytes and capabilities cross the network in clear"
            );
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(run(cli.cmd));
    if let Err(e) = result {
        eprintln!("cairn: error: {e:#}");
        std::process::exit(1);
    }
}

/// The command line, parsed with the config file's settings and
/// `CAIRN_*` variables added where it gives none (see [`settings`]); a
/// broken file, or a bad value it or a variable gave, ends the process
/// with an error naming the setting.
fn parse_with_settings() -> Cli {
    use clap::CommandFactory;
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = Cli::command();
    let env = |k: &str| std::env::var(k).ok();
    let fail = |msg: String| -> ! {
        eprintln!("error: {msg}");
        std::process::exit(2)
    };
    let rest = &args[1.min(args.len())..];
    if settings::invoked(&cli, rest).first().map(String::as_str) == Some("config") {
        return Cli::parse_from(args);
    }
    let file = match settings::file_named(&args, &env) {
        Some(path) => match settings::File::load(&path, &cli) {
            Ok(f) => Some(f),
            Err(e) => fail(format!("{e:#}")),
        },
        None => None,
    };
    let (args, sources) = match settings::expand(&cli, args, file.as_ref(), &env) {
        Ok(x) => x,
        Err(e) => fail(format!("{e:#}")),
    };
    match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) if sources.is_empty() || !e.use_stderr() => e.exit(),
        Err(e) => {
            let path = file.as_ref().map(|f| f.path.clone()).unwrap_or_default();
            let said = settings::blame(&e, &path, &sources);
            if said == settings::blame(&e, &path, &[]) {
                e.exit()
            }
            fail(said)
        }
    }
}

async fn run(cmd: Cmd) -> anyhow::Result<()> {
    use commands as c;
    match cmd {
        Cmd::Server(a) => roles::server(a).await,
        Cmd::Meta(a) => roles::meta(a).await,
        Cmd::Storage(a) => roles::storage(a).await,
        Cmd::Put {
            local,
            path,
            recursive,
            jobs,
            no_parents,
            rep,
            chunk_size,
            cue,
            target,
        } => {
            let how = c::PutHow {
                recursive,
                jobs: jobs.unwrap_or_else(transfer::default_jobs),
                parents: !no_parents,
            };
            c::put(&target, &local, &path, rep, chunk_size, cue, how).await
        }
        Cmd::Get {
            path,
            local,
            recursive: true,
            jobs,
            target,
            ..
        } => {
            c::get_tree(
                &target,
                &path,
                &local,
                jobs.unwrap_or_else(transfer::default_jobs),
            )
            .await
        }
        Cmd::Get {
            path,
            local,
            version,
            target,
            ..
        } => c::get(&target, &path, &local, version).await,
        Cmd::Cat {
            path,
            version,
            target,
        } => c::get(&target, &path, "-", version).await,
        Cmd::Versions { path, json, target } => c::versions(&target, &path, json).await,
        Cmd::Du {
            paths,
            depth,
            json,
            target,
        } => c::du(&target, &paths, depth, json).await,
        Cmd::Ls {
            path,
            long,
            recursive: true,
            json,
            target,
        } => c::ls_recursive(&target, &path, long, json).await,
        Cmd::Ls {
            path,
            long,
            json,
            target,
            ..
        } => c::ls(&target, &path, long, json).await,
        Cmd::Stat { path, json, target } => c::stat(&target, &path, json).await,
        Cmd::Mkdir {
            path,
            parents,
            target,
        } => c::mkdir(&target, &path, parents).await,
        Cmd::Rm {
            path,
            recursive,
            target,
        } => c::rm(&target, &path, recursive).await,
        Cmd::Mv { src, dst, target } => c::mv(&target, &src, &dst).await,
        Cmd::Ln { src, dst, target } => c::ln(&target, &src, &dst).await,
        Cmd::Locate {
            paths,
            by_host,
            json,
            target,
        } => {
            if by_host {
                fleet::locate_by_host(&target, &paths, json).await
            } else if paths.len() == 1 {
                c::locate(&target, &paths[0], json).await
            } else {
                anyhow::bail!("locate shows one file's chunks; add --by-host for several paths")
            }
        }
        Cmd::Prefetch(a) => match a.cmd {
            Some(PrefetchCmd::Status { json, target }) => {
                fleet::prefetch_status(&target, json).await
            }
            None => {
                let opts = fleet::PrefetchOpts {
                    group: a.group.unwrap_or_default(),
                    no_wait: a.no_wait,
                    json: a.json,
                    evict: a.evict,
                };
                fleet::prefetch(&a.target, &a.paths, opts).await
            }
        },
        Cmd::Cluster {
            cmd:
                ClusterCmd::Group {
                    cmd:
                        GroupCmd::Add {
                            node,
                            group,
                            target,
                        },
                },
        } => fleet::group_set(&target, &node, &group, true).await,
        Cmd::Cluster {
            cmd:
                ClusterCmd::Group {
                    cmd:
                        GroupCmd::Rm {
                            node,
                            group,
                            target,
                        },
                },
        } => fleet::group_set(&target, &node, &group, false).await,
        Cmd::Cluster {
            cmd: ClusterCmd::Groups { json, target },
        } => fleet::groups(&target, json).await,
        Cmd::Cue {
            cmd: CueCmd::Get { path, json, target },
        } => c::cue_get(&target, &path, json).await,
        Cmd::Cue {
            cmd: CueCmd::Set { path, cues, target },
        } => c::cue_set(&target, &path, Some(&cues)).await,
        Cmd::Cue {
            cmd: CueCmd::Clear { path, target },
        } => c::cue_set(&target, &path, None).await,
        Cmd::Cluster {
            cmd: ClusterCmd::Status { json, target },
        } => c::cluster_status(&target, json).await,
        Cmd::Cluster {
            cmd:
                ClusterCmd::Drain {
                    node,
                    wait,
                    undo,
                    target,
                },
        } => c::drain(&target, &node, wait, undo).await,
        Cmd::Tier { cmd } => tier::run(cmd).await,
        Cmd::Mount(a) => mount::run(a).await,
        Cmd::Cp {
            src,
            dst,
            recursive,
            jobs,
            target,
        } => sync::cp(target, &src, &dst, recursive, jobs).await,
        Cmd::Sync(a) => sync::run(a).await,
        Cmd::Convert(a) => convert::run(a).await,
        Cmd::Lock(a) => {
            let code = lock::run(a).await?;
            std::process::exit(code);
        }
        Cmd::Bench(a) => bench::run(a).await,
        Cmd::Simulate(a) => tokio::task::spawn_blocking(move || simulate::run(a)).await?,
        Cmd::Config {
            cmd: ConfigCmd::Check { file },
        } => {
            use clap::CommandFactory;
            settings::check(&Cli::command(), file)
        }
        Cmd::Gateway {
            cmd: GatewayCmd::S3(a),
        } => roles::gateway_s3(a).await,
        Cmd::Key { cmd } => match cmd {
            KeyCmd::Create {
                name,
                native,
                prefix,
                read_prefix,
                admin,
                out,
                read_only,
                bucket,
                json,
                target,
            } => {
                if native {
                    if bucket.is_some() {
                        anyhow::bail!("--bucket is for S3 keys; identities take --prefix");
                    }
                    let rights = c::native_rights(&prefix, &read_prefix, read_only, admin)?;
                    c::identity_create(&target, &name, rights, out.as_deref(), json).await
                } else {
                    if admin || out.is_some() || !prefix.is_empty() || !read_prefix.is_empty() {
                        anyhow::bail!(
                            "--prefix, --read-prefix, --admin and --out make client identities: add --native"
                        );
                    }
                    c::key_create(&target, &name, read_only, bucket, json).await
                }
            }
            KeyCmd::List { json, target } => c::key_list(&target, json).await,
            KeyCmd::Revoke { name, target } => c::key_revoke(&target, &name).await,
        },
    }
}
