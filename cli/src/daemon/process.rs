//! The process: its open-file limit and its signals.

// The loop's state and imports are this module's too.
use super::*;

/// Raises the soft limit of open files to the hard one: every HTTP
/// subscription holds a connection, and a big folder many watches.
pub(super) fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::debug!("cannot raise the open-file limit from {soft} to {hard}: {e}");
            }
        }
    }
}

/// SIGTERM and SIGINT, watched from the first moment: while `starting`
/// (loading and scanning, which can take long on a big folder) a signal
/// exits at once with success: nothing was acknowledged yet, the store is
/// crash-safe and the next start scans again. Later ones are handed to the
/// main loop, which stops cleanly.
pub(super) fn watch_signals(starting: Arc<std::sync::atomic::AtomicBool>) -> Result<mpsc::UnboundedReceiver<()>> {
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if starting.load(std::sync::atomic::Ordering::SeqCst) {
                tracing::info!("stopped while starting; the next start takes up from the last saved point");
                std::process::exit(0);
            }
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}
