//! The HTTP service: a page to draw a digit on, and the API behind it.
//!
//! `GET /` serves the page (embedded in the binary), `POST /api/predict` reads an image (a
//! raw image body, a multipart upload, or `{"pixels": [784 numbers]}`), `GET /healthz` and
//! `GET /metrics` (Prometheus) tell operators how it is doing. Decoding, preparation and
//! inference run on Tokio's blocking pool, never on the threads that serve connections, and
//! every image goes through the same [`prepare`] as `digits predict`.

mod metrics;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use serde_json::json;

use crate::data::{IMAGE_PIXELS, NUM_CLASSES};
use crate::files::encode_png;
use crate::predict::{Predictor, Verdict};
use crate::prepare::{self, PrepareError};

pub use metrics::Metrics;

const PAGE: &str = include_str!("../../web/index.html");
/// Request bodies above this are refused with 413: a phone photo is 3-8 MB.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// A prediction that takes longer than this is abandoned with 503.
const PREDICT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to send a request. Without limits, clients that trickle their
/// headers or body in a byte at a time (slowloris) hold connections open for ever.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// From the connection opening (or the previous response) to the end of the headers;
    /// past it the connection is closed.
    pub headers: Duration,
    /// From the end of the headers to the end of the body; past it the answer is 408.
    pub body: Duration,
}

impl Default for Timeouts {
    /// Generous for a phone uploading a 16 MB photo over a slow link.
    fn default() -> Self {
        Self {
            headers: Duration::from_secs(10),
            body: Duration::from_secs(60),
        }
    }
}

/// What the handlers share.
pub struct AppState {
    pub predictor: Predictor,
    pub metrics: Metrics,
    pub timeouts: Timeouts,
    /// Two permits per core: enough to keep every core busy while jobs hand over, few enough
    /// that further predictions wait their turn in the async queue rather than as extra
    /// blocking threads fighting over the cores (on 2 cores under 64 connections that cut the
    /// 99th-percentile latency from 51 ms to 18 ms; one permit per core cost a third of the
    /// throughput).
    workers: tokio::sync::Semaphore,
}

impl AppState {
    pub fn new(predictor: Predictor, timeouts: Timeouts) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            predictor,
            metrics: Metrics::default(),
            timeouts,
            workers: tokio::sync::Semaphore::new(2 * cores),
        }
    }
}

/// The answer of `POST /api/predict`.
#[derive(Debug, Serialize)]
pub struct PredictResponse {
    /// Whether `digit` can be trusted: `digit`, `unsure`, `not_a_digit` or `several_digits`.
    pub verdict: Verdict,
    pub digit: u8,
    pub confidence: f32,
    pub probabilities: [f32; NUM_CLASSES],
    /// The 28x28 image the digit was prepared into (the model also reads it 10% smaller and
    /// larger), as a base64 PNG.
    pub preprocessed: String,
}

/// An error answered as JSON with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<PrepareError> for ApiError {
    fn from(err: PrepareError) -> Self {
        let status = match err {
            PrepareError::NoInk => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, err.describe())
    }
}

/// The service's routes, for `serve` and for tests.
pub fn router(state: Arc<AppState>) -> Router {
    let routes = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(render_metrics))
        .route("/api/predict", post(predict))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state);
    // A layer on `routes` wraps each route inside axum's method check, which adds the `Allow`
    // header after it; around the whole router it sees the header.
    Router::new()
        .fallback_service(routes)
        .layer(middleware::from_fn(explain_wrong_method))
}

/// Serves HTTP/1.1 until `shutdown` completes, then finishes the requests in flight. axum's
/// own `serve` has no header read timeout (see [`Timeouts`]), hence this accept loop over
/// hyper.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let header_timeout = state.timeouts.headers;
    let service = TowerToHyperService::new(router(state));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    wait_after_failed_accept(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = http.serve_connection(TokioIo::new(stream), service.clone());
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            // A client that goes away or breaks the protocol ends only its own connection.
            let _ = connection.await;
        });
    }
    drop(listener);
    connections.shutdown().await;
}

/// Accepting fails when a client resets before it is accepted (try the next one at once) or
/// when the process is out of file descriptors (wait for connections to close rather than
/// spin); neither may stop the server.
async fn wait_after_failed_accept(error: &std::io::Error) {
    use std::io::ErrorKind;
    let per_connection = matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    );
    if !per_connection {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn record(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = match request.uri().path() {
        path @ ("/" | "/healthz" | "/metrics" | "/api/predict") => path.to_string(),
        _ => "other".to_string(),
    };
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .record(&route, response.status().as_u16(), started.elapsed());
    response
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "there is nothing at {}: digits serves the page at /, POST /api/predict, \
             /healthz and /metrics",
            uri.path()
        ),
    )
}

/// axum answers a method a route does not take with an empty 405; this says which methods it
/// takes, from the `Allow` header axum sets.
async fn explain_wrong_method(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let allowed = allow
        .as_ref()
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .replace(',', ", ");
    let mut answer = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} takes {allowed}, not {method}", uri.path()),
    )
    .into_response();
    if let Some(allow) = allow {
        answer.headers_mut().insert(header::ALLOW, allow);
    }
    answer
}

async fn render_metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// What a request carried.
enum Input {
    Encoded(Bytes),
    Pixels(Vec<f32>),
}

