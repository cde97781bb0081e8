//! A sweep on PostgreSQL through the binary, as the README shows it: queue and train with
//! `--db postgres://…`, read it with `status` and `report`, move it to SQLite with `copy`, and get
//! the same report. The password never appears in anything printed.
mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::shallow_bin;
use common::stores;
use common::sweeps::setup;

fn shallow(args: &[&str], db: &str) -> Output {
    let out = Command::new(shallow_bin())
        .args(args)
        .env("SHALLOW_DB", db)
        .output()
        .unwrap();
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !String::from_utf8_lossy(text).contains("shallow-test"),
            "a password was printed: {}",
            String::from_utf8_lossy(text)
        );
    }
    out
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sweep_status_report_and_copy_on_postgres() {
    let s = setup(
        "layers = [1, 2]\nfilters = 4\nepochs = 2\nbatch_size = 16\n",
        200,
        8,
    );
    let t = stores::postgres();
    let url = t.url();
    let data = s.data.to_str().unwrap();
    let config = s.config.to_str().unwrap();
    let queued = ok(shallow(
        &[
            "sweep",
            config,
            "--data-dir",
            data,
            "--offline",
            "--no-train",
        ],
        url,
    ));
    assert!(queued.contains("4 runs in the grid, 4 new"), "{queued}");
    assert!(queued.contains("postgres://shallow:***@"), "{queued}");
    let worker = ok(shallow(
        &[
            "worker",
            "--workers",
            "2",
            "--threads",
            "1",
            "--data-dir",
            data,
            "--offline",
        ],
        url,
    ));
    assert!(worker.contains("in the database 4 done"), "{worker}");
    let status = ok(shallow(&["status"], url));
    assert!(status.contains("done      4"), "{status}");
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("copy.db");
    let copied = ok(shallow(&["copy", url, copy.to_str().unwrap()], url));
    assert!(copied.contains("4 runs copied"), "{copied}");
    let (pg_report, sqlite_report) = (tmp.path().join("pg"), tmp.path().join("sqlite"));
    ok(shallow(
        &["report", "--out", pg_report.to_str().unwrap()],
        url,
    ));
    ok(shallow(
        &[
            "report",
            copy.to_str().unwrap(),
            "--out",
            sqlite_report.to_str().unwrap(),
        ],
        url,
    ));
    for table in [
        "table2.csv",
        "paired.csv",
        "equivalence.csv",
        "diverged.csv",
    ] {
        let read = |dir: &Path| std::fs::read_to_string(dir.join("tables").join(table)).unwrap();
        assert_eq!(read(&pg_report), read(&sqlite_report), "{table}");
    }
}
