//! One suite for both results stores, SQLite and PostgreSQL (a real server: see
//! `tests/common/stores.rs`): claims, leases and fencing, the attempts cap, `--retry-failed`,
//! copying between backends, read-only opens, foreign and future databases, migration.
use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::stores::{self, TestStore, execute};
use common::synthetic::{Synthetic, config, result_of};
use shallow::data::Holdout;
use shallow::model::Layout;
use shallow::sweep::store::identity::{RunSpec, fusion_key};
use shallow::sweep::store::{
    self, Finish, Location, RunStatus, RunsQuery, SortKey, Store, WorkerInfo,
};
use shallow::train::RunConfig;

/// `n` pairs of runs, queued in pair order.
fn specs(n: usize) -> Vec<RunSpec> {
    specs_with(n, None)
}

/// `n` pairs of runs holding out `holdout` training examples.
fn specs_with(n: usize, holdout: Option<Holdout>) -> Vec<RunSpec> {
    (0..n)
        .flat_map(|i| [Layout::Sequential, Layout::Parallel].map(|l| config("tiny", l, 4, i + 1)))
        .map(|config| RunConfig { holdout, ..config })
        .map(RunSpec::of)
        .collect()
}

fn worker(name: &str) -> WorkerInfo {
    let mut w = WorkerInfo::this_process(1);
    w.id = format!("{}:{name}", w.id);
    w
}

fn synthetic(spec: &RunSpec) -> Synthetic {
    Synthetic {
        config: spec.config.clone(),
        q: 1.5,
        train_loss: 0.25 + spec.config.layers as f64 / 100.0,
        val_loss: 0.5,
        val_acc: 0.8,
        seconds: 2.0,
        diverged: false,
    }
}

/// Claims a run, records its two epochs and finishes it.
fn train_one(store: &mut dyn Store, w: &WorkerInfo) -> Option<String> {
    let run = store.claim(w).unwrap()?;
    let result = result_of(&synthetic(&run));
    for m in &result.epochs {
        store.record_epoch(&run.id, w, m).unwrap();
    }
    store.finish(&run.id, w, Finish::Trained(&result)).unwrap();
    Some(run.id)
}

fn status_of(store: &dyn Store, id: &str) -> RunStatus {
    store
        .runs()
        .unwrap()
        .iter()
        .find(|r| r.id == id)
        .unwrap()
        .status
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(super::stores::sqlite()) })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name(super::stores::postgres()) })*
        }
    };
}

both_backends!(
    concurrent_claims_never_overlap_and_follow_queue_order,
    a_lapsed_lease_requeues_the_run_and_fences_its_old_owner,
    a_renewed_lease_keeps_the_run,
    attempts_cap_marks_failed_and_retry_failed_requeues,
    readers_never_write_and_refuse_foreign_or_future_databases,
    concurrent_group_claims_take_whole_fusion_groups_once,
    a_claim_first_takes_back_the_runs_the_worker_still_holds,
    every_earlier_schema_version_is_read_and_migrated,
    pages_of_runs_and_their_epochs_cover_the_store_once_in_queue_order,
    the_runs_table_filters_sorts_and_pages_as_rust_does,
);

