//! The sweep's progress display as a user sees it on a terminal: run under a pseudo-terminal
//! (util-linux `script`), each worker's line names the run it trains and its epoch.
use crate::common;

use std::collections::HashSet;
use std::process::Command;

use common::sweeps::{query, setup};

/// The text of a terminal session, without its escape sequences.
fn visible(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(if c == '\r' { '\n' } else { c });
    }
    out
}

#[test]
fn on_a_terminal_each_worker_line_shows_its_run_and_epoch() {
    let s = setup(
        "layers = [2, 3]\nfilters = 16\nseed = [0, 1]\nepochs = 3\nbatch_size = 16\n",
        1500,
        16,
    );
    let sweep = format!(
        "{} sweep {} --db {} --data-dir {} --offline --threads 1 --workers 2 --fuse 1",
        common::shallow_bin(),
        s.config.display(),
        s.db.display(),
        s.data.display()
    );
    let out = Command::new("script")
        .args(["--quiet", "--return", "--command", &sweep, "/dev/null"])
        .env("COLUMNS", "160")
        .output()
        .expect("util-linux `script` runs the sweep under a pseudo-terminal: install util-linux");
    let screen = visible(&out.stdout);
    assert!(out.status.success(), "{screen}");
    let ids: HashSet<String> = query::<String>(&s.db, "SELECT id FROM runs")
        .into_iter()
        .map(|id| id[..8].to_owned())
        .collect();
    assert_eq!(ids.len(), 8);
    for worker in ["worker 1: ", "worker 2: "] {
        let shown: Vec<&str> = screen
            .lines()
            .filter_map(|l| l.split_once(worker).map(|(_, rest)| rest))
            .filter(|rest| rest.contains("tiny") && rest.contains("· epoch "))
            .collect();
        assert!(
            shown.iter().any(|rest| ids.contains(&rest[..8])),
            "{worker}never showed a run:\n{screen}"
        );
    }
}
