//! `cairn simulate` as a user runs it: flags in, table, JSON and SVG out.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cairn");

#[test]
fn simulate_writes_json_and_a_plot() {
    let dir = tempfile::tempdir().unwrap();
    let (json, svg) = (dir.path().join("r.json"), dir.path().join("r.svg"));
    let out = Command::new(BIN)
        .args([
            "simulate",
            "--nodes",
            "60",
            "--zones",
            "3",
            "--chunks",
            "2000",
            "--rep",
            "3",
            "--schemes",
            "random,buddy,min_copy,copyset,spread,local",
            "--ec",
            "4+2,8+3",
            "--failures",
            "3,10",
            "--trials",
            "200",
            "--seed",
            "5",
            "--out",
        ])
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("closed form:") && table.contains("copyset") && table.contains("ec=8+3"),
        "{table}"
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 8);
    assert_eq!(results[6]["scheme"], "ec=4+2");
    assert_eq!(results[6]["storage_overhead"], 1.5);
    assert_eq!(results[0]["storage_overhead"], 3.0);
    for s in results {
        assert_eq!(s["failures"].as_array().unwrap().len(), 2);
        let p = s["failures"][1]["p_loss"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p));
    }
    assert_eq!(results[1]["repair"]["max"], 2, "buddy sets of 3");
    assert!(std::fs::read_to_string(&svg).unwrap().contains("</svg>"));

    // A bad flag is a clear error, not a panic.
    let out = Command::new(BIN)
        .args(["simulate", "--nodes", "5", "--failures", "9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot fail 9 of 5 nodes"));
}
