//! The HTTP API against a server started on 127.0.0.1 by the test, bad requests included.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use burn::tensor::Device;
use common::synth;
use digits::data::{Dataset, Split};
use digits::predict::Predictor;
use digits::serve::{self, AppState, MAX_BODY_BYTES, Timeouts};

/// A server on a free port; dropping it shuts the server down gracefully.
struct Running {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start() -> Self {
        Self::start_with(Timeouts::default())
    }

    fn start_with(timeouts: Timeouts) -> Self {
        let state = Arc::new(AppState::new(
            Predictor::built_in(&Device::flex()),
            timeouts,
        ));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, address) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                ready.send(listener.local_addr().unwrap()).unwrap();
                serve::serve(state, listener, async {
                    let _ = stopped.await;
                })
                .await;
            });
        });
        let address = address.recv_timeout(Duration::from_secs(10)).unwrap();
        Running {
            base: format!("http://{address}"),
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// (status, JSON body) of a POST to /api/predict.
fn post(server: &Running, content_type: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut response = agent()
        .post(&format!("{}/api/predict", server.base))
        .header("Content-Type", content_type)
        .send(body)
        .unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// A form as a browser sends it: a text field, then `file` as the field `image`.
fn multipart_upload(boundary: &str, file: &[u8]) -> Vec<u8> {
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"seven.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(file);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    form
}

#[test]
fn the_page_health_and_a_drawn_digit() {
    let server = Running::start();
    let mut page = agent().get(&server.base).call().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.body_mut().read_to_string().unwrap();
    assert!(html.contains("<canvas id=\"pad\"") && html.contains("/api/predict"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing comes from elsewhere"
    );
    let health = agent()
        .get(&format!("{}/healthz", server.base))
        .call()
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);

    let (status, json) = post(&server, "image/png", &synth::drawn(3, 280, 18.0));
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["digit"], 3);
    common::assert_probabilities(&json);
    let png = base64::engine::general_purpose::STANDARD
        .decode(json["preprocessed"].as_str().unwrap())
        .unwrap();
    let seen = image::load_from_memory(&png).unwrap();
    assert_eq!((seen.width(), seen.height()), (28, 28));
}

#[test]
fn uploads_and_pixel_arrays_are_read_too() {
    let server = Running::start();
    let boundary = "digits-test-boundary";
    let (status, json) = post(
        &server,
        &format!("multipart/form-data; boundary={boundary}"),
        &multipart_upload(boundary, &synth::drawn(7, 280, 18.0)),
    );
    assert_eq!((status, json["digit"].as_u64()), (200, Some(7)), "{json}");

    let test = Dataset::lite(Split::Test);
    let pixels: Vec<u8> = test.image(0).to_vec();
    let body = serde_json::to_vec(&serde_json::json!({ "pixels": pixels })).unwrap();
    let (status, json) = post(&server, "application/json", &body);
    assert_eq!(
        (status, json["digit"].as_u64()),
        (200, Some(u64::from(test.label(0)))),
        "{json}"
    );
}

#[test]
fn bad_requests_get_the_right_status_and_a_json_reason() {
    let server = Running::start();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "text/plain",
            b"hello".to_vec(),
            415,
            "unsupported content type",
        ),
        (
            "image/png",
            b"not a png at all".to_vec(),
            400,
            "cannot decode",
        ),
        (
            "application/json",
            b"{\"pixels\": [1, 2, 3]}".to_vec(),
            400,
            "expected 784 pixels",
        ),
        (
            "application/json",
            b"{not json".to_vec(),
            400,
            "invalid JSON",
        ),
        (
            "image/png",
            vec![0u8; MAX_BODY_BYTES + 1],
            413,
            "the request body is over the limit of 16 MB",
        ),
        (
            "multipart/form-data; boundary=x",
            multipart_upload("x", &vec![0u8; MAX_BODY_BYTES + 1]),
            413,
            "the request body is over the limit of 16 MB",
        ),
        (
            "application/octet-stream",
            b"hello".to_vec(),
            415,
            "the body sent as 'application/octet-stream' is not an image digits can read (PNG, \
             JPEG, BMP, GIF, WebP or TIFF)",
        ),
        (
            "application/octet-stream",
            b"qoif and then not much".to_vec(),
            415,
            "is an image in the Qoi format, which digits cannot read",
        ),
        (
            "multipart/form-data; boundary=x",
            b"--x--\r\n".to_vec(),
            400,
            "",
        ),
    ];
    for (content_type, body, expected, reason) in cases {
        let (status, json) = post(&server, content_type, &body);
        assert_eq!(status, expected, "{content_type}: {json}");
        if !reason.is_empty() {
            assert!(
                json["error"].as_str().unwrap_or_default().contains(reason),
                "{content_type}: {json}"
            );
        }
    }
    let blank = image::GrayImage::from_pixel(100, 100, image::Luma([255]));
    let mut png = Vec::new();
    blank
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let (status, json) = post(&server, "image/png", &png);
    assert_eq!(status, 422, "{json}");
    assert!(json["error"].as_str().unwrap().contains("no digit found"));

    let mut metrics = agent()
        .get(&format!("{}/metrics", server.base))
        .call()
        .unwrap();
    let text = metrics.body_mut().read_to_string().unwrap();
    assert!(
        text.contains("digits_http_requests_total{route=\"/api/predict\",status=\"415\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("digits_http_requests_total{route=\"/api/predict\",status=\"400\"}"),
        "{text}"
    );
    assert!(
        text.contains("digits_http_request_duration_seconds_count"),
        "{text}"
    );
}

