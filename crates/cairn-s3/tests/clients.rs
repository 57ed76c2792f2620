//! Real S3 clients against a gateway on an in-process cluster: boto3, the
//! aws CLI, rclone and s3fs, each as a subprocess with a hard timeout.
//! CI installs them (`.ci/run`); set CAIRN_S3_SKIP_CLIENTS=1 to skip these
//! tests on a machine without them.

use cairn_s3::{create_key, GatewayConfig, GatewayHandle};
use cairn_testkit::TestCluster;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Setup {
    _cluster: TestCluster,
    gateway: GatewayHandle,
    env: Vec<(String, String)>,
}

async fn setup() -> Setup {
    setup_with_domain(None).await
}

async fn setup_with_domain(domain: Option<String>) -> Setup {
    // Small chunks so that objects and parts span several of them.
    let cluster = TestCluster::start_with(2, |c| {
        c.default_rep = 2;
        c.chunk_size = 1 << 20;
    })
    .await;
    let client = cluster.client().await;
    let gateway = cairn_s3::start(
        client.clone(),
        GatewayConfig {
            listen: "127.0.0.1:0".into(),
            domain,
            unauthenticated: false,
            tls: None,
        },
    )
    .await
    .unwrap();
    let rw = create_key(&client, "rw", false, None).await.unwrap();
    let ro = create_key(&client, "ro", true, None).await.unwrap();
    let one = create_key(&client, "one", false, Some("boto".into()))
        .await
        .unwrap();
    let env = vec![
        ("S3_ENDPOINT".into(), format!("http://{}", gateway.addr)),
        ("S3_AK".into(), rw.access_key),
        ("S3_SK".into(), rw.secret_key),
        ("S3_RO_AK".into(), ro.access_key),
        ("S3_RO_SK".into(), ro.secret_key),
        ("S3_ONE_AK".into(), one.access_key),
        ("S3_ONE_SK".into(), one.secret_key),
    ];
    Setup {
        _cluster: cluster,
        gateway,
        env,
    }
}

fn skip() -> bool {
    std::env::var("CAIRN_S3_SKIP_CLIENTS").is_ok_and(|v| v == "1")
}

/// Run a client script to completion within `limit`, killing it past that.
async fn run(s: &Setup, program: &str, script: &str, limit: Duration) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let mut cmd = Command::new(program);
    cmd.arg(dir.join(script))
        .current_dir(&dir)
        .envs(s.env.iter().cloned())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("{program} {script}");
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what} ({e}); .ci/run installs the S3 clients"));
        let start = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                return (what, child.wait_with_output().unwrap());
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "{what} did not finish in {limit:?}\nstdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    let (what, out) = out;
    assert!(
        out.status.success(),
        "{what} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_suite() {
    if skip() {
        return;
    }
    let s = setup().await;
    run(&s, "python3", "boto3_suite.py", Duration::from_secs(120)).await;
    // Its small objects are kept in meta.
    let c = s._cluster.client().await;
    let p = |x: &str| cairn_types::CairnPath::parse(x).unwrap();
    for (key, inline) in [
        ("/smallbkt/small/obj", true),
        ("/smallbkt/small/copy", true),
        ("/smallbkt/small/grows", true),
    ] {
        let i = c.stat(&p(key)).await.unwrap();
        assert_eq!(i.is_inline(), inline, "{key}: {i:?}");
    }
    s.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cli_round_trip() {
    if skip() {
        return;
    }
    let s = setup().await;
    run(&s, "bash", "awscli.sh", Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_round_trip() {
    if skip() {
        return;
    }
    let s = setup().await;
    run(&s, "bash", "rclone.sh", Duration::from_secs(90)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3fs_round_trip() {
    if skip() {
        return;
    }
    let s = setup().await;
    run(&s, "python3", "s3fs_roundtrip.py", Duration::from_secs(90)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_virtual_hosted_style() {
    if skip() {
        return;
    }
    let s = setup_with_domain(Some("s3.test".into())).await;
    run(&s, "python3", "virtual_host.py", Duration::from_secs(60)).await;
    s.gateway.stop().await;
}

/// Cues in keys, in the `cairn-cues` metadata and on a bucket decide how
/// many copies the objects get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_cues() {
    if skip() {
        return;
    }
    let s = setup().await;
    let c = s._cluster.client().await;
    let p = |x: &str| cairn_types::CairnPath::parse(x).unwrap();
    c.mkdir(&p("/onecopy"), false).await.unwrap();
    c.set_cues(
        &p("/onecopy"),
        &cairn_types::Cues::parse("rep=1").unwrap(),
        false,
    )
    .await
    .unwrap();
    let st = c.cluster_status().await.unwrap();
    for n in &st.nodes {
        c.set_group(n.id, "actor", true).await.unwrap();
    }
    run(&s, "python3", "cues.py", Duration::from_secs(90)).await;
    // The hot=actor object got a cache copy of each chunk on the node
    // without its one durable copy.
    cairn_testkit::wait_for(Duration::from_secs(60), || {
        let c = c.clone();
        async move {
            let s = c.cluster_status().await.unwrap();
            (s.cache_copies == 3).then_some(())
        }
    })
    .await;
    let hot = c.stat(&p("/hotbkt/model.bin")).await.unwrap();
    assert_eq!(hot.cues.hot.as_deref(), Some("actor"));
    for (path, copies) in [
        ("/cuebkt/a/in-key", 1),
        ("/cuebkt/meta", 1),
        ("/cuebkt/plain", 2),
        ("/onecopy/deep/inherits", 1),
    ] {
        let i = c.stat(&p(path)).await.unwrap();
        assert_eq!(i.extents.len(), 3, "{path}");
        assert!(
            i.extents.iter().all(|e| e.nodes.len() == copies),
            "{path}: want {copies} copies, got {:?}",
            i.extents
        );
        assert_eq!(i.cues.rep, Some(copies as u8), "{path}");
    }
    s.gateway.stop().await;
}

/// The gateway over HTTPS with an operator's certificate: boto3 trusts it
/// through its CA bundle and refuses it without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_over_https() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.self_signed(&key).unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    // A key file that is no key is refused with the file's name.
    let e = cairn_s3::tls_config(&cert_pem, &cert_pem).unwrap_err();
    assert!(e.message.contains("cert.pem"), "{e}");

    let cluster = TestCluster::start(1, 1).await;
    let client = cluster.client().await;
    let gateway = cairn_s3::start(
        client.clone(),
        GatewayConfig {
            listen: "127.0.0.1:0".into(),
            domain: None,
            unauthenticated: false,
            tls: Some(cairn_s3::tls_config(&cert_pem, &key_pem).unwrap()),
        },
    )
    .await
    .unwrap();
    let k = create_key(&client, "tls", false, None).await.unwrap();
    let s = Setup {
        _cluster: cluster,
        env: vec![
            ("S3_ENDPOINT".into(), format!("https://{}", gateway.addr)),
            ("S3_AK".into(), k.access_key),
            ("S3_SK".into(), k.secret_key),
            ("AWS_CA_BUNDLE".into(), cert_pem.to_str().unwrap().into()),
        ],
        gateway,
    };
    run(&s, "python3", "https.py", Duration::from_secs(120)).await;
    s.gateway.stop().await;
}
