//! `shallow serve`: a read-only dashboard over a results store, for a sweep's progress while it
//! runs. The store is opened read-only, once per request thread (never created, migrated or
//! written); the page is embedded in the binary (no CDN: cluster login nodes have no internet)
//! and polls the JSON endpoints every few seconds.
mod api;
mod auth;
mod index;
mod verdicts;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tiny_http::{Header, Request, Response};

use crate::model::saved;
use crate::sweep::inspect;
use crate::sweep::store::{self, Location, Store};

const PAGE: &str = include_str!("page.html");
/// Requests answered at once: a slow store query does not hold up the page's other requests.
const HANDLERS: usize = 4;

/// What `shallow serve` was asked for.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub db: Location,
    pub bind: SocketAddr,
    /// Required of every request when given; generated when `bind` is not a loopback address.
    pub token: Option<String>,
    /// The workers' lease: a run whose worker has been silent this long shows as abandoned.
    pub lease: Duration,
    /// The folder of the runs' saved nets (`--save-nets`), offered for download.
    pub nets: Option<std::path::PathBuf>,
}

/// A dashboard listening on its address.
pub struct Server {
    http: tiny_http::Server,
    options: ServeOptions,
    verdicts: std::sync::Arc<verdicts::Verdicts>,
    settings: index::SettingsIndex,
}

impl Server {
    /// Checks that the store can be read, then listens (port 0 picks a free port).
    pub fn start(mut options: ServeOptions) -> Result<Server> {
        store::open_reader(&options.db)?;
        options.token = auth::token_for(options.bind, options.token.take());
        let http = tiny_http::Server::http(options.bind)
            .map_err(|e| anyhow!("cannot listen on {}: {e}", options.bind))?;
        Ok(Server {
            http,
            options,
            verdicts: verdicts::Verdicts::new()?,
            settings: index::SettingsIndex::default(),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> Result<SocketAddr> {
        self.http
            .server_addr()
            .to_ip()
            .context("the server listens on no IP address")
    }

    /// The token requests must carry, if any.
    pub fn token(&self) -> Option<&str> {
        self.options.token.as_deref()
    }

    /// Answers requests until the process ends.
    pub fn run(&self) {
        // The verdicts take seconds on a large store: they are started now, beside the settings
        // index, so that the first request for them is likelier to find them made.
        let started = store::open_reader(&self.options.db)
            .and_then(|store| self.verdicts.page(store.as_ref(), &self.options.db));
        if let Err(e) = started {
            tracing::warn!("making the verdicts: {e:#}");
        }
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let built = store::open_reader(&self.options.db)
                    .and_then(|store| self.settings.catch_up(store.as_ref()));
                if let Err(e) = built {
                    tracing::warn!("reading the runs' settings: {e:#}");
                }
            });
            for _ in 0..HANDLERS {
                scope.spawn(|| {
                    // This thread's connection to the store, opened again after a failure.
                    let mut reader = None;
                    while let Ok(request) = self.http.recv() {
                        let url = request.url().to_owned();
                        if let Err(e) = self.answer(request, &mut reader) {
                            tracing::warn!("answering {}: {e:#}", path_of(&url));
                        }
                    }
                });
            }
        });
    }

    fn answer(&self, request: Request, reader: &mut Option<Box<dyn Store>>) -> Result<()> {
        let (path, query) = split_url(request.url());
        let query_token = query
            .iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.clone());
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|h| (h.field.to_string(), h.value.to_string()))
            .collect();
        let token = self.options.token.as_deref();
        if !auth::allowed(token, query_token.as_deref(), &headers) {
            let text = "this dashboard needs its token: open the address `shallow serve` printed \
                        (…/?token=…), or send `Authorization: Bearer TOKEN`";
            return Ok(request.respond(text_response(401, text))?);
        }
        if *request.method() != tiny_http::Method::Get {
            return Ok(request.respond(text_response(405, "the dashboard only reads"))?);
        }
        let response = match path.as_str() {
            "/" => {
                let page = html_response(PAGE);
                match (&query_token, token) {
                    // Keeps the token for the page's own requests, never readable by scripts.
                    (Some(t), Some(_)) => page.with_header(header(
                        "Set-Cookie",
                        &format!("{}={t}; HttpOnly; SameSite=Strict; Path=/", auth::COOKIE),
                    )),
                    _ => page,
                }
            }
            "/api/progress" | "/api/runs" | "/api/curves" | "/verdicts" => {
                let answered = self.read(&path, &query, reader);
                if answered.status_code().0 == 503 {
                    // The connection may be what failed (a restarted PostgreSQL).
                    *reader = None;
                }
                answered
            }
            _ => match path.strip_prefix("/nets/").map(|file| self.net(file)) {
                Some(Some(bytes)) => Response::from_data(bytes)
                    .with_header(header("Content-Type", "application/octet-stream"))
                    .with_header(header("Cache-Control", "no-store"))
                    .with_header(header("X-Content-Type-Options", "nosniff")),
                _ => text_response(404, "no such page"),
            },
        };
        Ok(request.respond(response)?)
    }

    /// The bytes of the saved net `file` (`<run id>.safetensors`), if `--nets` holds it. Only
    /// such names are served: a run id is hexadecimal, so no path can leave the folder.
    fn net(&self, file: &str) -> Option<Vec<u8>> {
        let (id, extension) = file.rsplit_once('.')?;
        let plain = !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit());
        let dir = self
            .options
            .nets
            .as_ref()
            .filter(|_| plain && extension == saved::EXTENSION)?;
        std::fs::read(saved::file_in(dir, id)).ok()
    }

    /// The answer to a request that reads the store, through this thread's `reader`.
    fn read(
        &self,
        path: &str,
        query: &[(String, String)],
        reader: &mut Option<Box<dyn Store>>,
    ) -> Response<std::io::Cursor<Vec<u8>>> {
        let opened = match reader.take() {
            Some(store) => store,
            None => match store::open_reader(&self.options.db) {
                Ok(store) => store,
                Err(e) => return text_response(503, &format!("{e:#}")),
            },
        };
        let store: &dyn Store = &**reader.insert(opened);
        match path {
            "/api/progress" => json(inspect::progress(
                store,
                &self.options.db,
                self.options.lease,
            )),
            "/api/runs" => json(api::runs(
                store,
                &self.settings,
                query,
                self.options.nets.as_deref(),
            )),
            "/api/curves" => json(api::curves(store, query)),
            _ => match self.verdicts.page(store, &self.options.db) {
                Ok(page) => html_response(&page),
                Err(e) => text_response(503, &format!("{e:#}")),
            },
        }
    }
}

