//! Ctrl-C and SIGTERM during training: the first asks training to stop and save; a second one
//! ends the process at once, as usual.

use std::sync::{Once, OnceLock};

use digits::train::CancelToken;

/// The token a signal cancels. A signal is sent to the process rather than to one training,
/// and the process ends once the training it stops is saved (a `compare` stops with it), so
/// one token serves every training of the process.
static CANCELLED_BY_SIGNAL: OnceLock<CancelToken> = OnceLock::new();

/// The token Ctrl-C and SIGTERM cancel, from this first call on, rather than killing the
/// process.
pub fn cancel_on_signal() -> CancelToken {
    static CATCH: Once = Once::new();
    let token = CANCELLED_BY_SIGNAL.get_or_init(CancelToken::new).clone();
    CATCH.call_once(catch);
    token
}

#[cfg(unix)]
fn catch() {
    extern "C" fn on_signal(signal: libc::c_int) {
        if let Some(token) = CANCELLED_BY_SIGNAL.get() {
            token.cancel();
        }
        // SAFETY: signal() is async-signal-safe; the next signal gets its default action.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
    // SAFETY: the handler only reads an initialised OnceLock, stores to an atomic and calls
    // signal(), all async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

#[cfg(not(unix))]
fn catch() {}