#[test]
fn unknown_paths_and_wrong_methods_are_answered_in_json() {
    let server = Running::start();
    let cases = [
        (
            "GET",
            "/nope",
            404,
            "there is nothing at /nope: digits serves the page at /",
            None,
        ),
        (
            "GET",
            "/api/predict",
            405,
            "/api/predict takes POST, not GET",
            Some("POST"),
        ),
        (
            "POST",
            "/healthz",
            405,
            "/healthz takes GET, HEAD, not POST",
            Some("GET,HEAD"),
        ),
    ];
    for (method, path, expected, reason, allow) in cases {
        let url = format!("{}{path}", server.base);
        let mut response = match method {
            "GET" => agent().get(&url).call(),
            _ => agent().post(&url).send_empty(),
        }
        .unwrap();
        assert_eq!(response.status().as_u16(), expected, "{method} {path}");
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|value| value.to_str().unwrap().to_string())
        };
        assert_eq!(header("allow").as_deref(), allow, "{method} {path}");
        assert_eq!(
            header("content-type").as_deref(),
            Some("application/json"),
            "{method} {path}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        assert!(
            json["error"].as_str().unwrap_or_default().contains(reason),
            "{method} {path}: {json}"
        );
    }
}

/// The status line and body of a request sent as written, with no Content-Type header.
fn post_untyped(server: &Running, body: &[u8]) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
    let head = format!(
        "POST /api/predict HTTP/1.1\r\nHost: digits\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(body).unwrap())
}

#[test]
fn an_image_of_no_known_type_is_recognised_by_its_bytes() {
    let server = Running::start();
    let test = Dataset::lite(Split::Test);
    let photo = synth::dressed(test.image(0), "photo-jpeg", 1);
    let expected = Some(u64::from(test.label(0)));
    let (status, json) = post(&server, "application/octet-stream", &photo);
    assert_eq!((status, json["digit"].as_u64()), (200, expected), "{json}");
    let (status, json) = post_untyped(&server, &photo);
    assert_eq!((status, json["digit"].as_u64()), (200, expected), "{json}");
    let (status, json) = post_untyped(&server, b"hello");
    assert_eq!(status, 415, "{json}");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("the body sent with no content type is not an image"),
        "{json}"
    );
}

