use crate::{connect, Conn, Credentials, MetaRequest, MetaResponse, MetaResult};
use cairn_types::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const MAX_IDLE_PER_ADDR: usize = 64;

/// Idle authenticated connections by address, reused across requests.
pub struct Pool {
    creds: Credentials,
    idle: Mutex<HashMap<String, Vec<Conn>>>,
    pub connect_timeout: Duration,
}

/// A connection taken from a [`Pool`]; `reused` says whether it sat idle
/// (and so may have been closed by the peer meanwhile).
pub struct Pooled {
    pub conn: Conn,
    pub reused: bool,
}

impl Pool {
    pub fn new(creds: Credentials) -> Pool {
        Pool {
            creds,
            idle: Mutex::new(HashMap::new()),
            connect_timeout: Duration::from_secs(5),
        }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    pub async fn get(&self, addr: &str) -> Result<Pooled> {
        let idle = self
            .idle
            .lock()
            .unwrap()
            .get_mut(addr)
            .and_then(|v| v.pop());
        if let Some(conn) = idle {
            return Ok(Pooled { conn, reused: true });
        }
        let conn = connect(addr, &self.creds, self.connect_timeout).await?;
        Ok(Pooled {
            conn,
            reused: false,
        })
    }

    /// Give back a connection whose last exchange completed cleanly.
    pub fn put(&self, addr: &str, conn: Conn) {
        let mut idle = self.idle.lock().unwrap();
        let v = idle.entry(addr.to_string()).or_default();
        if v.len() < MAX_IDLE_PER_ADDR {
            v.push(conn);
        }
    }

    /// Drop every idle connection to `addr` (after it failed).
    pub fn forget(&self, addr: &str) {
        self.idle.lock().unwrap().remove(addr);
    }
}

fn carries_id(req: &MetaRequest) -> bool {
    match req {
        MetaRequest::Once { .. } => true,
        MetaRequest::As { req, .. } => matches!(**req, MetaRequest::Once { .. }),
        _ => false,
    }
}

/// Talks to meta: a list of addresses tried in order, pooled connections, a
/// timeout on every call.
pub struct MetaClient {
    addrs: Vec<String>,
    pool: Pool,
    pub timeout: Duration,
}

impl MetaClient {
    pub fn new(addrs: Vec<String>, creds: Credentials) -> MetaClient {
        MetaClient {
            addrs,
            pool: Pool::new(creds),
            timeout: Duration::from_secs(60),
        }
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    pub fn credentials(&self) -> &Credentials {
        self.pool.credentials()
    }

    pub async fn call(&self, req: MetaRequest) -> Result<MetaResponse> {
        if !carries_id(&req) {
            return self.call_round(&req).await;
        }
        // A change with a request id is safe to send again after a lost
        // answer (meta applies it once): a few rounds over the addresses.
        let mut wait = Duration::from_millis(200);
        for round in 0.. {
            match self.call_round(&req).await {
                Err(e)
                    if round < 2
                        && matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout) =>
                {
                    tracing::debug!("meta request failed, sending it again: {e}");
                    tokio::time::sleep(wait).await;
                    wait *= 4;
                }
                r => return r,
            }
        }
        unreachable!()
    }

    async fn call_round(&self, req: &MetaRequest) -> Result<MetaResponse> {
        let mut last = Error::unavailable("no meta address configured");
        for addr in &self.addrs {
            // A pooled connection may have been closed by a restarted meta; a
            // failure to even send on one is retried once on a fresh one.
            for _ in 0..2 {
                let mut p = match self.pool.get(addr).await {
                    Ok(p) => p,
                    Err(e) => {
                        last = e;
                        break;
                    }
                };
                match p.conn.call::<_, MetaResult>(&req, self.timeout).await {
                    Ok(answer) => {
                        self.pool.put(addr, p.conn);
                        return answer;
                    }
                    Err(e) if p.reused && e.kind == ErrorKind::Unavailable => {
                        self.pool.forget(addr);
                        last = e;
                    }
                    Err(e) => {
                        last = e;
                        break;
                    }
                }
            }
        }
        Err(last.context(format!("meta at {}", self.addrs.join(","))))
    }
}