/// The path of a request URL, and its query parameters.
fn split_url(url: &str) -> (String, Vec<(String, String)>) {
    let parsed = url::Url::parse("http://dashboard").and_then(|base| base.join(url));
    match parsed {
        Ok(u) => (u.path().to_owned(), u.query_pairs().into_owned().collect()),
        Err(_) => (String::new(), vec![]),
    }
}

/// A value as JSON, or the error that kept it from being read: a bad query (400) or a store
/// that cannot be read now (503); either message names the cause, never a password.
fn json<T: serde::Serialize>(value: Result<T>) -> Response<std::io::Cursor<Vec<u8>>> {
    match value.and_then(|v| Ok(serde_json::to_string(&v)?)) {
        Ok(text) => json_response(&text),
        Err(e) => {
            let status = if e.chain().any(|c| c.is::<api::BadQuery>()) {
                400
            } else {
                503
            };
            text_response(status, &format!("{e:#}"))
        }
    }
}

/// A URL for a log line: its path only (the query may hold the token).
fn path_of(url: &str) -> &str {
    url.split('?').next().unwrap_or("")
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

/// Headers of every answer: never cached, never sniffed into another type.
fn respond(body: String, status: u16, kind: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", kind))
        .with_header(header("Cache-Control", "no-store"))
        .with_header(header("X-Content-Type-Options", "nosniff"))
}

fn text_response(status: u16, text: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    respond(format!("{text}\n"), status, "text/plain; charset=utf-8")
}

fn html_response(html: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    respond(html.to_owned(), 200, "text/html; charset=utf-8")
}

fn json_response(json: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    respond(json.to_owned(), 200, "application/json")
}
