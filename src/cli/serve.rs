//! `digits serve`: the drawing page and the prediction API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use digits::serve::{self, AppState, Timeouts};

use super::{Announce, DeviceArgs};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A run folder [default: the models built into digits]; repeat it to average several
    /// models' probabilities (an ensemble).
    #[arg(long = "model", value_name = "RUN")]
    models: Vec<PathBuf>,
    /// Address to listen on, HOST:PORT; a host name is resolved and the first of its addresses
    /// that can be listened on is used.
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = host_and_port)]
    addr: String,
    #[command(flatten)]
    device: DeviceArgs,
    /// Seconds a client may take to send a request's headers before its connection is closed.
    #[arg(long, value_name = "SECONDS", value_parser = positive_seconds,
          default_value_t = Timeouts::default().headers.as_secs_f64())]
    header_timeout: f64,
    /// Seconds a client may take to send a request's body before it is answered 408.
    #[arg(long, value_name = "SECONDS", value_parser = positive_seconds,
          default_value_t = Timeouts::default().body.as_secs_f64())]
    body_timeout: f64,
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= 3600.0 => Ok(seconds),
        _ => Err(format!(
            "'{text}' is not a number of seconds between 0 and 3600"
        )),
    }
}

/// `HOST:PORT` with a numeric port, the form a host name is resolved from; an IPv6 address
/// goes in brackets.
fn host_and_port(text: &str) -> Result<String, String> {
    let well_formed = text.parse::<SocketAddr>().is_ok()
        || text.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains(':') && port.parse::<u16>().is_ok()
        });
    if well_formed {
        Ok(text.to_string())
    } else {
        Err(format!(
            "'{text}' is not HOST:PORT, such as 127.0.0.1:8080, localhost:8080 or [::1]:8080"
        ))
    }
}

/// Listens on the first address `addr` resolves to that can be bound: `localhost` may resolve
/// to ::1 and 127.0.0.1, and either may be unavailable.
async fn listen(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let candidates: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("cannot resolve --addr {addr}"))?
        .collect();
    let mut failures = Vec::new();
    for candidate in candidates {
        match tokio::net::TcpListener::bind(candidate).await {
            Ok(listener) => return Ok(listener),
            Err(err) => failures.push(format!("{candidate}: {err}")),
        }
    }
    if failures.is_empty() {
        anyhow::bail!("--addr {addr} resolves to no address");
    }
    anyhow::bail!("cannot listen on {addr} ({})", failures.join("; "))
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let selected = args.device.open(Announce::Stdout)?;
    let device = selected.device;
    let predictor = super::load_predictor(&args.models, &device)?;
    let timeouts = Timeouts {
        headers: Duration::from_secs_f64(args.header_timeout),
        body: Duration::from_secs_f64(args.body_timeout),
    };
    let state = Arc::new(AppState::new(predictor, timeouts));
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = listen(&args.addr).await?;
        let address = listener
            .local_addr()
            .context("the listener has no address")?;
        let shutdown = shutdown_signal()?;
        println!("digits is serving http://{address}/ (Ctrl-C to stop)");
        serve::serve(state, listener, shutdown).await;
        println!("stopped");
        Ok(())
    })
}

/// Completes on Ctrl-C or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled, so a signal sent as soon as the address is printed still stops
/// the server cleanly instead of killing it.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
