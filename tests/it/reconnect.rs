//! A PostgreSQL store whose server connection is cut (a server restart, a failover, an
//! administrator's `pg_terminate_backend`) reconnects and carries on: no call of a worker's
//! fails, so no run is marked failed for what was only a dropped connection. Needs the test
//! server of `tests/common/stores.rs`.
use crate::common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::stores;
use common::synthetic::{Synthetic, config, result_of};
use shallow::model::Layout;
use shallow::sweep::store::identity::RunSpec;
use shallow::sweep::store::{self, Finish, Location, RunStatus, Store, WorkerInfo};
use shallow::train::RunResult;

/// Terminates the connections to the database of `url` that `which` (SQL on
/// `pg_stat_activity`) selects, other than this one, as a server shutting down does (SQLSTATE
/// 57P01); waits until the server has closed them and returns how many it cut.
fn cut_connections(admin: &mut postgres::Client, which: &str) -> i64 {
    admin
        .query_one(
            &format!(
                "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid() AND {which}) t"
            ),
            &[],
        )
        .unwrap()
        .get(0)
}

fn admin(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

/// A queued run, claimed by the worker of this process, and a result for it.
fn claimed(s: &mut dyn Store) -> (WorkerInfo, RunSpec, RunResult) {
    let config = config("tiny", Layout::Sequential, 4, 2);
    let spec = RunSpec::of(config);
    let result = result_of(&Synthetic {
        config: spec.config.clone(),
        q: 1.5,
        train_loss: 0.3,
        val_loss: 0.5,
        val_acc: 0.8,
        seconds: 2.0,
        diverged: false,
    });
    s.add_runs("s", "", std::slice::from_ref(&spec)).unwrap();
    let w = WorkerInfo::this_process(1);
    s.register_worker(&w).unwrap();
    let run = s.claim(&w).unwrap().expect("the queued run");
    (w, run, result)
}

/// Trains `run` to the end through every kind of worker call, `cut` before each, and checks
/// that it ends done with every epoch once.
fn every_call_after(
    cut: &mut dyn FnMut(),
    s: &mut dyn Store,
    w: &WorkerInfo,
    run: &RunSpec,
    result: &RunResult,
) {
    for m in &result.epochs {
        cut();
        s.record_epoch(&run.id, w, m).unwrap();
    }
    cut();
    s.heartbeat(w).unwrap();
    cut();
    assert_eq!(s.requeue_abandoned(Duration::from_secs(60), 3).unwrap(), 0);
    cut();
    s.finish(&run.id, w, Finish::Trained(result)).unwrap();
    cut();
    assert_done(s, result);
}

fn assert_done(s: &dyn Store, result: &RunResult) {
    let rows = s.runs().unwrap();
    assert_eq!(
        (rows[0].status, rows[0].attempts, rows[0].epochs_recorded),
        (RunStatus::Done, 1, result.epochs.len() as i64)
    );
}

/// Transactions the server rolls back as a deadlock victim (40P01) or a serialization failure
/// (40001) — injected by triggers that fail the first time each table is written — are retried:
/// every call succeeds and the run ends done with each epoch once.
#[test]
fn deadlock_victims_and_serialization_failures_are_retried() {
    let t = stores::postgres();
    let mut s = store::open(&t.location).unwrap();
    let (w, run, result) = claimed(s.as_mut());
    admin(t.url())
        .batch_execute(
            "CREATE SEQUENCE writes;
             CREATE FUNCTION fail_every_third() RETURNS trigger AS $$
             BEGIN
               IF nextval('writes') % 3 = 1 THEN
                 RAISE EXCEPTION 'injected' USING ERRCODE = TG_ARGV[0];
               END IF;
               RETURN NEW;
             END $$ LANGUAGE plpgsql;
             CREATE TRIGGER deadlock BEFORE INSERT ON epochs
               FOR EACH ROW EXECUTE FUNCTION fail_every_third('40P01');
             CREATE TRIGGER serialization BEFORE UPDATE ON workers
               FOR EACH ROW EXECUTE FUNCTION fail_every_third('40001');",
        )
        .unwrap();
    every_call_after(&mut || {}, s.as_mut(), &w, &run, &result);
    let writes: i64 = admin(t.url())
        .query_one("SELECT last_value FROM writes", &[])
        .unwrap()
        .get(0);
    assert!(
        writes > result.epochs.len() as i64,
        "no failure was injected"
    );
}

/// Connections cut while idle, between calls.
#[test]
fn every_call_after_a_cut_connection_reconnects_and_succeeds() {
    let t = stores::postgres();
    let mut admin = admin(t.url());
    let mut s = store::open(&t.location).unwrap();
    let (w, run, result) = claimed(s.as_mut());
    let mut cut = || assert_eq!(cut_connections(&mut admin, "true"), 1);
    every_call_after(&mut cut, s.as_mut(), &w, &run, &result);
}

/// A connection cut while a call waits for the server's answer: the call gets the server's
/// "terminating connection" error before the client has seen the connection close.
#[test]
fn a_call_in_flight_when_its_connection_is_cut_is_retried() {
    let t = stores::postgres();
    let mut s = store::open(&t.location).unwrap();
    let (w, run, result) = claimed(s.as_mut());
    for m in &result.epochs {
        // Hold the run's row, so that the store's write waits on it; then cut the waiting
        // connection and let the row go.
        let mut holder = admin(t.url());
        let mut tx = holder.transaction().unwrap();
        tx.execute("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE", &[&run.id])
            .unwrap();
        let url = t.url().to_owned();
        let cutter = std::thread::spawn(move || {
            let mut admin = admin(&url);
            let started = std::time::Instant::now();
            while cut_connections(&mut admin, "wait_event_type = 'Lock'") == 0 {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "no call waited"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        std::thread::scope(|scope| {
            scope.spawn(|| {
                cutter.join().unwrap();
                tx.rollback().unwrap();
            });
            s.record_epoch(&run.id, &w, m).unwrap();
        });
    }
    s.finish(&run.id, &w, Finish::Trained(&result)).unwrap();
    assert_done(s.as_ref(), &result);
}

/// A TCP proxy in front of the test server. When `cut` is set, it answers the next request of a
/// client as a server shutting down does (a FATAL error, SQLSTATE 57P01) but closes the socket
/// only a second later: the window in which a call has the error and the client has not yet
/// seen the connection close.
struct Proxy {
    url: String,
    cut: Arc<AtomicBool>,
}

fn proxy(url: &str) -> Proxy {
    let config: postgres::Config = url.parse().unwrap();
    let (host, port) = match (&config.get_hosts()[0], config.get_ports()[0]) {
        (postgres::config::Host::Tcp(host), port) => (host.clone(), port),
        other => panic!("the test server is reached over TCP, not {other:?}"),
    };
    let upstream = format!("{host}:{port}");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let local = listener.local_addr().unwrap().to_string();
    let cut = Arc::new(AtomicBool::new(false));
    let flag = cut.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let client = client.unwrap();
            let server = TcpStream::connect(&upstream).unwrap();
            let (c, s) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || pump(s, c));
            let flag = flag.clone();
            std::thread::spawn(move || pump_or_cut(client, server, &flag));
        }
    });
    Proxy {
        url: url.replacen(&format!("{host}:{port}"), &local, 1),
        cut,
    }
}

