//! A local fake of the CDN providers' APIs, for tests, `purgeq demo`, and operators who want to
//! try a pipeline without spending real quota.
//!
//! It speaks the providers' real wire format (paths, signatures, codes, headers), so any client of
//! the real APIs can use it, and it can inject the faults a real deployment meets: error statuses,
//! provider error codes, quota exhaustion, rate limits, stalls, dropped connections and garbage.
//!
//! One listener serves every provider: each provider module ([`qiniu`], [`pan123`]) owns its
//! paths, state and answers; this module owns the server, the fault plan and the operator
//! endpoints:
//!
//! - `GET /_emulator/stats`: [`Stats`] as JSON.
//! - `POST /_emulator/reset-quota`: every daily quota back to full.
//! - `POST /_emulator/faults`: replace the [`FaultPlan`] (JSON body).
//!
//! Qiniu's accepted purges become tasks that its task lists report ([`qiniu_list`]).
//!
//! Invariants:
//! - A fault that "processes" a request ([`FaultKind::DropAfter`], and [`FaultKind::Slow`] once
//!   its delay is over) changes state exactly as a normal request would, so stats show it.
//! - State lives behind one mutex that is never held across an `.await`.
//! - Returning `Err` from the service makes hyper drop the connection without an answer: that is
//!   how the dropped-connection faults are made.

pub mod fault;
pub mod pan123;
pub mod qiniu;
pub mod qiniu_list;
mod qiniu_quota;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use fault::{FaultKind, FaultPlan, RandomFaults, ScriptedFaults};

/// Request bodies larger than this are refused: a full purge request is a few kilobytes.
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Everything the emulator is told at start.
#[derive(Debug, Clone, Default)]
pub struct EmulatorConfig {
    /// The Qiniu fusion CDN account (the first, when there are several).
    pub qiniu: qiniu::QiniuConfig,
    /// More Qiniu accounts, each with its own keys, domains and quotas. A request is served
    /// by the account whose access key signed it, so a URL outside that account's domains is
    /// refused (400032) even if another account serves it.
    pub more_qiniu: Vec<qiniu::QiniuConfig>,
    /// The 123pan open platform account.
    pub pan123: pan123::Pan123Config,
    /// The faults to inject from the first request on.
    pub faults: FaultPlan,
}

/// What the emulator has seen and done, as served on `GET /_emulator/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// The Qiniu side: the first account, and every request counted by endpoint.
    pub qiniu: qiniu::QiniuStats,
    /// The other Qiniu accounts' issued requests, purges, refusals and quotas, by name.
    #[serde(default)]
    pub more_qiniu: BTreeMap<String, qiniu::QiniuStats>,
    /// The 123pan side.
    #[serde(default)]
    pub pan123: pan123::Pan123Stats,
    /// Faults injected into purge requests so far (Qiniu's and 123pan's refresh calls), by kind
    /// name (`http-503`, `drop-after`, …). 123pan token faults are in `pan123.token_faults`.
    pub faults: BTreeMap<String, u64>,
    /// Faults injected into Qiniu task-list requests so far, by kind name.
    #[serde(default)]
    pub list_faults: BTreeMap<String, u64>,
}

/// A running emulator. It stops when dropped or on [`Emulator::shutdown`].
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    server: Option<JoinHandle<()>>,
}

/// Binds `listen` (port 0 picks a free port) and serves in the background on the current Tokio
/// runtime. The emulator is ready when this returns.
pub async fn start(listen: SocketAddr, config: EmulatorConfig) -> io::Result<Emulator> {
    config
        .faults
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(config));
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(listener, Arc::clone(&shared), stop.clone()));
    tracing::debug!(%addr, "emulator listening");
    Ok(Emulator {
        addr,
        shared,
        stop,
        server: Some(server),
    })
}

impl Emulator {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to give clients as their endpoint: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of what it has seen and done.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Refills every daily quota, as midnight (UTC+8) would.
    pub fn reset_quota(&self) {
        self.shared.reset_quota();
    }

    /// Makes every 123pan access token issued so far expired, as if its `expiredAt` had passed.
    pub fn expire_tokens(&self) {
        self.shared.lock().pan123.expire_tokens();
    }

    /// Replaces the fault plan; scripted counts and the random sequence start over.
    pub fn set_faults(&self, plan: FaultPlan) -> Result<(), String> {
        self.shared.set_faults(plan)
    }

    /// Stops accepting, closes every connection and waits for the server task to end.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    config: EmulatorConfig,
    state: Mutex<State>,
}