/// A connection that sends the start of a request and then nothing; reads from it give up
/// after 5 s.
fn send_and_stall(server: &Running, start: &[u8]) -> std::net::TcpStream {
    use std::io::Write;
    let address = server.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.write_all(start).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

#[test]
fn a_client_that_trickles_its_headers_is_cut_off_while_others_are_served() {
    use std::io::Read;
    let server = Running::start_with(Timeouts {
        headers: Duration::from_millis(500),
        ..Timeouts::default()
    });
    // The request line and one header, and never the blank line that ends them.
    let mut slow = send_and_stall(&server, b"GET /healthz HTTP/1.1\r\nHost: digits\r\n");
    let health = agent()
        .get(&format!("{}/healthz", server.base))
        .call()
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);

    let mut answer = Vec::new();
    match slow.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the connection was still open after 5 s: {e}"),
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains("200 OK"), "{answer}");
}

#[test]
fn a_body_that_does_not_arrive_in_time_is_answered_408() {
    use std::io::Read;
    let server = Running::start_with(Timeouts {
        body: Duration::from_millis(500),
        ..Timeouts::default()
    });
    let mut slow = send_and_stall(
        &server,
        b"POST /api/predict HTTP/1.1\r\nHost: digits\r\nContent-Type: image/png\r\n\
          Content-Length: 1000\r\n\r\n\x89PNG",
    );
    let mut answer = vec![0; 4096];
    let read = slow
        .read(&mut answer)
        .expect("no answer within 5 s of a stalled body");
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("the request body did not arrive within 0.5 s"),
        "{answer}"
    );
}

#[test]
fn the_command_refuses_timeouts_that_are_not_a_positive_number() {
    for (flag, value) in [
        ("--header-timeout", "0"),
        ("--header-timeout", "-1"),
        ("--body-timeout", "soon"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_digits"))
            .args(["serve", "--addr", "127.0.0.1:0", &format!("{flag}={value}")])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("is not a number of seconds between 0 and 3600"),
            "{stderr}"
        );
    }
}

/// `digits serve --addr ADDR` as a child process, and the URL it announced.
fn spawn_command(
    addr: &str,
) -> (
    std::process::Child,
    String,
    std::io::BufReader<std::process::ChildStdout>,
) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_digits"))
        .args(["serve", "--addr", addr])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    // The device line comes first, then the address.
    let url = loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "no address printed"
        );
        if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            break url.to_string();
        }
    };
    (child, url, stdout)
}

#[test]
fn the_command_serves_and_stops_cleanly_on_sigterm() {
    use std::io::BufRead;
    let (mut child, url, mut stdout) = spawn_command("127.0.0.1:0");
    let health = agent().get(&format!("{url}healthz")).call().unwrap();
    assert_eq!(health.status().as_u16(), 200);
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "stopped");
}

#[test]
fn the_command_listens_on_a_host_name() {
    let (mut child, url, _stdout) = spawn_command("localhost:0");
    let health = agent().get(&format!("{url}healthz")).call();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(health.unwrap().status().as_u16(), 200, "{url}");
}

#[test]
fn the_command_says_what_is_wrong_with_an_address() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = listener.local_addr().unwrap().to_string();
    let not_host_and_port =
        "is not HOST:PORT, such as 127.0.0.1:8080, localhost:8080 or [::1]:8080";
    let cases = [
        ("localhost", 2, not_host_and_port.to_string()),
        ("8080", 2, not_host_and_port.to_string()),
        ("::1:8080", 2, not_host_and_port.to_string()),
        (
            "no-such-host.invalid:8080",
            1,
            "error: cannot resolve --addr no-such-host.invalid:8080".to_string(),
        ),
        (
            &taken,
            1,
            format!("error: cannot listen on {taken} ({taken}: "),
        ),
    ];
    for (addr, code, message) in cases {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_digits"))
            .args(["serve", "--addr", addr])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{addr}: {stderr}");
        assert!(stderr.contains(&message), "{addr}: {stderr}");
    }
}