/// Copies `from` to `to` until either side closes.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 8192];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Copies the client's requests to the server until `cut` is set; then answers the next request
/// with a FATAL error and closes both sides a second later.
fn pump_or_cut(mut client: TcpStream, mut server: TcpStream, cut: &AtomicBool) {
    let mut buf = [0u8; 8192];
    while let Ok(n @ 1..) = client.read(&mut buf) {
        if cut.swap(false, Ordering::SeqCst) {
            let mut fields = Vec::new();
            for (kind, text) in [
                (b'S', "FATAL"),
                (b'V', "FATAL"),
                (b'C', "57P01"),
                (b'M', "terminating connection due to administrator command"),
            ] {
                fields.push(kind);
                fields.extend_from_slice(text.as_bytes());
                fields.push(0);
            }
            fields.push(0);
            let mut message = vec![b'E'];
            message.extend_from_slice(&(fields.len() as i32 + 4).to_be_bytes());
            message.extend_from_slice(&fields);
            let _ = client.write_all(&message);
            std::thread::sleep(Duration::from_secs(1));
            break;
        }
        if server.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = server.shutdown(Shutdown::Both);
    let _ = client.shutdown(Shutdown::Both);
}

/// A connection whose FATAL error comes before its close, for every kind of call.
#[test]
fn a_call_that_gets_the_servers_fatal_error_before_the_close_is_retried() {
    let t = stores::postgres();
    let proxy = proxy(t.url());
    let mut s = store::open(&Location::Postgres(proxy.url.clone())).unwrap();
    let mut cut = || proxy.cut.store(true, Ordering::SeqCst);
    cut();
    let (w, run, result) = claimed(s.as_mut());
    every_call_after(&mut cut, s.as_mut(), &w, &run, &result);
}
