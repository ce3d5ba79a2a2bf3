//! A small HTTP/1.1 server on 127.0.0.1 that misbehaves on request, for download tests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the server does for one path.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// 200 with the whole body.
    Serve(Vec<u8>),
    /// Promises the whole body's length, sends only the first `usize` bytes, then closes.
    Truncate(Vec<u8>, usize),
    /// Sends the headers and the first `usize` bytes, then goes silent for `Duration`.
    Stall(Vec<u8>, usize, Duration),
    /// Answers with this status and an empty body.
    Status(u16),
}

/// A running server; paths it has no behaviour for get 404.
pub struct Server {
    pub base: String,
    routes: Arc<Mutex<HashMap<String, Behaviour>>>,
    hits: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let routes: Arc<Mutex<HashMap<String, Behaviour>>> = Arc::default();
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, h) = (routes.clone(), hits.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, h) = (r.clone(), h.clone());
                thread::spawn(move || handle(stream, &r, &h));
            }
        });
        Self { base, routes, hits }
    }

    /// Base URL of a sub-folder, so one server can act as several mirrors.
    pub fn mirror(&self, folder: &str) -> String {
        format!("{}{folder}/", self.base)
    }

    pub fn route(&self, path: &str, behaviour: Behaviour) {
        self.routes
            .lock()
            .unwrap()
            .insert(path.to_string(), behaviour);
    }

    /// Paths requested so far, in order.
    pub fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

fn handle(
    stream: TcpStream,
    routes: &Mutex<HashMap<String, Behaviour>>,
    hits: &Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut header = String::new();
    while reader
        .read_line(&mut header)
        .map(|n| n > 2)
        .unwrap_or(false)
    {
        header.clear();
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string();
    hits.lock().unwrap().push(path.clone());
    let behaviour = routes
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or(Behaviour::Status(404));
    let mut stream = stream;
    let head = |status: u16, len: usize| {
        format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
        )
    };
    let _ = match behaviour {
        Behaviour::Serve(body) => stream
            .write_all(head(200, body.len()).as_bytes())
            .and_then(|()| stream.write_all(&body)),
        Behaviour::Truncate(body, sent) => stream
            .write_all(head(200, body.len()).as_bytes())
            .and_then(|()| stream.write_all(&body[..sent])),
        Behaviour::Stall(body, sent, pause) => {
            let result = stream
                .write_all(head(200, body.len()).as_bytes())
                .and_then(|()| stream.write_all(&body[..sent]))
                .and_then(|()| stream.flush());
            thread::sleep(pause);
            result
        }
        Behaviour::Status(code) => stream.write_all(head(code, 0).as_bytes()),
    };
}