/// Everything that changes, behind one lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) qiniu: qiniu::QiniuState,
    /// The extra Qiniu accounts' states, in `EmulatorConfig::more_qiniu` order.
    pub(crate) more_qiniu: Vec<qiniu::QiniuState>,
    pub(crate) pan123: pan123::Pan123State,
    injector: fault::Injector,
    faults: BTreeMap<String, u64>,
    list_faults: BTreeMap<String, u64>,
    /// Request ids and trace ids: unseeded, so that a fault seed alone decides the fault sequence.
    ids: fastrand::Rng,
    serial: u64,
}

impl State {
    /// A fresh hex id, unique within this emulator's life.
    pub(crate) fn request_id(&mut self) -> String {
        self.serial += 1;
        format!("{:08x}{:016x}", self.serial, self.ids.u64(..))
    }

    /// A trace id in the style of Qiniu's `X-Reqid`: 16 URL-safe base64 characters.
    pub(crate) fn trace_id(&mut self) -> String {
        self.random_text(16)
    }

    /// `len` random URL-safe base64 characters.
    pub(crate) fn random_text(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        (0..len)
            .map(|_| char::from(ALPHABET[self.ids.usize(..ALPHABET.len())]))
            .collect()
    }

    /// The state of Qiniu account `index` among the extra ones (`None`: the first account).
    pub(crate) fn qiniu_of(&mut self, index: Option<usize>) -> &mut qiniu::QiniuState {
        match index.and_then(|i| self.more_qiniu.get_mut(i)) {
            Some(state) => state,
            None => &mut self.qiniu,
        }
    }

    pub(crate) fn injector(&mut self) -> &mut fault::Injector {
        &mut self.injector
    }
}

