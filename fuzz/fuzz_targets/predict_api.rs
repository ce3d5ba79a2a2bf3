//! `POST /api/predict` through the whole router: any content type, any body.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const CONTENT_TYPES: [&str; 6] = [
    "image/png",
    "image/jpeg",
    "application/json",
    "multipart/form-data; boundary=X",
    "text/plain",
    "application/octet-stream",
];

fn state() -> Arc<digits::serve::AppState> {
    static STATE: OnceLock<Arc<digits::serve::AppState>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let predictor = digits::predict::Predictor::built_in(&burn::tensor::Device::flex());
            let timeouts = digits::serve::Timeouts::default();
            Arc::new(digits::serve::AppState::new(predictor, timeouts))
        })
        .clone()
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&choice, body)) = bytes.split_first() else {
        return;
    };
    let request = Request::post("/api/predict")
        .header(
            "content-type",
            CONTENT_TYPES[usize::from(choice) % CONTENT_TYPES.len()],
        )
        .body(Body::from(body.to_vec()))
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let response = runtime
        .block_on(digits::serve::router(state()).oneshot(request))
        .unwrap();
    // Every answer is a deliberate one: success or a client error, never a server error.
    assert!(
        response.status().is_success() || response.status().is_client_error(),
        "{}",
        response.status()
    );
});
