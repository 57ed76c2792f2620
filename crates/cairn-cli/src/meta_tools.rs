//! `cairn meta export | import | bench`: tools that work on a metadata store
//! directly, with no meta server running over it.

use anyhow::{bail, Context, Result};
use cairn_meta::store_spec::EMBEDDED_FILE;
use cairn_meta::{dump, MetaStore, Namespace, StoreSpec, Txn};
use cairn_types::{CairnPath, Version};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

#[derive(clap::Subcommand)]
pub enum MetaCmd {
    /// Write every metadata key to stdout as a versioned dump (stop meta first)
    Export {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Load a dump from stdin into an empty store
    Import {
        #[command(flatten)]
        store: StoreArgs,
        /// Replace everything the store holds
        #[arg(long)]
        force: bool,
    },
    /// Metadata operations per second (create, stat, list, rename, delete of
    /// empty files) on a store; prints JSON
    Bench {
        /// etcd://HOST:PORT[,...][/prefix] (default: an embedded store in a temp dir)
        #[arg(long)]
        store: Option<String>,
        /// Files per phase
        #[arg(long, default_value_t = 2000)]
        files: usize,
        /// Operations in flight at once
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
}

/// Which store a tool opens.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// Meta data directory: its embedded store (DATA/meta.redb)
    #[arg(long, conflicts_with = "store")]
    data: Option<PathBuf>,
    /// etcd://HOST:PORT[,HOST:PORT...][/prefix]
    #[arg(long)]
    store: Option<String>,
}

impl StoreArgs {
    async fn open(&self) -> Result<Arc<dyn MetaStore>> {
        let (spec, dir) = match (&self.store, &self.data) {
            (Some(url), _) => (url.parse::<StoreSpec>()?, PathBuf::new()),
            (None, Some(dir)) => {
                if !dir.join(EMBEDDED_FILE).exists() {
                    bail!(
                        "{} has no {EMBEDDED_FILE}: --data must be a meta data directory",
                        dir.display()
                    );
                }
                (StoreSpec::Embedded, dir.clone())
            }
            (None, None) => bail!("say which store: --data DIR (embedded) or --store etcd://..."),
        };
        spec.open(&dir).await.with_context(|| {
            format!("opening the {spec} metadata store (is a meta server still running on it?)")
        })
    }
}

pub async fn run(cmd: MetaCmd) -> Result<()> {
    match cmd {
        MetaCmd::Export { store } => {
            let s = store.open().await?;
            let mut out = tokio::io::BufWriter::new(tokio::io::stdout());
            let st = dump::export(s.as_ref(), &mut out).await?;
            out.flush().await?;
            eprintln!("exported {} keys ({} bytes)", st.keys, st.bytes);
        }
        MetaCmd::Import { store, force } => {
            let s = store.open().await?;
            let mut input = tokio::io::BufReader::new(tokio::io::stdin());
            let st = dump::import(s.as_ref(), &mut input, force).await?;
            eprintln!("imported {} keys ({} bytes)", st.keys, st.bytes);
        }
        MetaCmd::Bench {
            store,
            files,
            concurrency,
        } => bench(store, files, concurrency).await?,
    }
    Ok(())
}

fn p(s: &str) -> CairnPath {
    CairnPath::parse(s).expect("bench paths are valid")
}

/// Run `op(i)` for i in 0..n with `conc` in flight; ops per second.
async fn phase<F, Fut>(n: usize, conc: usize, op: F) -> Result<f64>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = cairn_types::Result<()>> + Send,
{
    let op = Arc::new(op);
    let t = Instant::now();
    let workers: Vec<_> = (0..conc)
        .map(|w| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut i = w;
                while i < n {
                    op(i).await?;
                    i += conc;
                }
                Ok::<_, cairn_types::Error>(())
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

async fn bench(store: Option<String>, files: usize, conc: usize) -> Result<()> {
    let conc = conc.max(1);
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let tmp = std::env::temp_dir().join(format!("cairn-meta-bench-{unique}"));
    let spec: StoreSpec = match &store {
        None => StoreSpec::Embedded,
        Some(url) => match url.parse()? {
            // A private prefix, so the bench never touches a real namespace.
            StoreSpec::Etcd(mut c) => {
                let mut prefix = c.prefix.clone();
                prefix.extend_from_slice(format!("bench-{unique}/").as_bytes());
                c.prefix = prefix;
                StoreSpec::Etcd(c)
            }
            s => s,
        },
    };
    let s = spec.open(&tmp).await?;
    let ns = Namespace::open(s.clone(), Duration::from_secs(60)).await?;
    ns.mkdir(&p("/bench"), false).await?;
    let name = |i: usize| format!("/bench/f{i:07}");

    let n = ns.clone();
    let create = phase(files, conc, move |i| {
        let n = n.clone();
        async move {
            n.commit_file(&p(&name(i)), vec![], Some(Version(0)), 0o644, 1 << 20)
                .await
                .map(|_| ())
        }
    })
    .await?;
    let n = ns.clone();
    let stat = phase(files, conc, move |i| {
        let n = n.clone();
        async move { n.lookup(&p(&name(i))).await.map(|_| ()) }
    })
    .await?;
    // List: whole directory, pages of 1000 entries, several times.
    let rounds = 5;
    let t = Instant::now();
    let mut entries = 0usize;
    for _ in 0..rounds {
        let mut after: Option<String> = None;
        loop {
            let page = ns.list(&p("/bench"), after.as_deref(), 1000).await?;
            entries += page.len();
            match page.last() {
                Some(l) if page.len() == 1000 => after = Some(l.name.clone()),
                _ => break,
            }
        }
    }
    let list_entries = entries as f64 / t.elapsed().as_secs_f64();
    let n = ns.clone();
    let rename = phase(files, conc, move |i| {
        let n = n.clone();
        async move { n.rename(&p(&name(i)), &p(&format!("/bench/r{i:07}"))).await }
    })
    .await?;
    let n = ns.clone();
    let delete = phase(files, conc, move |i| {
        let n = n.clone();
        async move { n.remove(&p(&format!("/bench/r{i:07}")), false).await }
    })
    .await?;
    if let StoreSpec::Etcd(_) = spec {
        s.commit(Txn::new().delete_range(Vec::new(), vec![0xff; 16]))
            .await?;
    }
    drop((ns, s));
    let _ = std::fs::remove_dir_all(&tmp);
    let report = serde_json::json!({
        "store": match &spec { StoreSpec::Embedded => "embedded".to_string(), s => s.to_string() },
        "files": files,
        "concurrency": conc,
        "ops_per_sec": {
            "create": create.round(),
            "stat": stat.round(),
            "rename": rename.round(),
            "delete": delete.round(),
            "list_entries": list_entries.round(),
        },
        "note": "namespace operations on the store itself, without the meta RPC hop; empty files",
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
