//! The lab's network: one Linux network namespace per host, each joined by a
//! veth pair to a bridge in the root namespace, all in a private /24 that a
//! lab owns alone for its lifetime.
//!
//! Names carry the subnet's third octet (`clb-O` bridge, `clv-O-H` host-side
//! veth, `cairnlab-O-H` namespace), so labs in parallel never collide and a
//! leftover of a crashed run can be found by name. Ownership of an octet is
//! a pid file `/run/cairn-lab/O.pid`, created exclusively before anything
//! else; whatever carries an octet whose pid file is missing or names a dead
//! process is swept before a new lab starts.
//!
//! Without root or a working `ip netns`, the lab falls back to distinct
//! 127.x.y.z addresses on loopback: processes still get their own address,
//! but nothing can be cut off.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Subnets are `10.213.O.0/24`; loopback fallback uses `127.213.O.H`.
const NET_PREFIX: &str = "10.213";
const LOOP_PREFIX: &str = "127.213";
const NS_PREFIX: &str = "cairnlab-";
const BRIDGE_PREFIX: &str = "clb-";
const VETH_PREFIX: &str = "clv-";
const PEER_PREFIX: &str = "clp-";
const OWNER_DIR: &str = "/run/cairn-lab";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetMode {
    /// Each host its own network namespace; partitions possible.
    Namespaces,
    /// Every host on loopback with an address of its own; no partitions.
    Loopback,
}

/// One host of the lab: where its processes run and the address they use.
#[derive(Clone, Debug)]
pub struct Host {
    /// Network namespace (namespace mode only).
    pub netns: Option<String>,
    pub ip: String,
    veth: Option<String>,
}

pub struct Network {
    pub mode: NetMode,
    octet: u8,
    bridge: Option<String>,
    hosts: Vec<Host>,
    owner: Option<PathBuf>,
}