/// `shallow serve`'s table pages, computed by the database, equal the same selection made here
/// in Rust from every run: filters by status, setting (a default matching configs that leave it
/// out) and family, sorting by a result or a setting (missing values last, ties in queue order),
/// offsets; and one run's epochs.
fn the_runs_table_filters_sorts_and_pages_as_rust_does(t: TestStore) {
    let s = with_seven_trained(&t);
    let all = s.runs().unwrap();
    let ids = |rows: &[store::RunRow]| rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    let table = |q: RunsQuery| {
        let (rows, total) = s.runs_table(&RunsQuery { limit: 100, ..q }).unwrap();
        (ids(&rows), total)
    };
    let expect = |rows: Vec<&store::RunRow>| {
        let n = rows.len() as u64;
        (
            rows.into_iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
            n,
        )
    };
    assert_eq!(table(RunsQuery::default()), expect(all.iter().collect()));
    let (page, total) = s
        .runs_table(&RunsQuery {
            offset: 10,
            limit: 5,
            ..RunsQuery::default()
        })
        .unwrap();
    assert_eq!((ids(&page), total), (ids(&all[10..15]), 48));
    let done = RunsQuery {
        status: Some(RunStatus::Done),
        ..RunsQuery::default()
    };
    assert_eq!(
        table(done.clone()),
        expect(all.iter().filter(|r| r.status == RunStatus::Done).collect())
    );
    let setting = |name: &str, value: serde_json::Value| RunsQuery {
        settings: vec![(name.into(), value)],
        ..RunsQuery::default()
    };
    assert_eq!(
        table(setting("layers", 3.into())),
        expect(all.iter().filter(|r| r.config.layers == 3).collect())
    );
    assert_eq!(
        table(setting("lr", 2e-3.into())),
        expect(all.iter().filter(|r| r.config.lr == 2e-3).collect())
    );
    assert_eq!(table(setting("optimizer", "adam".into())).1, 48);
    assert_eq!(table(setting("optimizer", "sgd".into())).1, 0);
    let family = RunsQuery {
        pair_id: Some(all[0].pair_id.clone()),
        ..RunsQuery::default()
    };
    assert_eq!(
        table(family),
        expect(all.iter().filter(|r| r.pair_id == all[0].pair_id).collect())
    );
    // Sorted by a result, descending: the 7 trained runs by their loss, then the others.
    let mut by_loss: Vec<&store::RunRow> = all.iter().collect();
    by_loss.sort_by(|a, b| match (a.final_train_loss, b.final_train_loss) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (x, y) => y.is_some().cmp(&x.is_some()),
    });
    let sorted = RunsQuery {
        sort: Some(SortKey::named("final_train_loss").unwrap()),
        descending: true,
        ..RunsQuery::default()
    };
    assert_eq!(table(sorted), expect(by_loss));
    let mut by_lr: Vec<&store::RunRow> = all.iter().collect();
    by_lr.sort_by(|a, b| a.config.lr.total_cmp(&b.config.lr));
    let sorted = RunsQuery {
        sort: Some(SortKey::named("lr").unwrap()),
        ..RunsQuery::default()
    };
    assert_eq!(table(sorted), expect(by_lr));
    // Only listed queue positions, in the listed order; with a status filter and a result sort.
    let seqs: Vec<i64> = s
        .configs_page(0, 100)
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(seqs.len(), 48);
    let listed: Vec<i64> = seqs[..12].iter().rev().copied().collect();
    let within = RunsQuery {
        within: Some(listed.clone()),
        ..RunsQuery::default()
    };
    assert_eq!(table(within), expect(all[..12].iter().rev().collect()));
    let within_done = RunsQuery {
        within: Some(listed),
        status: Some(RunStatus::Done),
        sort: Some(SortKey::named("final_train_loss").unwrap()),
        ..RunsQuery::default()
    };
    let mut done_listed: Vec<&store::RunRow> = all[..12]
        .iter()
        .rev()
        .filter(|r| r.status == RunStatus::Done)
        .collect();
    done_listed.sort_by(|a, b| {
        a.final_train_loss
            .unwrap()
            .total_cmp(&b.final_train_loss.unwrap())
    });
    assert!(!done_listed.is_empty());
    assert_eq!(table(within_done), expect(done_listed));
    let trained = all.iter().find(|r| r.status == RunStatus::Done).unwrap();
    let epochs: Vec<_> = s.epochs_of(&trained.id).unwrap();
    let whole: Vec<_> = s
        .epochs()
        .unwrap()
        .into_iter()
        .filter(|e| e.run_id == trained.id)
        .collect();
    assert_eq!(epochs.len(), 2);
    assert_eq!(format!("{epochs:?}"), format!("{whole:?}"));
}

/// Reading in pages (as `copy` does, in bounded memory) gives every run once, in queue order,
/// with exactly the epochs a whole read gives.
fn pages_of_runs_and_their_epochs_cover_the_store_once_in_queue_order(t: TestStore) {
    let s = with_seven_trained(&t);
    let (all, all_epochs) = (s.runs().unwrap(), s.epochs().unwrap());
    assert_eq!(all.len(), 48);
    let (mut paged, mut paged_epochs, mut after) = (vec![], vec![], 0);
    loop {
        let (page, last) = s.runs_page(after, 5).unwrap();
        if page.is_empty() {
            assert_eq!(last, after);
            break;
        }
        assert!(page.len() <= 5 && last > after);
        paged_epochs.extend(s.epochs_between(after, last).unwrap());
        paged.extend(page);
        after = last;
    }
    let ids = |rows: &[store::RunRow]| rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&paged), ids(&all));
    let key = |e: &store::EpochRow| (e.run_id.clone(), e.metrics.epoch);
    let mut sorted: Vec<_> = paged_epochs.iter().map(key).collect();
    sorted.sort();
    assert_eq!(sorted, all_epochs.iter().map(key).collect::<Vec<_>>());
    assert_eq!(sorted.len(), 14);
}