#[test]
fn a_real_browser_uses_the_page_on_a_laptop_and_a_phone() {
    use serde_json::json;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let ready = root.join("node_modules/playwright-core").is_dir()
        && std::path::Path::new("/usr/bin/chromium").is_file();
    if !ready {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium and playwright-core (see .ci/run)"
        );
        eprintln!("skipping: apt-get install chromium && npm ci, to run the browser test");
        return;
    }
    let (mut server, url, _stdout) = spawn_command("127.0.0.1:0");
    let screenshots = root.join("target/browser-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    // Without an extension the browser cannot tell the photo's type and sends it as
    // application/octet-stream.
    let photo = screenshots.join("photo-of-a-7");
    std::fs::copy(root.join("docs/examples/photo-of-a-7.jpg"), &photo).unwrap();
    let browser = std::process::Command::new("node")
        .arg(root.join("tests/browser/draw.mjs"))
        .args([
            url.as_str(),
            screenshots.to_str().unwrap(),
            photo.to_str().unwrap(),
        ])
        .current_dir(root)
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let out = String::from_utf8_lossy(&browser.stdout);
    assert!(
        browser.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&browser.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let at = |path: &str| seen.pointer(path).cloned().unwrap_or_default();
    let text = |path: &str| at(path).as_str().unwrap_or_default().to_string();
    let expect = |path: &str, expected: serde_json::Value| {
        assert_eq!(at(path), expected, "{path} in {seen:#}");
    };

    // Before the first drawing: no broken image, the result beside the pad, everything named.
    expect("/before/brokenImages", json!([]));
    expect("/before/layout/resultBesidePad", json!(true));
    expect("/labels", json!({ "clear": 1, "upload": 1, "pad": 1 }));
    expect("/focus/id", json!("clear"));
    expect("/focus/outline", json!("solid 3px"));
    expect("/lowContrast", json!([]));
    expect("/lowContrastDark", json!([]));

    // Drawn with a mouse on a laptop: the digit, how sure, the top three, what the model saw.
    expect("/one/answer", json!("1"));
    expect("/seven/answer", json!("7"));
    expect("/seven/seen", json!("28x28"));
    assert!(text("/seven/confidence").ends_with("% sure"), "{seen:#}");
    let bars = at("/seven/bars");
    assert_eq!(bars.as_array().unwrap().len(), 3, "{seen:#}");
    assert!(bars[0].as_str().unwrap().starts_with("7 "), "{seen:#}");
    expect("/laptop/resultBesidePad", json!(true));
    expect("/laptop/pageWidth", json!(1280));
    expect("/afterEscape", json!({ "answer": "", "inked": false }));

    // An error keeps the layout; a photo of no known type is shown and read.
    assert!(text("/textFile/error").contains("'text/plain'"), "{seen:#}");
    expect("/textFile/layout/resultBesidePad", json!(true));
    expect("/textFile/lowContrast", json!([]));
    expect("/photo/answer", json!("7"));
    expect("/photo/shown", json!(true));
    expect("/droppedPhoto/answer", json!("7"));
    assert!(
        text("/droppedPhoto/note").starts_with("Your photo, dropped-photo."),
        "{seen:#}"
    );

    // The server's verdicts.
    let unsure_bars = at("/unsure/bars");
    let first_digit = |i: usize| unsure_bars[i].as_str().unwrap()[..1].to_string();
    expect(
        "/unsure/answer",
        json!(format!(
            "Not sure: {} or {}?",
            first_digit(0),
            first_digit(1)
        )),
    );
    assert_eq!(unsure_bars.as_array().unwrap().len(), 3, "{seen:#}");
    expect(
        "/not_a_digit/answer",
        json!("That doesn't look like a digit"),
    );
    expect("/not_a_digit/bars", json!([]));
    expect(
        "/several_digits/answer",
        json!("That looks like several digits"),
    );

    // Drawn with a finger on a 375-pixel-wide phone: nothing scrolls or overflows, and the
    // answer shows under the pad without scrolling.
    expect("/phoneSeven/answer", json!("7"));
    expect("/phone/pointerTypes", json!(["touch"]));
    expect("/phone/scrolled", json!(0));
    expect("/phone/pageWidth", json!(375));
    expect("/phone/resultBelowPad", json!(true));
    assert!(
        at("/phone/answerBottom").as_f64().unwrap() <= at("/phone/windowHeight").as_f64().unwrap(),
        "{seen:#}"
    );
    assert!(screenshots.join("serve.png").is_file());
}
