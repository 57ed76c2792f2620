//! A real, independent S3 server for tests: moto's server mode (PyPI
//! `moto[server]`, installed by `.ci/run`), in a child process on a port
//! the OS picks, with one bucket made. Killed on drop; it also exits when
//! the test process goes away (its stdin closes).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const LAUNCHER: &str = r#"
import sys, logging
logging.disable(logging.CRITICAL)
from moto.server import ThreadedMotoServer
s = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
s.start()
port = s.get_host_and_port()[1]
import boto3
boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="test",
             aws_secret_access_key="test", region_name="us-east-1").create_bucket(Bucket=sys.argv[1])
print(port, flush=True)
sys.stdin.read()
"#;

pub struct MotoServer {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub bucket: String,
}

impl MotoServer {
    /// Start the server with `bucket` made; panics with what to install
    /// when moto is missing.
    pub fn start(bucket: &str) -> MotoServer {
        let mut child = Command::new("python3")
            .args(["-c", LAUNCHER, bucket])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        let out = child.stdout.take().expect("piped stdout");
        BufReader::new(out)
            .read_line(&mut line)
            .expect("moto's port");
        let port: u16 = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "the moto S3 server did not start: pip install 'moto[server]' boto3 (.ci/run does)"
            )
        });
        MotoServer {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_string(),
        }
    }

    /// Stop the server now (a remote store that went away).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}
