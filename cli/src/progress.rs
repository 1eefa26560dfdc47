//! Progress of long work: the first scan of a big folder, a large
//! transfer. On a terminal an indicatif spinner or bar on stderr; otherwise
//! (a service, a log file) one log line every few seconds while it lasts.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use watcher::ScanProgress;

/// How often a log line reports long work when stderr is not a terminal:
/// every 5 s, or every `FSYNC_PROGRESS_MS` milliseconds.
pub fn log_every() -> Duration {
    static EVERY: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *EVERY.get_or_init(|| {
        std::env::var("FSYNC_PROGRESS_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(5), Duration::from_millis)
    })
}

/// Shows a scan's progress until dropped.
pub struct ScanReporter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ScanReporter {
    /// Starts reporting the scan of folder `name`.
    pub fn start(name: &str, progress: Arc<ScanProgress>) -> ScanReporter {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, name) = (stop.clone(), name.to_owned());
        let terminal = std::io::stderr().is_terminal();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let line = |p: &ScanProgress| {
                format!(
                    "{} paths, {} files read ({})",
                    p.walked.load(Ordering::Relaxed),
                    p.read.load(Ordering::Relaxed),
                    indicatif::HumanBytes(p.bytes.load(Ordering::Relaxed))
                )
            };
            let bar = terminal.then(|| {
                let b = ProgressBar::new_spinner();
                b.set_style(
                    ProgressStyle::with_template("{spinner} scanning {prefix}: {msg} [{elapsed}]")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                b.set_prefix(name.clone());
                b
            });
            let mut last_log = Instant::now();
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                match &bar {
                    Some(b) => {
                        b.set_message(line(&progress));
                        b.tick();
                    }
                    None if last_log.elapsed() >= log_every() => {
                        tracing::info!(folder = %name, "scanning: {} so far", line(&progress));
                        last_log = Instant::now();
                    }
                    None => {}
                }
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            if started.elapsed() >= log_every() {
                tracing::info!(folder = %name, "scanned: {} in {:.1?}", line(&progress), started.elapsed());
            }
        });
        ScanReporter { stop, thread: Some(thread) }
    }
}

impl Drop for ScanReporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Shows sync progress (changes to send, chunks to fetch) on a terminal,
/// or as a log line every [`log_every`] while there is some.
pub struct SyncReporter {
    bar: Option<ProgressBar>,
    last_log: Instant,
    /// The largest backlog seen in this burst (the bar's length).
    peak: u64,
}

impl Default for SyncReporter {
    fn default() -> Self {
        SyncReporter { bar: None, last_log: Instant::now(), peak: 0 }
    }
}

impl SyncReporter {
    /// Called about once a second with what is left.
    pub fn update(&mut self, changes_to_send: u64, chunks_to_fetch: u64) {
        let left = changes_to_send + chunks_to_fetch;
        if left == 0 {
            if let Some(b) = self.bar.take() {
                b.finish_and_clear();
            }
            self.peak = 0;
            return;
        }
        self.peak = self.peak.max(left);
        if std::io::stderr().is_terminal() {
            let bar = self.bar.get_or_insert_with(|| {
                let b = ProgressBar::new(left);
                b.set_style(
                    ProgressStyle::with_template("{bar:30} {pos}/{len} synced ({msg}) [{elapsed}]")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b
            });
            bar.set_length(self.peak);
            bar.set_position(self.peak - left);
            bar.set_message(format!("{changes_to_send} changes to send, {chunks_to_fetch} chunks to fetch"));
        } else if self.last_log.elapsed() >= log_every() {
            tracing::info!(changes_to_send, chunks_to_fetch, "syncing");
            self.last_log = Instant::now();
        }
    }
}
