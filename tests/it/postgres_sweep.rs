//! A sweep on PostgreSQL through the binary, as the README shows it: queue and train with
//! `--db postgres://…`, read it with `status` and `report`, move it to SQLite with `copy`, and get
//! the same report. The password never appears in anything printed, and the workers' log goes to
//! the current folder, named after the database.
use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::shallow_bin;
use common::stores;
use common::sweeps::setup;

fn shallow(args: &[&str], db: &str, cwd: &Path) -> Output {
    let out = Command::new(shallow_bin())
        .args(args)
        .current_dir(cwd)
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
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
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
        cwd,
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
        cwd,
    ));
    assert!(worker.contains("in the database 4 done"), "{worker}");
    let db_name = url.rsplit_once('/').unwrap().1;
    let log = std::fs::read_to_string(cwd.join(format!("shallow-{db_name}.workers.log"))).unwrap();
    assert!(log.contains("trains run(s)"), "{log}");
    let status = ok(shallow(&["status"], url, cwd));
    assert!(status.contains("done      4"), "{status}");
    let copy = cwd.join("copy.db");
    let copied = ok(shallow(&["copy", url, copy.to_str().unwrap()], url, cwd));
    assert!(copied.contains("4 runs copied"), "{copied}");
    let (pg_report, sqlite_report) = (cwd.join("pg"), cwd.join("sqlite"));
    ok(shallow(
        &["report", "--out", pg_report.to_str().unwrap()],
        url,
        cwd,
    ));
    ok(shallow(
        &[
            "report",
            copy.to_str().unwrap(),
            "--out",
            sqlite_report.to_str().unwrap(),
        ],
        url,
        cwd,
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