async fn predict(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Json<PredictResponse>, ApiError> {
    let limit = state.timeouts.body;
    let input = tokio::time::timeout(limit, read_input(request, &state))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    limit.as_secs_f64()
                ),
            )
        })??;
    let job = async {
        let _permit = state.workers.acquire().await;
        let state = state.clone();
        tokio::task::spawn_blocking(move || read_digit(&state.predictor, input)).await
    };
    match tokio::time::timeout(PREDICT_TIMEOUT, job).await {
        Ok(Ok(result)) => result.map(Json),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the prediction failed",
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the prediction took too long",
        )),
    }
}

/// The image or pixels a request carries, by its content type.
async fn read_input(request: Request, state: &Arc<AppState>) -> Result<Input, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("image/") {
        Ok(Input::Encoded(body_bytes(request, state).await?))
    } else if content_type.starts_with("multipart/form-data") {
        Ok(Input::Encoded(first_file(request, state).await?))
    } else if content_type.starts_with("application/json") {
        Ok(Input::Pixels(pixels(body_bytes(request, state).await?)?))
    } else if content_type.is_empty() || content_type.starts_with("application/octet-stream") {
        sniffed_image(body_bytes(request, state).await?, &content_type)
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported content type '{content_type}': send an image (image/png, \
                 image/jpeg, ...), a multipart upload, or JSON {{\"pixels\": [784 numbers]}}"
            ),
        ))
    }
}

/// A browser sends a file whose type it does not know (a photo saved without an extension, say)
/// as `application/octet-stream`, and some clients send no type at all: the body's first bytes
/// say whether it is an image.
fn sniffed_image(body: Bytes, content_type: &str) -> Result<Input, ApiError> {
    let sent_as = if content_type.is_empty() {
        "with no content type".to_string()
    } else {
        format!("as '{content_type}'")
    };
    match image::guess_format(&body) {
        Ok(format) if format.reading_enabled() => Ok(Input::Encoded(body)),
        Ok(format) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "the body sent {sent_as} is an image in the {format:?} format, which digits \
                 cannot read: send {READABLE}"
            ),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("the body sent {sent_as} is not an image digits can read ({READABLE})"),
        )),
    }
}

/// The image formats `prepare::decode` reads, as the server names them to clients.
const READABLE: &str = "PNG, JPEG, BMP, GIF, WebP or TIFF";

async fn body_bytes(request: Request, state: &Arc<AppState>) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| body_error(rejection.status(), rejection.body_text()))
}

/// An error reading the body; axum's text for a body over the limit ("Failed to buffer the
/// request body") does not say there is a limit.
fn body_error(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            format!(
                "the request body is over the limit of {} MB",
                MAX_BODY_BYTES / (1024 * 1024)
            ),
        )
    } else {
        ApiError::new(status, text)
    }
}

async fn first_file(request: Request, state: &Arc<AppState>) -> Result<Bytes, ApiError> {
    let mut form = Multipart::from_request(request, state)
        .await
        .map_err(|rejection| body_error(rejection.status(), rejection.body_text()))?;
    loop {
        match form.next_field().await {
            Ok(Some(field)) if field.file_name().is_some() || field.name() == Some("image") => {
                return field
                    .bytes()
                    .await
                    .map_err(|err| body_error(err.status(), err.body_text()));
            }
            Ok(Some(_)) => continue,
            Ok(None) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "the upload holds no file",
                ));
            }
            Err(err) => return Err(body_error(err.status(), err.body_text())),
        }
    }
}

/// `{"pixels": [...]}`: 784 values, row by row, in [0, 1] or [0, 255].
fn pixels(body: Bytes) -> Result<Vec<f32>, ApiError> {
    #[derive(serde::Deserialize)]
    struct Pixels {
        pixels: Vec<f32>,
    }
    let parsed: Pixels = serde_json::from_slice(&body)
        .map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON: {err}")))?;
    if parsed.pixels.len() != IMAGE_PIXELS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "expected {IMAGE_PIXELS} pixels, got {}",
                parsed.pixels.len()
            ),
        ));
    }
    if parsed
        .pixels
        .iter()
        .any(|p| !p.is_finite() || *p < 0.0 || *p > 255.0)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "pixels must be numbers from 0 to 255 (or 0 to 1)",
        ));
    }
    Ok(parsed.pixels)
}

fn read_digit(predictor: &Predictor, input: Input) -> Result<PredictResponse, ApiError> {
    let image = match input {
        Input::Encoded(bytes) => prepare::decode(&bytes)?,
        Input::Pixels(values) => {
            let scale = if values.iter().any(|&v| v > 1.0) {
                1.0
            } else {
                255.0
            };
            let bytes = values.iter().map(|v| (v * scale).round() as u8).collect();
            image::GrayImage::from_raw(28, 28, bytes)
                .expect("784 values make a 28x28 image")
                .into()
        }
    };
    let prepared = prepare::prepare(&image)?;
    let prediction = predictor.predict(std::slice::from_ref(&prepared)).remove(0);
    Ok(PredictResponse {
        verdict: prediction.verdict,
        digit: prediction.digit,
        confidence: prediction.confidence,
        probabilities: prediction.probabilities,
        preprocessed: STANDARD.encode(encode_png(&prepared.to_image().into())),
    })
}