/// Run a command quietly; Err with its stderr if it fails.
pub(crate) fn run(prog: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{prog}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

fn pid_alive(pid: i32) -> bool {
    // Signal 0 checks existence; EPERM still means the process exists.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

fn owner_file(octet: u8) -> PathBuf {
    PathBuf::from(OWNER_DIR).join(format!("{octet}.pid"))
}

fn owner_alive(octet: u8) -> bool {
    std::fs::read_to_string(owner_file(octet))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .is_some_and(pid_alive)
}

/// Whether this process may build namespaces: root, and `ip netns` works.
fn namespaces_available() -> bool {
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    ip(&["netns", "list"]).is_ok()
}

/// The octet in a lab-made name (`clb-O`, `clv-O-H`, `cairnlab-O-H`).
fn octet_of(name: &str, prefix: &str) -> Option<u8> {
    name.strip_prefix(prefix)?.split('-').next()?.parse().ok()
}

/// Remove every namespace, veth and bridge left by labs whose owner is gone
/// (a test process that was SIGKILLed never ran its destructors).
pub fn sweep_leftovers() {
    if !namespaces_available() {
        return;
    }
    let mut dead = std::collections::BTreeSet::new();
    let links = ip(&["-o", "link", "show"]).unwrap_or_default();
    for line in links.lines() {
        // "12: clv-7-1@if11: <...>" → "clv-7-1"
        let Some(name) = line.split(':').nth(1).map(|s| s.trim()) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        for prefix in [BRIDGE_PREFIX, VETH_PREFIX] {
            if let Some(o) = octet_of(name, prefix) {
                if !owner_alive(o) {
                    dead.insert(o);
                    let _ = ip(&["link", "del", name]);
                }
            }
        }
    }
    let spaces = ip(&["netns", "list"]).unwrap_or_default();
    for line in spaces.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(o) = octet_of(name, NS_PREFIX) {
            if !owner_alive(o) {
                dead.insert(o);
                kill_netns_pids(name);
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    for o in dead {
        let _ = std::fs::remove_file(owner_file(o));
    }
    crate::disk::sweep_mounts();
}

fn kill_netns_pids(ns: &str) {
    for pid in ip(&["netns", "pids", ns])
        .unwrap_or_default()
        .split_whitespace()
    {
        if let Ok(pid) = pid.parse::<i32>() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Network {
    /// A network of `hosts` hosts: namespaces when possible (unless
    /// `CAIRN_LAB_LOOPBACK=1`), else loopback addresses.
    pub fn new(hosts: usize) -> Network {
        assert!(hosts < 200, "a lab has at most 200 hosts");
        let forced_loopback = std::env::var("CAIRN_LAB_LOOPBACK").is_ok_and(|v| v == "1");
        if !forced_loopback && namespaces_available() {
            sweep_leftovers();
            match Network::with_namespaces(hosts) {
                Ok(n) => return n,
                Err(e) => eprintln!("cairn-lab: network namespaces unusable ({e}); using loopback"),
            }
        }
        let octet = fastrand::u8(1..=254);
        Network {
            mode: NetMode::Loopback,
            octet,
            bridge: None,
            hosts: (0..hosts)
                .map(|h| Host {
                    netns: None,
                    ip: format!("{LOOP_PREFIX}.{octet}.{}", 10 + h),
                    veth: None,
                })
                .collect(),
            owner: None,
        }
    }

    fn claim_octet() -> Result<(u8, PathBuf), String> {
        std::fs::create_dir_all(OWNER_DIR).map_err(|e| format!("{OWNER_DIR}: {e}"))?;
        for _ in 0..500 {
            let octet = fastrand::u8(1..=254);
            let path = owner_file(octet);
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path);
            match file {
                Ok(mut f) => {
                    use std::io::Write;
                    let _ = write!(f, "{}", std::process::id());
                    return Ok((octet, path));
                }
                Err(_) if !owner_alive(octet) => {
                    // A crashed run's claim: the sweep will get it; try another.
                    continue;
                }
                Err(_) => continue,
            }
        }
        Err("no free 10.213.x.0/24 subnet".into())
    }

    fn with_namespaces(hosts: usize) -> Result<Network, String> {
        let (octet, owner) = Network::claim_octet()?;
        let bridge = format!("{BRIDGE_PREFIX}{octet}");
        let mut net = Network {
            mode: NetMode::Namespaces,
            octet,
            bridge: None,
            hosts: Vec::new(),
            owner: Some(owner),
        };
        // From here on, Drop undoes whatever was made.
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        net.bridge = Some(bridge.clone());
        ip(&[
            "addr",
            "add",
            &format!("{NET_PREFIX}.{octet}.1/24"),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for h in 0..hosts {
            let ns = format!("{NS_PREFIX}{octet}-{h}");
            let veth = format!("{VETH_PREFIX}{octet}-{h}");
            let peer = format!("{PEER_PREFIX}{octet}-{h}");
            let addr = format!("{NET_PREFIX}.{octet}.{}", 10 + h);
            ip(&["netns", "add", &ns])?;
            net.hosts.push(Host {
                netns: Some(ns.clone()),
                ip: addr.clone(),
                veth: None,
            });
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
            net.hosts[h].veth = Some(veth.clone());
            ip(&["link", "set", &peer, "netns", &ns])?;
            ip(&["link", "set", &veth, "master", &bridge])?;
            ip(&["link", "set", &veth, "up"])?;
            let inside = |args: &[&str]| {
                let mut full = vec!["netns", "exec", ns.as_str(), "ip"];
                full.extend_from_slice(args);
                ip(&full)
            };
            inside(&["link", "set", "lo", "up"])?;
            inside(&["link", "set", &peer, "name", "eth0"])?;
            inside(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            inside(&["link", "set", "eth0", "up"])?;
        }
        Ok(net)
    }

    pub fn host(&self, h: usize) -> &Host {
        &self.hosts[h]
    }

    pub fn can_partition(&self) -> bool {
        self.mode == NetMode::Namespaces
    }

    /// The subnet's third octet: unique among labs running at the same time.
    pub fn octet(&self) -> u8 {
        self.octet
    }

    /// Cut host `h` off from every other host (its link goes down: packets
    /// vanish, nothing is refused, as when a switch port dies).
    pub fn cut(&self, h: usize) {
        let veth = self.hosts[h]
            .veth
            .as_ref()
            .expect("partitions need namespaces");
        ip(&["link", "set", veth, "down"]).expect("link down");
    }

    pub fn heal(&self, h: usize) {
        let veth = self.hosts[h]
            .veth
            .as_ref()
            .expect("partitions need namespaces");
        ip(&["link", "set", veth, "up"]).expect("link up");
    }

    /// The command that runs `prog` on host `h`.
    pub fn command(&self, h: usize, prog: &std::path::Path) -> Command {
        match &self.hosts[h].netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(prog);
                c
            }
            None => Command::new(prog),
        }
    }

    /// Kill whatever still runs inside the lab's namespaces.
    pub fn kill_all(&self) {
        for h in &self.hosts {
            if let Some(ns) = &h.netns {
                kill_netns_pids(ns);
            }
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.kill_all();
        for h in &self.hosts {
            if let Some(v) = &h.veth {
                let _ = ip(&["link", "del", v]);
            }
            if let Some(ns) = &h.netns {
                let _ = ip(&["netns", "del", ns]);
            }
        }
        if let Some(b) = &self.bridge {
            let _ = ip(&["link", "del", b]);
        }
        if let Some(o) = &self.owner {
            let _ = std::fs::remove_file(o);
        }
    }
}
