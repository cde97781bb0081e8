//! `shallow serve` as its users meet it: a live sweep watched in a real headless Chromium, a
//! finished store left byte for byte as it was, a token on every request to a non-loopback
//! address, and no password on any page or error.
use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::sweeps::{Setup, query, run_sweep, setup, sweep_command_fusing};
use common::synthetic::{self, Synthetic};
use shallow::model::Layout;
use shallow::sweep::store::{self, Location, RunStatus, RunsQuery, SortKey};
use shallow::train::optim::Optimizer;

/// A `shallow serve` process, killed when dropped.
struct Served {
    child: Child,
    /// Where to connect (a wildcard bind is reached on loopback).
    addr: String,
    /// The URL it printed.
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(db: &Path, args: &[&str]) -> Served {
    let mut child = Command::new(common::shallow_bin())
        .arg("serve")
        .arg(db)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split(" at ")
        .nth(1)
        .unwrap_or_else(|| panic!("no URL printed: {line:?}"))
        .trim()
        .to_owned();
    let host_port = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let port = host_port.rsplit(':').next().unwrap();
    Served {
        child,
        addr: format!("127.0.0.1:{port}"),
        url,
    }
}

/// A response: status, head, body.
struct Got {
    status: u16,
    head: String,
    body: String,
    bytes: Vec<u8>,
}

fn request(addr: &str, method: &str, path: &str, headers: &[&str]) -> Got {
    let mut stream = TcpStream::connect(addr).unwrap();
    // HTTP/1.0: the body comes whole, not in chunks.
    let mut text = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for h in headers {
        text += &format!("{h}\r\n");
    }
    text += "\r\n";
    stream.write_all(text.as_bytes()).unwrap();
    let mut bytes = vec![];
    stream.read_to_end(&mut bytes).unwrap();
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = split.map_or((&bytes[..], &[][..]), |at| (&bytes[..at], &bytes[at + 4..]));
    let head = String::from_utf8_lossy(head).into_owned();
    Got {
        status: head.split(' ').nth(1).unwrap().parse().unwrap(),
        head,
        body: String::from_utf8_lossy(body).into_owned(),
        bytes: body.to_vec(),
    }
}

fn get(addr: &str, path: &str) -> Got {
    request(addr, "GET", path, &[])
}

/// The page's DOM after its scripts ran, as headless Chromium renders it. A Chromium that exits
/// with an error (seen once on a loaded 2-core machine, mid-sweep) is started again, twice at
/// most: the test is about the page, not about the browser's own start.
fn dom(url: &str, profile: &Path) -> String {
    let mut failures = Vec::new();
    for _ in 0..3 {
        let out = common::headless_chromium(profile)
            .args(["--virtual-time-budget=3000", "--dump-dom", url])
            .output()
            .unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        failures.push(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    panic!("Chromium failed three times:\n{}", failures.join("\n"));
}

/// The text between `start` and the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text.find(start).map_or(text.len(), |i| i + start.len());
    let rest = &text[from..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

/// What a snapshot of the dashboard shows: runs done, the run ids in the workers table, and per
/// run the points of its drawn validation-loss curve.
struct Snapshot {
    done: usize,
    workers: String,
    points: Vec<(String, usize)>,
}

fn snapshot(html: &str) -> Snapshot {
    let done = between(html, "data-status=\"done\">", "<")
        .parse()
        .unwrap_or(0);
    let workers = between(html, "<table id=\"workers\">", "</table>").to_owned();
    let points = html
        .split("<polyline ")
        .skip(1)
        .filter(|p| !p.contains("stroke-dasharray=\"4 3\""))
        .map(|p| {
            let run = between(p, "data-run=\"", "\"").to_owned();
            (run, between(p, "points=\"", "\"").split(' ').count())
        })
        .collect();
    Snapshot {
        done,
        workers,
        points,
    }
}

fn live_grid() -> Setup {
    setup(
        "layers = [2, 3]\nfilters = 8\nseed = [0, 1]\nepochs = 12\nbatch_size = 16\n",
        1500,
        16,
    )
}

/// A real sweep, served while it runs and watched in Chromium: the done count rises, a worker
/// row shows the run it trains, a running run's curve gains points, and the verdicts appear,
/// provisional while runs remain.
#[test]
fn a_live_sweep_is_watched_in_headless_chromium() {
    let s = live_grid();
    // Queue first, so that the store exists when the server starts.
    let queued = Command::new(common::shallow_bin())
        .arg("sweep")
        .arg(&s.config)
        .arg("--db")
        .arg(&s.db)
        .arg("--data-dir")
        .arg(&s.data)
        .args(["--offline", "--no-train"])
        .output()
        .unwrap();
    assert!(queued.status.success());
    let served = serve(&s.db, &["--bind", "127.0.0.1:0"]);
    let mut sweep = sweep_command_fusing(&s, 1, "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let (mut snapshots, mut provisional) = (vec![], false);
    let started = Instant::now();
    while sweep.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the sweep hangs"
        );
        snapshots.push(snapshot(&dom(&served.url, profile.path())));
        let verdicts = get(&served.addr, "/verdicts");
        provisional |= verdicts.status == 200 && verdicts.body.contains("<b>provisional</b>");
    }
    assert!(sweep.wait().unwrap().success());
    let last = snapshot(&dom(&served.url, profile.path()));
    let ids: Vec<String> = query(&s.db, "SELECT id FROM runs");
    assert_eq!(
        (ids.len(), last.done),
        (8, 8),
        "the last snapshot shows every run done"
    );
    assert!(snapshots.len() >= 3, "{} snapshots", snapshots.len());
    let done: Vec<usize> = snapshots.iter().map(|s| s.done).collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    assert!(done.first() < done.last(), "the done count rises: {done:?}");
    assert!(
        snapshots
            .iter()
            .any(|s| ids.iter().any(|id| s.workers.contains(id.as_str()))),
        "a worker row shows the run it trains"
    );
    let grew = snapshots.windows(2).any(|w| {
        w[1].points
            .iter()
            .any(|(run, n)| w[0].points.iter().any(|(before, m)| before == run && n > m))
    });
    assert!(grew, "a running run's curve gains points");
    assert!(
        provisional,
        "the verdicts are labelled provisional while runs remain"
    );
    // The page is made in the background: the finished one is there within seconds.
    let waited = Instant::now();
    while !get(&served.addr, "/verdicts")
        .body
        .contains("every run has finished")
    {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "no final verdicts"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let verdicts = dom(&format!("{}verdicts", served.url), profile.path());
    assert!(
        verdicts.contains("every run has finished")
            && verdicts.contains("Verdict")
            && verdicts.contains("Which settings drive"),
        "{}",
        &verdicts[..verdicts.len().min(2000)]
    );
}

/// Serving a finished SQLite sweep, every endpoint asked, leaves its database byte for byte as
/// it was.
#[test]
fn serving_a_finished_sqlite_store_leaves_it_byte_identical() {
    let s = setup("layers = [2, 3]\nfilters = 4\nepochs = 2\n", 300, 8);
    assert!(run_sweep(&s, 1).status.success());
    let before = std::fs::read(&s.db).unwrap();
    let served = serve(&s.db, &[]);
    let id: String = query(&s.db, "SELECT id FROM runs LIMIT 1").remove(0);
    for path in [
        "/".to_owned(),
        "/api/progress".into(),
        "/api/runs?sort=final_val_loss&desc=1&layers=2".into(),
        format!("/api/curves?run={id}"),
        "/verdicts".into(),
    ] {
        let got = get(&served.addr, &path);
        assert_eq!(got.status, 200, "{path}: {}", got.body);
    }
    assert_eq!(
        get(&served.addr, "/api/runs?layers=two").status,
        400,
        "a wrong setting value is the query's fault"
    );
    drop(served);
    assert!(
        std::fs::read(&s.db).unwrap() == before,
        "the database changed"
    );
    let wal = s.db.with_extension("db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);
}

/// The server filters and sorts by settings from its own index of the runs' settings; every page
/// it gives equals the page the database gives for the same query (`Store::runs_table`), for
/// filters (a default matching configs that leave it out), sorts either way, status filters,
/// result sorts and offsets combined with them.
#[test]
fn pages_by_setting_equal_the_databases() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("s.db");
    let mut runs = vec![];
    for (i, layers) in [2, 4, 3].into_iter().enumerate() {
        for filters in [4, 8] {
            for dataset in ["mnist", "cifar10"] {
                for layout in [Layout::Sequential, Layout::Parallel] {
                    let mut config = synthetic::config(dataset, layout, filters, layers);
                    config.lr = [1e-3, 3e-4, 1e-3][i];
                    config.optimizer = if filters == 8 && layers == 4 {
                        Optimizer::Sgd
                    } else {
                        Optimizer::Adam
                    };
                    runs.push(Synthetic {
                        config,
                        q: 1.0 + runs.len() as f64 % 7.0,
                        train_loss: 0.3,
                        val_loss: 0.2 + (runs.len() * 37 % 11) as f64 / 10.0,
                        val_acc: 0.8,
                        seconds: 1.0,
                        diverged: false,
                    });
                }
            }
        }
    }
    synthetic::fill(&db, &runs, 5);
    let served = serve(&db, &[]);
    let store = store::open_reader(&Location::Sqlite(db.clone())).unwrap();
    let by_database = |q: RunsQuery| -> (Vec<String>, u64) {
        let (rows, total) = store.runs_table(&q).unwrap();
        (rows.into_iter().map(|r| r.id).collect(), total)
    };
    let setting = |name: &str, v: serde_json::Value| (name.to_owned(), v);
    let cases: Vec<(&str, RunsQuery)> = vec![
        (
            "layers=4",
            RunsQuery {
                settings: vec![setting("layers", 4.into())],
                ..Default::default()
            },
        ),
        (
            "optimizer=adam&dataset=mnist",
            RunsQuery {
                settings: vec![
                    setting("optimizer", "adam".into()),
                    setting("dataset", "mnist".into()),
                ],
                ..Default::default()
            },
        ),
        (
            "sort=lr",
            RunsQuery {
                sort: Some(SortKey::Setting("lr")),
                ..Default::default()
            },
        ),
        (
            "sort=layers&desc=1&offset=3&limit=7",
            RunsQuery {
                sort: Some(SortKey::Setting("layers")),
                descending: true,
                offset: 3,
                limit: 7,
                ..Default::default()
            },
        ),
        (
            "sort=optimizer",
            RunsQuery {
                sort: Some(SortKey::Setting("optimizer")),
                ..Default::default()
            },
        ),
        (
            "status=done&filters=8&sort=final_val_loss&desc=1",
            RunsQuery {
                status: Some(RunStatus::Done),
                settings: vec![setting("filters", 8.into())],
                sort: Some(SortKey::named("final_val_loss").unwrap()),
                descending: true,
                ..Default::default()
            },
        ),
        (
            "status=pending&sort=dataset",
            RunsQuery {
                status: Some(RunStatus::Pending),
                sort: Some(SortKey::Setting("dataset")),
                ..Default::default()
            },
        ),
    ];
    for (query, mut q) in cases {
        if q.limit == 0 {
            q.limit = 50;
        }
        let got = get(&served.addr, &format!("/api/runs?{query}"));
        assert_eq!(got.status, 200, "{query}: {}", got.body);
        let page: serde_json::Value = serde_json::from_str(&got.body).unwrap();
        let ids: Vec<String> = page["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        let (expected, total) = by_database(q);
        assert!(!expected.is_empty(), "{query} selects runs");
        assert_eq!(
            (ids, page["total"].as_u64().unwrap()),
            (expected, total),
            "{query}"
        );
    }
}

/// A non-loopback bind generates a token, printed once; every request without it is refused,
/// with it (query, cookie or bearer header) answered. The dashboard only reads.
#[test]
fn a_non_loopback_bind_refuses_requests_without_the_token() {
    let s = setup("layers = 2\nfilters = 4\nepochs = 1\n", 200, 8);
    assert!(run_sweep(&s, 1).status.success());
    let served = serve(&s.db, &["--bind", "0.0.0.0:0"]);
    let token = served
        .url
        .split("token=")
        .nth(1)
        .expect("a token in the URL");
    assert_eq!(token.len(), 32, "{}", served.url);
    for path in ["/", "/api/progress", "/api/runs", "/verdicts", "/nothing"] {
        assert_eq!(get(&served.addr, path).status, 401, "{path}");
        let wrong = format!("{path}?token={}", "0".repeat(32));
        assert_eq!(get(&served.addr, &wrong).status, 401, "{path}");
    }
    let page = get(&served.addr, &format!("/?token={token}"));
    assert_eq!(page.status, 200);
    assert!(
        page.head
            .contains(&format!("shallow_token={token}; HttpOnly; SameSite=Strict")),
        "{}",
        page.head
    );
    let cookie = format!("Cookie: shallow_token={token}");
    let bearer = format!("Authorization: Bearer {token}");
    for header in [&cookie, &bearer] {
        let got = request(&served.addr, "GET", "/api/progress", &[header]);
        assert_eq!(got.status, 200, "{header}");
        assert!(got.body.contains("\"runs\":2"), "{}", got.body);
    }
    assert_eq!(
        request(&served.addr, "POST", "/api/runs", &[&bearer]).status,
        405
    );
    // A token given on loopback is required there too.
    let given = serve(&s.db, &["--bind", "127.0.0.1:0", "--token", "sesame"]);
    assert_eq!(get(&given.addr, "/api/progress").status, 401);
    assert_eq!(get(&given.addr, "/api/progress?token=sesame").status, 200);
}

/// The password of a PostgreSQL URL appears in no output, even when the server cannot start.
#[test]
fn a_database_password_is_never_shown() {
    let out = Command::new(common::shallow_bin())
        .args(["serve", "postgres://alice:hunter2@127.0.0.1:1/results"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(
        text.contains("alice:***@127.0.0.1") && !text.contains("hunter2"),
        "{text}"
    );
}

/// With `--nets`, the runs table links every run's saved net and the file comes whole; only
/// `<hex id>.safetensors` names are served, never a path out of the folder.
#[test]
fn saved_nets_are_linked_and_served_and_nothing_else_is() {
    let s = setup(
        "layout = [\"sequential\", \"parallel\"]\nlayers = 1\nfilters = 2\n",
        60,
        6,
    );
    let nets = s.db.with_file_name("nets");
    let out = common::sweeps::sweep_command(&s, 1)
        .args(["--save-nets", nets.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(s.db.with_file_name("secret.safetensors"), "x").unwrap();
    let served = serve(
        &s.db,
        &["--bind", "127.0.0.1:0", "--nets", nets.to_str().unwrap()],
    );
    let page: serde_json::Value =
        serde_json::from_str(&get(&served.addr, "/api/runs").body).unwrap();
    let ids: Vec<String> = query(&s.db, "SELECT id FROM runs ORDER BY id");
    let mut linked: Vec<String> = page["nets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    linked.sort();
    assert_eq!(linked, ids);
    for id in &ids {
        let got = get(&served.addr, &format!("/nets/{id}.safetensors"));
        assert_eq!(got.status, 200);
        assert_eq!(
            got.bytes,
            std::fs::read(nets.join(format!("{id}.safetensors"))).unwrap()
        );
    }
    for path in [
        "/nets/..%2Fsecret.safetensors",
        "/nets/../secret.safetensors",
        "/nets/0123.safetensors",
        "/nets/",
    ] {
        assert_eq!(get(&served.addr, path).status, 404, "{path}");
    }
    let page = include_str!("../../src/serve/page.html");
    assert!(
        page.contains("nets/${r.id}.safetensors"),
        "the page links the files"
    );
}