/// A store of `fusable_specs()` in which one worker trained seven runs (48 runs, 14 epochs).
fn with_seven_trained(t: &TestStore) -> Box<dyn store::Store> {
    let mut s = store::open(&t.location).unwrap();
    s.add_runs("s", "", &fusable_specs()).unwrap();
    let w = worker("w");
    s.register_worker(&w).unwrap();
    for _ in 0..7 {
        train_one(s.as_mut(), &w);
    }
    s
}

/// The column names of `table`.
fn columns_of(location: &Location, table: &str) -> BTreeSet<String> {
    match location {
        Location::Sqlite(path) => {
            let conn = rusqlite::Connection::open(path).unwrap();
            let mut q = conn
                .prepare("SELECT name FROM pragma_table_info(?1)")
                .unwrap();
            q.query_map([table], |r| r.get(0))
                .unwrap()
                .map(|c| c.unwrap())
                .collect()
        }
        Location::Postgres(url) => ::postgres::Client::connect(url, ::postgres::NoTls)
            .unwrap()
            .query(
                "SELECT column_name::text FROM information_schema.columns
                 WHERE table_name = $1 AND table_schema = current_schema()",
                &[&table],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect(),
    }
}

/// Databases of every earlier schema version — versions 2 and 3 (its first and its last build)
/// as SQL dumps in each backend's dialect (the CREATE statements of those releases verbatim, then
/// the rows of `store-rows.sql`) — are
/// read as they are by a reader, and migrated step by step when a writer opens them: every run and
/// epoch kept, the migrated tables the same as a new database's, pending runs claimable. (Version
/// 1, SQLite only, is `databases_of_the_previous_release_are_read_and_migrated`.)
fn every_earlier_schema_version_is_read_and_migrated(fresh: TestStore) {
    let dialect = match fresh.location {
        Location::Sqlite(_) => "sqlite",
        Location::Postgres(_) => "postgres",
    };
    store::open(&fresh.location).unwrap();
    let new_tables = ["runs", "epochs", "workers", "sweeps", "checkpoints"]
        .map(|t| columns_of(&fresh.location, t));
    for version in ["v2", "v3-early", "v3", "v4"] {
        let t = match fresh.location {
            Location::Sqlite(_) => stores::sqlite(),
            Location::Postgres(_) => stores::postgres(),
        };
        let dump = format!("tests/fixtures/store-{version}.{dialect}.sql");
        execute(&t.location, &std::fs::read_to_string(&dump).unwrap());
        execute(
            &t.location,
            &std::fs::read_to_string("tests/fixtures/store-rows.sql").unwrap(),
        );
        let before = store::open_reader(&t.location).unwrap();
        let (runs, epochs) = (before.runs().unwrap(), before.epochs().unwrap());
        assert_eq!((runs.len(), epochs.len()), (6, 8), "{dump}");
        let done = runs.iter().filter(|r| r.status == RunStatus::Done).count();
        assert_eq!(done, 4, "{dump}");
        drop(before);
        let mut s = store::open(&t.location).unwrap();
        let same =
            |r: &store::RunRow| (r.id.clone(), r.status, r.final_val_loss, r.epochs_recorded);
        let after = s.runs().unwrap();
        assert_eq!(
            runs.iter().map(same).collect::<Vec<_>>(),
            after.iter().map(same).collect::<Vec<_>>(),
            "{dump}"
        );
        assert!(after.iter().all(|r| r.convergence.is_none()));
        assert_eq!(s.epochs().unwrap().len(), 8);
        let tables = ["runs", "epochs", "workers", "sweeps", "checkpoints"]
            .map(|n| columns_of(&t.location, n));
        assert_eq!(
            tables, new_tables,
            "{dump}: migrated tables differ from a new database's"
        );
        assert!(s.claim(&worker("w")).unwrap().is_some(), "{dump}");
    }
}

/// The backends' shared contract for a worker that claims while runs are still held under its
/// id (a claim whose answer it lost): it gets those runs again, their partial epochs gone, and
/// nothing new; once they are finished it claims pending runs as usual.
fn a_claim_first_takes_back_the_runs_the_worker_still_holds(t: TestStore) {
    let mut s = store::open(&t.location).unwrap();
    let queued = fusable_specs();
    s.add_runs("s", "", &queued).unwrap();
    let w = worker("forgetful");
    s.register_worker(&w).unwrap();
    let group = s.claim_group(&w, &|_| 3).unwrap();
    assert_eq!(group.len(), 3);
    let result = result_of(&synthetic(&group[0]));
    s.record_epoch(&group[0].id, &w, &result.epochs[0]).unwrap();
    let again = s.claim_group(&w, &|_| 3).unwrap();
    let ids = |g: &[RunSpec]| g.iter().map(|r| r.id.clone()).collect::<BTreeSet<_>>();
    assert_eq!(ids(&again), ids(&group));
    let epochs = s.epochs().unwrap();
    assert!(
        epochs.iter().all(|e| e.run_id != group[0].id),
        "partial epochs kept"
    );
    let running = s.status_counts().unwrap();
    assert!(running.contains(&(RunStatus::Running, 3)), "{running:?}");
    for run in &again {
        s.finish(&run.id, &w, Finish::Failed("test")).unwrap();
    }
    let next = s.claim_group(&w, &|_| 3).unwrap();
    assert_eq!(next.len(), 3);
    assert!(next.iter().all(|r| !ids(&group).contains(&r.id)));
}

/// 4 architectures × 2 layouts × 3 lrs × 2 seeds, queued with lr and seed outermost (so that a
/// fusion group's runs are far apart in the queue).
fn fusable_specs() -> Vec<RunSpec> {
    let mut out = vec![];
    for seed in [0, 1] {
        for lr in [1e-3, 2e-3, 3e-3] {
            for layers in 1..=4 {
                for layout in [Layout::Sequential, Layout::Parallel] {
                    let config = RunConfig {
                        lr,
                        seed,
                        ..config("tiny", layout, 4, layers)
                    };
                    out.push(RunSpec::of(config));
                }
            }
        }
    }
    out
}

fn concurrent_group_claims_take_whole_fusion_groups_once(t: TestStore) {
    let queued = fusable_specs();
    store::open(&t.location)
        .unwrap()
        .add_runs("s", "", &queued)
        .unwrap();
    let groups: Vec<Vec<Vec<RunSpec>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..5)
            .map(|i| {
                let location = t.location.clone();
                scope.spawn(move || {
                    let mut s = store::open(&location).unwrap();
                    let w = worker(&format!("g{i}"));
                    std::iter::from_fn(|| {
                        // Limit 4: each fusion group of 6 runs is claimed as 4 + 2.
                        let group = s.claim_group(&w, &|_| 4).unwrap();
                        for run in &group {
                            let result = result_of(&synthetic(run));
                            s.finish(&run.id, &w, Finish::Trained(&result)).unwrap();
                        }
                        (!group.is_empty()).then_some(group)
                    })
                    .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let groups: Vec<&Vec<RunSpec>> = groups.iter().flatten().collect();
    let ids: Vec<&str> = groups
        .iter()
        .flat_map(|g| g.iter().map(|r| r.id.as_str()))
        .collect();
    let distinct: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(
        (ids.len(), distinct.len()),
        (48, 48),
        "each run claimed once"
    );
    for group in &groups {
        let key = fusion_key(&group[0].config);
        assert!(
            group.iter().all(|r| fusion_key(&r.config) == key),
            "a group mixes fusion keys"
        );
    }
    // Concurrent claims may split a group (rows another claim holds are skipped), never mix
    // one or exceed the limit.
    assert!(groups.iter().all(|g| g.len() <= 4));
    // One worker alone: a limit of 1 is today's claim (one run, though its group is pending);
    // then every group comes whole (6), the first one's 5 remaining runs together.
    let mut s = store::open(&t.location).unwrap();
    let more: Vec<RunSpec> = fusable_specs()
        .into_iter()
        .map(|r| {
            let config = RunConfig {
                filters: 5,
                ..r.config
            };
            RunSpec::of(config)
        })
        .collect();
    s.add_runs("s2", "", &more).unwrap();
    let w = worker("one");
    let finish = |s: &mut Box<dyn Store + Send>, group: &[RunSpec]| {
        for run in group {
            let result = result_of(&synthetic(run));
            s.finish(&run.id, &w, Finish::Trained(&result)).unwrap();
        }
    };
    let first = s.claim_group(&w, &|_| 1).unwrap();
    assert_eq!(first.len(), 1);
    finish(&mut s, &first);
    let mut sizes = vec![];
    loop {
        let group = s.claim_group(&w, &|_| 6).unwrap();
        if group.is_empty() {
            break;
        }
        let key = fusion_key(&group[0].config);
        assert!(group.iter().all(|r| fusion_key(&r.config) == key));
        sizes.push(group.len());
        finish(&mut s, &group);
    }
    sizes.sort();
    assert_eq!(sizes, [5, 6, 6, 6, 6, 6, 6, 6]);
}

fn concurrent_claims_never_overlap_and_follow_queue_order(t: TestStore) {
    let queued = specs(20);
    store::open(&t.location)
        .unwrap()
        .add_runs("s", "", &queued)
        .unwrap();
    let claimed: Vec<Vec<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let location = t.location.clone();
                scope.spawn(move || {
                    let mut s = store::open(&location).unwrap();
                    let w = worker(&format!("w{i}"));
                    std::iter::from_fn(|| train_one(s.as_mut(), &w)).collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<&String> = claimed.iter().flatten().collect();
    let distinct: BTreeSet<&String> = all.iter().copied().collect();
    assert_eq!(
        (all.len(), distinct.len()),
        (40, 40),
        "each run claimed once"
    );
    // One worker alone takes the runs in queue order, the two layouts of a pair in turn.
    let t2 = if matches!(t.location, Location::Sqlite(_)) {
        stores::sqlite()
    } else {
        stores::postgres()
    };
    let mut s = store::open(&t2.location).unwrap();
    s.add_runs("s", "", &queued).unwrap();
    let w = worker("solo");
    let order: Vec<String> = std::iter::from_fn(|| train_one(s.as_mut(), &w)).collect();
    assert_eq!(
        order,
        queued.iter().map(|r| r.id.clone()).collect::<Vec<_>>()
    );
    let runs = s.runs().unwrap();
    assert!(
        runs.iter()
            .all(|r| r.status == RunStatus::Done && r.epochs_recorded == 2)
    );
}

fn a_lapsed_lease_requeues_the_run_and_fences_its_old_owner(t: TestStore) {
    let mut s = store::open(&t.location).unwrap();
    s.add_runs("s", "", &specs(1)).unwrap();
    let (old, new) = (worker("old"), worker("new"));
    s.register_worker(&old).unwrap();
    let run = s.claim(&old).unwrap().unwrap();
    let result = result_of(&synthetic(&run));
    s.record_epoch(&run.id, &old, &result.epochs[0]).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(s.requeue_abandoned(Duration::from_secs(1), 3).unwrap(), 1);
    assert_eq!(s.requeue_abandoned(Duration::from_secs(1), 3).unwrap(), 0);
    assert_eq!(status_of(s.as_ref(), &run.id), RunStatus::Pending);
    assert_eq!(s.epochs().unwrap().len(), 0, "partial epochs are cleared");
    s.register_worker(&new).unwrap();
    assert_eq!(s.claim(&new).unwrap().unwrap().id, run.id);
    // The old owner learns it lost the run at its next write, and nothing it sends lands.
    let err = s
        .record_epoch(&run.id, &old, &result.epochs[1])
        .unwrap_err();
    assert!(format!("{err:#}").contains("no longer assigned"), "{err:#}");
    assert!(s.finish(&run.id, &old, Finish::Trained(&result)).is_err());
    for m in &result.epochs {
        s.record_epoch(&run.id, &new, m).unwrap();
    }
    s.finish(&run.id, &new, Finish::Trained(&result)).unwrap();
    let row = &s.runs().unwrap()[0];
    assert_eq!(
        (row.status, row.attempts, row.epochs_recorded),
        (RunStatus::Done, 2, 2)
    );
    assert_eq!(row.worker.as_deref(), Some(new.id.as_str()));
}

fn a_renewed_lease_keeps_the_run(t: TestStore) {
    let mut s = store::open(&t.location).unwrap();
    s.add_runs("s", "", &specs(1)).unwrap();
    let w = worker("alive");
    s.register_worker(&w).unwrap();
    let run = s.claim(&w).unwrap().unwrap();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(700));
        s.heartbeat(&w).unwrap();
        assert_eq!(s.requeue_abandoned(Duration::from_secs(1), 3).unwrap(), 0);
    }
    assert_eq!(status_of(s.as_ref(), &run.id), RunStatus::Running);
}

fn attempts_cap_marks_failed_and_retry_failed_requeues(t: TestStore) {
    let mut s = store::open(&t.location).unwrap();
    s.add_runs("s", "", &specs(1)[..1]).unwrap();
    for attempt in 1..=2 {
        let w = worker(&format!("dies{attempt}"));
        s.register_worker(&w).unwrap();
        let run = s.claim(&w).unwrap().unwrap();
        // The parent reaped the worker: its run is released at once.
        assert_eq!(s.release_worker(&w.id, 2).unwrap(), 1);
        let expected = if attempt < 2 {
            RunStatus::Pending
        } else {
            RunStatus::Failed
        };
        assert_eq!(status_of(s.as_ref(), &run.id), expected);
    }
    let row = &s.runs().unwrap()[0];
    assert!(
        row.error
            .as_deref()
            .unwrap()
            .contains("died or went silent on it 2 times")
    );
    assert!(
        s.claim(&worker("late")).unwrap().is_none(),
        "a failed run is not claimed"
    );
    assert_eq!(s.retry_failed().unwrap(), 1);
    let row = &s.runs().unwrap()[0];
    assert_eq!((row.status, row.attempts), (RunStatus::Pending, 0));
    assert!(train_one(s.as_mut(), &worker("retry")).is_some());
}

fn readers_never_write_and_refuse_foreign_or_future_databases(t: TestStore) {
    // A database that is not ours: refused by readers and writers, and left as it was.
    execute(
        &t.location,
        "CREATE TABLE other (x INTEGER); INSERT INTO other VALUES (1);",
    );
    let snapshot = snapshot(&t.location);
    for err in [
        store::open_reader(&t.location).err().unwrap(),
        store::open(&t.location).err().unwrap(),
    ] {
        let text = format!("{err:#}");
        assert!(text.contains("not a shallow results database"), "{text}");
        assert!(
            !text.contains("shallow-test"),
            "the password never shows: {text}"
        );
    }
    assert_eq!(snapshot, self::snapshot(&t.location));
    execute(&t.location, "DROP TABLE other;");
    // An empty database: a reader refuses it and creates nothing.
    assert!(store::open_reader(&t.location).is_err());
    assert_eq!(snapshot_tables(&t.location), Vec::<String>::new());
    // Ours: a reader reads it; a reader's connection cannot write.
    let mut w = store::open(&t.location).unwrap();
    w.add_runs("s", "", &specs(1)).unwrap();
    train_one(w.as_mut(), &worker("w"));
    let mut r = store::open_reader(&t.location).unwrap();
    assert_eq!(r.runs().unwrap().len(), 2);
    assert!(
        r.add_runs("s", "", &specs(2)).is_err(),
        "a reader cannot write"
    );
    // From a newer release: refused with a clear message.
    execute(
        &t.location,
        "UPDATE shallow_meta SET value = '99' WHERE key = 'schema_version';",
    );
    for err in [
        store::open_reader(&t.location).err().unwrap(),
        store::open(&t.location).err().unwrap(),
    ] {
        assert!(format!("{err:#}").contains("newer release"), "{err:#}");
    }
}

/// The tables of a database with their row counts.
fn snapshot(location: &Location) -> Vec<String> {
    let mut out = snapshot_tables(location);
    if let Location::Sqlite(path) = location {
        out.push(format!("{:?}", std::fs::read(path).ok()));
        let siblings: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        out.push(format!("{siblings:?}"));
    }
    out
}

fn snapshot_tables(location: &Location) -> Vec<String> {
    match location {
        Location::Sqlite(path) => {
            if !path.exists() {
                return Vec::new();
            }
            let c = rusqlite::Connection::open(path).unwrap();
            let mut q = c
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .unwrap();
            q.query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        }
        Location::Postgres(url) => {
            let mut c = ::postgres::Client::connect(url, ::postgres::NoTls).unwrap();
            c.query(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = current_schema() ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
        }
    }
}

/// SQLite → PostgreSQL → SQLite keeps every id, metric, convergence record and epoch (held-out
/// metrics included); copying twice adds nothing.
#[test]
fn copy_round_trips_between_backends() {
    let (a, b, c) = (stores::sqlite(), stores::postgres(), stores::sqlite());
    let mut s = store::open(&a.location).unwrap();
    let mut runs = specs_with(1, Some(Holdout::Count(10)));
    runs.extend(specs(2));
    s.add_runs("copied", "[runs]\nlayers = 1\n", &runs).unwrap();
    let w = worker("w");
    for _ in 0..4 {
        train_one(s.as_mut(), &w);
    }
    s.claim(&w).unwrap().unwrap(); // one in progress: arrives pending
    drop(s);
    assert_eq!(store::copy(&a.location, &b.location).unwrap().new, 6);
    assert_eq!(store::copy(&a.location, &b.location).unwrap().new, 0);
    assert_eq!(store::copy(&b.location, &c.location).unwrap().new, 6);
    let (src, dst) = (
        store::open_reader(&a.location).unwrap(),
        store::open_reader(&c.location).unwrap(),
    );
    let key = |r: &store::RunRow| {
        (
            r.id.clone(),
            r.pair_id.clone(),
            r.config.clone(),
            r.final_train_loss,
            r.final_val_loss,
            r.final_val_acc,
            r.params,
            r.q,
            r.epochs_recorded,
            r.convergence.clone(),
        )
    };
    let (from, to) = (src.runs().unwrap(), dst.runs().unwrap());
    assert_eq!(
        from.iter().map(key).collect::<Vec<_>>(),
        to.iter().map(key).collect::<Vec<_>>()
    );
    let statuses: Vec<RunStatus> = to.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == RunStatus::Done).count(),
        4
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == RunStatus::Pending)
            .count(),
        2
    );
    let epochs = |s: &dyn Store| {
        s.epochs()
            .unwrap()
            .into_iter()
            .map(|e| {
                (
                    e.run_id,
                    e.metrics.epoch,
                    e.metrics.train_loss.to_bits(),
                    e.metrics.val_acc.to_bits(),
                    e.metrics.holdout_loss.map(f64::to_bits),
                    e.metrics.holdout_acc.map(f64::to_bits),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(epochs(src.as_ref()), epochs(dst.as_ref()));
    let held_out = |s: &dyn Store| {
        let with = |e: &&store::EpochRow| e.metrics.holdout_loss.is_some();
        s.epochs().unwrap().iter().filter(with).count()
    };
    assert!(held_out(dst.as_ref()) > 0, "held-out epochs copied");
    assert!(
        to.iter().any(|r| r.convergence.is_some()),
        "convergence records copied"
    );
    assert_eq!(
        dst.sweeps().unwrap(),
        vec![store::SweepRecord {
            name: "copied".into(),
            grid: "[runs]\nlayers = 1\n".into()
        }]
    );
}

/// A database made by the release before schema versions (`tests/fixtures/store-v1.db`: 4 done
/// runs, 2 pending) is read as it is and migrated in place by the first writer.
#[test]
fn databases_of_the_previous_release_are_read_and_migrated() {
    let t = stores::sqlite();
    let Location::Sqlite(path) = &t.location else {
        unreachable!()
    };
    std::fs::copy("tests/fixtures/store-v1.db", path).unwrap();
    let before = store::open_reader(&t.location).unwrap().runs().unwrap();
    assert_eq!(before.len(), 6);
    assert_eq!(
        before
            .iter()
            .filter(|r| r.status == RunStatus::Done)
            .count(),
        4
    );
    assert!(!snapshot_tables(&t.location).contains(&"shallow_meta".to_owned()));
    let mut s = store::open(&t.location).unwrap();
    let after = s.runs().unwrap();
    let same = |r: &store::RunRow| (r.id.clone(), r.status, r.final_val_loss, r.epochs_recorded);
    assert_eq!(
        before.iter().map(same).collect::<Vec<_>>(),
        after.iter().map(same).collect::<Vec<_>>()
    );
    assert!(snapshot_tables(&t.location).contains(&"shallow_meta".to_owned()));
    // The migrated database goes on working: its pending runs can be claimed.
    assert!(s.claim(&worker("w")).unwrap().is_some());
}
