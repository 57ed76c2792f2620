//! `cairn tier status|recall|verify`: the remote tier (`tier=`,
//! `cold_after=` cues) as meta sees it.

use crate::commands::connect;
use crate::Target;
use anyhow::Result;
use cairn_types::{format_bytes, CairnPath};
use serde_json::json;

#[derive(clap::Subcommand)]
pub enum TierCmd {
    /// Bytes per tier: on storage nodes, and in each remote store
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Bring offloaded files (a directory: everything below it) back onto
    /// storage nodes. A file whose cues still say tier=remote:NAME goes
    /// back at the tier planner's next pass: set tier=local to keep it
    Recall {
        path: String,
        #[command(flatten)]
        target: Target,
    },
    /// List objects of a remote store that no chunk names, and offloaded
    /// chunks whose object is missing or of the wrong size (exit status 1
    /// when chunks are missing or damaged)
    Verify {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

pub async fn run(cmd: TierCmd) -> Result<()> {
    match cmd {
        TierCmd::Status { json, target } => {
            let c = connect(&target).await?;
            let tiers = c.tier_status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&usage_json(&tiers))?);
                return Ok(());
            }
            println!(
                "{:<12}  {:>8}  {:>12}  {:>12}  where",
                "tier", "chunks", "bytes", "cached"
            );
            for t in &tiers {
                println!(
                    "{:<12}  {:>8}  {:>12}  {:>12}  {}{}",
                    t.name,
                    t.chunks,
                    format_bytes(t.bytes),
                    if t.name == "local" {
                        "-".to_string()
                    } else {
                        format_bytes(t.cached_bytes)
                    },
                    if t.location.is_empty() {
                        "storage nodes"
                    } else {
                        &t.location
                    },
                    t.problem
                        .as_ref()
                        .map(|p| format!("  (UNUSABLE: {p})"))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        TierCmd::Recall { path, target } => {
            let c = connect(&target).await?;
            let p: CairnPath = path.parse()?;
            let (files, chunks, bytes) = c.tier_recall(&p).await?;
            eprintln!(
                "recalled {files} file(s): {chunks} chunk(s), {} back on storage nodes",
                format_bytes(bytes)
            );
            Ok(())
        }
        TierCmd::Verify { name, json, target } => {
            let c = connect(&target).await?;
            let r = c.tier_verify(&name).await?;
            if json {
                let v = json!({
                    "objects": r.objects,
                    "unreferenced": r.unreferenced.iter().map(|(c, s)| json!({"chunk": c.to_string(), "size": s})).collect::<Vec<_>>(),
                    "missing": r.missing.iter().map(|(c, f)| json!({"chunk": c.to_string(), "file": f})).collect::<Vec<_>>(),
                    "wrong_size": r.wrong_size.iter().map(|(c, o, l)| json!({"chunk": c.to_string(), "object_size": o, "chunk_size": l})).collect::<Vec<_>>(),
                    "foreign": r.foreign,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{} object(s) in remote store {name}", r.objects);
                for (c, s) in &r.unreferenced {
                    println!("unreferenced object: chunk {c} ({})", format_bytes(*s));
                }
                for (c, f) in &r.missing {
                    println!("MISSING object: chunk {c} of {f}");
                }
                for (c, o, l) in &r.wrong_size {
                    println!("DAMAGED object: chunk {c} is {o} bytes, the chunk {l}");
                }
                for f in &r.foreign {
                    println!("not a chunk object: {f}");
                }
            }
            if !r.missing.is_empty() || !r.wrong_size.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

pub fn usage_json(tiers: &[cairn_proto::TierUsage]) -> serde_json::Value {
    json!(tiers
        .iter()
        .map(
            |t| json!({"name": t.name, "location": t.location, "chunks": t.chunks,
            "bytes": t.bytes, "cached_bytes": t.cached_bytes, "problem": t.problem})
        )
        .collect::<Vec<_>>())
}
