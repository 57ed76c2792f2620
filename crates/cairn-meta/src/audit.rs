//! The audit log (`--audit-log FILE`): one JSON line per namespace change
//! and per refused request, with who asked (the identity: its name,
//! `admin` for the admin key, `node`; and the client id), what, on which
//! paths, and the outcome.
//! Appended and flushed line by line, so a crash loses at most the line
//! being written; a failure to write is logged, never fails the request.

use cairn_proto::MetaRequest;
use cairn_types::{now_ms, ErrorKind, Result};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

pub struct AuditLog {
    out: Mutex<std::fs::File>,
}

impl AuditLog {
    pub fn open(path: &Path) -> Result<AuditLog> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                cairn_types::Error::from(e).context(format!("audit log {}", path.display()))
            })?;
        Ok(AuditLog { out: Mutex::new(f) })
    }

    /// Whether `req` answered with `outcome` is audited: every change to
    /// the namespace or the cluster, and every refusal.
    pub fn wanted(
        req: &MetaRequest,
        outcome: &std::result::Result<(), (ErrorKind, String)>,
    ) -> bool {
        let admin = matches!(
            req,
            MetaRequest::Drain { .. }
                | MetaRequest::SetGroup { .. }
                | MetaRequest::Discard { .. }
                | MetaRequest::IdentityCreate { .. }
                | MetaRequest::IdentityRevoke { .. }
        );
        req.is_namespace_change()
            || admin
            || matches!(outcome, Err((ErrorKind::PermissionDenied, _)))
    }

    pub fn record(
        &self,
        who: &str,
        client: Option<u64>,
        req: &MetaRequest,
        outcome: &std::result::Result<(), (ErrorKind, String)>,
    ) {
        let op = req.op_name();
        let paths: Vec<String> = req.paths().iter().map(|p| p.to_string()).collect();
        let mut line = serde_json::json!({
            "ts_ms": now_ms(),
            "identity": who,
            "client": client.map(|c| format!("{c:016x}")),
            "op": op,
            "paths": paths,
        });
        match outcome {
            Ok(()) => line["outcome"] = "ok".into(),
            Err((kind, msg)) => {
                line["outcome"] = format!("{kind:?}").into();
                line["error"] = msg.clone().into();
            }
        }
        let mut text = line.to_string();
        text.push('\n');
        let mut out = self.out.lock().unwrap();
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            tracing::warn!("cannot write the audit log: {e}");
        }
    }
}