impl Shared {
    fn new(config: EmulatorConfig) -> Self {
        let state = State {
            qiniu: qiniu::QiniuState::new(&config.qiniu),
            more_qiniu: config
                .more_qiniu
                .iter()
                .map(qiniu::QiniuState::new)
                .collect(),
            pan123: pan123::Pan123State::new(&config.pan123),
            injector: fault::Injector::new(config.faults.clone()),
            faults: BTreeMap::new(),
            list_faults: BTreeMap::new(),
            ids: fastrand::Rng::new(),
            serial: 0,
        };
        Shared {
            config,
            state: Mutex::new(state),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters at worst half-updated; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn stats(&self) -> Stats {
        let mut state = self.lock();
        let more_qiniu = self
            .config
            .more_qiniu
            .iter()
            .zip(state.more_qiniu.iter_mut())
            .map(|(config, s)| (config.name.clone(), s.stats(config)))
            .collect();
        Stats {
            more_qiniu,
            qiniu: state.qiniu.stats(&self.config.qiniu),
            pan123: state.pan123.stats(),
            faults: state.faults.clone(),
            list_faults: state.list_faults.clone(),
        }
    }

    /// Refills every Qiniu account's daily quotas.
    fn reset_quota(&self) {
        let mut state = self.lock();
        state.qiniu.reset_quota(&self.config.qiniu);
        for (s, config) in state.more_qiniu.iter_mut().zip(&self.config.more_qiniu) {
            s.reset_quota(config);
        }
    }

    fn set_faults(&self, plan: FaultPlan) -> Result<(), String> {
        plan.validate()?;
        self.lock().injector = fault::Injector::new(plan);
        Ok(())
    }

    /// Draws the fault for the next purge request, and counts it.
    fn draw_fault(&self) -> Option<FaultKind> {
        let mut state = self.lock();
        let kind = state.injector.draw()?;
        *state.faults.entry(kind.as_str().to_owned()).or_default() += 1;
        Some(kind)
    }

    /// Draws the fault for the next Qiniu task-list request, and counts it.
    fn draw_list_fault(&self) -> Option<FaultKind> {
        let mut state = self.lock();
        let kind = state.injector.draw_list()?;
        *state
            .list_faults
            .entry(kind.as_str().to_owned())
            .or_default() += 1;
        Some(kind)
    }

    /// Draws the fault for the next 123pan token request, and counts it.
    fn draw_token_fault(&self) -> Option<FaultKind> {
        let mut state = self.lock();
        let kind = state.injector.draw_token()?;
        state.pan123.count_token_fault(kind);
        Some(kind)
    }
}

/// Accepts connections until stopped; one task per connection.
async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    crate::http::serve(listener, "emulator", stop, move |req| {
        let shared = Arc::clone(&shared);
        async move { route(&shared, req).await }
    })
    .await;
}

/// The emulator's answer type: `Err` drops the connection without an answer.
type Answer = crate::http::Answer;

/// Dispatches a request; every answer carries an `X-Reqid`, as Qiniu's do.
async fn route(shared: &Shared, req: Request<Incoming>) -> Answer {
    let mut response = dispatch(shared, req).await?;
    if !response.headers().contains_key("x-reqid") {
        let trace_id = shared.lock().trace_id();
        if let Ok(value) = HeaderValue::from_str(&trace_id) {
            response.headers_mut().insert("x-reqid", value);
        }
    }
    Ok(response)
}

/// Sends a request to an operator endpoint or a provider.
async fn dispatch(shared: &Shared, req: Request<Incoming>) -> Answer {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let body = match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            tracing::debug!(error = %e, "emulator could not read a request body");
            return Ok(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body unreadable or too large",
            ));
        }
    };
    if let Some(endpoint) = pan123::endpoint_for(&path) {
        if parts.method != Method::POST {
            return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "use POST"));
        }
        pan123::count_request(shared, endpoint);
        let fault = match endpoint {
            pan123::Endpoint::Token => shared.draw_token_fault(),
            pan123::Endpoint::Refresh => shared.draw_fault(),
        };
        return purge(shared, fault, |fault| {
            pan123::handle(shared, endpoint, &parts, &body, fault)
        })
        .await;
    }
    if let Some(op) = qiniu_list::list_operation_for(&path) {
        if parts.method != Method::POST {
            return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "use POST"));
        }
        qiniu::count_list_request(shared, op);
        let fault = shared.draw_list_fault();
        return purge(shared, fault, |fault| {
            qiniu::handle_list(shared, op, (&parts, &body), fault)
        })
        .await;
    }
    if let Some(op) = qiniu::operation_for(&path) {
        if parts.method != Method::POST {
            return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "use POST"));
        }
        qiniu::count_request(shared, op);
        let fault = shared.draw_fault();
        return purge(shared, fault, |fault| {
            qiniu::handle(shared, op, &parts, &body, fault)
        })
        .await;
    }
    Ok(match (&parts.method, path.as_str()) {
        (&Method::GET, "/_emulator/stats") => json(StatusCode::OK, &shared.stats()),
        (&Method::POST, "/_emulator/reset-quota") => {
            shared.reset_quota();
            json(StatusCode::OK, &serde_json::json!({"ok": true}))
        }
        (&Method::POST, "/_emulator/faults") => set_faults(shared, &body),
        (_, "/_emulator/stats" | "/_emulator/reset-quota" | "/_emulator/faults") => {
            plain(StatusCode::METHOD_NOT_ALLOWED, "wrong method")
        }
        _ if pan123::claims_path(&path) => pan123::not_found(shared),
        _ => qiniu::not_found(shared),
    })
}

/// Applies the transport-level part of a fault around a provider's handler: dropping the
/// connection before or after processing, or stalling. Other kinds are the provider's to render.
async fn purge(
    shared: &Shared,
    fault: Option<FaultKind>,
    handle: impl FnOnce(Option<FaultKind>) -> Response<Full<Bytes>>,
) -> Answer {
    match fault {
        Some(FaultKind::DropBefore) => Err(dropped("drop-before")),
        Some(FaultKind::DropAfter) => {
            let _processed = handle(None);
            Err(dropped("drop-after"))
        }
        Some(FaultKind::Slow) => {
            let delay = shared.lock().injector().plan().slow_delay();
            tokio::time::sleep(delay).await;
            Ok(handle(None))
        }
        other => Ok(handle(other)),
    }
}

fn dropped(kind: &str) -> io::Error {
    tracing::debug!(fault = kind, "emulator dropping a connection");
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        format!("injected fault: {kind}"),
    )
}

fn set_faults(shared: &Shared, body: &[u8]) -> Response<Full<Bytes>> {
    let plan = match serde_json::from_slice::<FaultPlan>(body) {
        Ok(plan) => plan,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("invalid fault plan: {e}")),
    };
    match shared.set_faults(plan.clone()) {
        Ok(()) => json(StatusCode::OK, &plan),
        Err(e) => plain(StatusCode::BAD_REQUEST, &e),
    }
}

/// A JSON answer.
fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    bytes_response(status, "application/json", Bytes::from(body))
}

/// A plain-text answer, for the emulator's own endpoints and transport-level refusals.
fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    bytes_response(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(format!("{text}\n")),
    )
}

fn bytes_response(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
