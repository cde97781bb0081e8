//! Fresh results stores of both backends: a SQLite file in a temporary folder, or a new database
//! on the PostgreSQL server named by `$SHALLOW_TEST_PG` (`scripts/pg-test-server.sh` starts one).
use shallow::sweep::store::Location;

pub struct TestStore {
    pub location: Location,
    _tmp: tempfile::TempDir,
}

impl TestStore {
    /// The connection URL of a PostgreSQL test store.
    pub fn url(&self) -> &str {
        match &self.location {
            Location::Postgres(url) => url,
            Location::Sqlite(path) => {
                panic!("{} is a SQLite store, not PostgreSQL", path.display())
            }
        }
    }
}

pub fn sqlite() -> TestStore {
    let tmp = tempfile::tempdir().unwrap();
    TestStore {
        location: Location::Sqlite(tmp.path().join("results.db")),
        _tmp: tmp,
    }
}

/// The server's admin URL. Without one the test fails, saying what to run.
pub fn pg_admin_url() -> String {
    std::env::var("SHALLOW_TEST_PG").unwrap_or_else(|_| {
        panic!(
            "PostgreSQL tests need a server: apt-get install postgresql, then \
             eval \"$(scripts/pg-test-server.sh)\" (sets SHALLOW_TEST_PG)"
        )
    })
}

/// A new, empty database on the test server.
pub fn postgres() -> TestStore {
    let admin = pg_admin_url();
    let mut client = postgres::Client::connect(&admin, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot reach the PostgreSQL test server ({e}); start it with eval \"$(scripts/pg-test-server.sh)\""));
    let name = format!("shallow_test_{:016x}", rand::random::<u64>());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let base = admin.rsplit_once('/').unwrap().0;
    TestStore {
        location: Location::Postgres(format!("{base}/{name}")),
        _tmp: tempfile::tempdir().unwrap(),
    }
}

/// Runs a statement on a test database directly (to set up foreign or future schemas).
pub fn execute(location: &Location, sql: &str) {
    match location {
        Location::Sqlite(path) => rusqlite::Connection::open(path)
            .unwrap()
            .execute_batch(sql)
            .unwrap(),
        Location::Postgres(url) => postgres::Client::connect(url, postgres::NoTls)
            .unwrap()
            .batch_execute(sql)
            .unwrap(),
    }
}
