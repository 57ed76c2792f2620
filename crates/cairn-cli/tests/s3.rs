//! The S3 gateway inside the real `cairn server`: its endpoint in the
//! banner, keys from `cairn key create`, and files shared both ways between
//! S3 (boto3) and the file commands.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cairn");

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cli(dir: &std::path::Path, meta: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("CAIRN_META", meta)
        .env("CAIRN_SECRET_FILE", dir.join("data/meta/client.key"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("RUST_LOG", "error")
        .output()
        .unwrap()
}

#[test]
fn s3_and_files_see_each_other() {
    if std::env::var("CAIRN_S3_SKIP_CLIENTS").is_ok_and(|v| v == "1") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--s3-listen",
            "127.0.0.1:0",
        ])
        .arg("--data")
        .arg(dir.path().join("data"))
        .arg("--no-client-conf")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let server = Server(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut meta, mut s3) = (String::new(), String::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    while s3.is_empty() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("server banner with the s3 endpoint");
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("meta"), Some(a)) => meta = a.to_string(),
            (Some("s3"), Some(u)) => s3 = u.to_string(),
            _ => {}
        }
    }
    let endpoints: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("data/endpoints.json")).unwrap())
            .unwrap();
    assert_eq!(endpoints["s3"], s3.as_str());

    let key = cli(dir.path(), &meta, &["key", "create", "test", "--json"]);
    assert!(key.status.success(), "{key:?}");
    let key: serde_json::Value = serde_json::from_slice(&key.stdout).unwrap();

    let local = dir.path().join("local.bin");
    std::fs::write(&local, b"written by cairn put").unwrap();
    assert!(cli(dir.path(), &meta, &["mkdir", "/shared"])
        .status
        .success());
    let put = cli(
        dir.path(),
        &meta,
        &["put", local.to_str().unwrap(), "/shared/from-cli"],
    );
    assert!(put.status.success(), "{put:?}");

    let script = r#"
import os, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["EP"], region_name="us-east-1",
                  aws_access_key_id=os.environ["AK"], aws_secret_access_key=os.environ["SK"])
assert s3.get_object(Bucket="shared", Key="from-cli")["Body"].read() == b"written by cairn put"
s3.put_object(Bucket="shared", Key="deep/from-s3", Body=b"written through S3")
"#;
    let py = Command::new("python3")
        .args(["-c", script])
        .env("EP", &s3)
        .env("AK", key["access_key"].as_str().unwrap())
        .env("SK", key["secret_key"].as_str().unwrap())
        .output()
        .expect("python3 with boto3 (installed by .ci/run)");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let cat = cli(dir.path(), &meta, &["cat", "/shared/deep/from-s3"]);
    assert!(cat.status.success(), "{cat:?}");
    assert_eq!(cat.stdout, b"written through S3");
    drop(server);
}
