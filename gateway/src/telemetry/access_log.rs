//! The access log (`server.access_log`): one JSON line per request, to standard output or a
//! file (reopened on SIGUSR1, for logrotate), or off. Lines are handed to a writer thread
//! through a bounded queue; when it is full the line is dropped and counted
//! (`gateway_access_log_dropped_total`), never waited for. Successes may be sampled; errors
//! (status 400 and up, or no response) are always logged. Settings apply on reload.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway_config::{AccessLog, AccessLogOutput};

// Log lines keep the target this module had before the folders: operators filter on it.
const LOG_TARGET: &str = "gateway::access_log";

/// Lines waiting for the writer at most.
const QUEUE: usize = 16_384;

enum Msg {
    Line(String),
    Output(AccessLogOutput),
    Reopen,
}

struct Log {
    tx: SyncSender<Msg>,
    on: AtomicBool,
    sample_permille: AtomicU32,
}

static LOG: OnceLock<Log> = OnceLock::new();

/// Applies `settings` (at start and on every reload): the writer thread starts the first time
/// an output is set; a changed output is switched to by the writer, in order with the lines.
pub fn configure(settings: &AccessLog) {
    let log = LOG.get_or_init(|| {
        let (tx, rx) = sync_channel::<Msg>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx));
        if let Err(e) = spawned {
            tracing::error!(target: LOG_TARGET, error = %e, "cannot start the access log writer");
        }
        Log {
            tx,
            on: AtomicBool::new(false),
            sample_permille: AtomicU32::new(1000),
        }
    });
    log.sample_permille
        .store(settings.sample_permille, Ordering::Relaxed);
    let _ = log.tx.send(Msg::Output(settings.output.clone()));
    log.on
        .store(settings.output != AccessLogOutput::Off, Ordering::Release);
}

/// Asks the writer to reopen its file (SIGUSR1, after logrotate moved it).
pub fn reopen() {
    if let Some(log) = LOG.get() {
        let _ = log.tx.send(Msg::Reopen);
    }
}

/// Whether a request answered with `status` (0: none) is to be logged.
pub fn wants(status: u16) -> bool {
    let Some(log) = LOG.get() else {
        return false;
    };
    if !log.on.load(Ordering::Acquire) {
        return false;
    }
    let sample = log.sample_permille.load(Ordering::Relaxed);
    status == 0 || status >= 400 || sample >= 1000 || fastrand::u32(..1000) < sample
}

/// Queues one line (without its newline); dropped and counted when the queue is full.
pub fn write(line: String) {
    let Some(log) = LOG.get() else {
        return;
    };
    if let Err(TrySendError::Full(_)) = log.tx.try_send(Msg::Line(line)) {
        crate::telemetry::metrics::access_log_dropped();
    }
}

/// The writer thread: lines in order, flushed when the queue is idle for a moment.
fn write_lines(rx: std::sync::mpsc::Receiver<Msg>) {
    let mut output = AccessLogOutput::Off;
    let mut sink: Option<Box<dyn Write + Send>> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Msg::Line(line)) => {
                if let Some(w) = sink.as_mut() {
                    if w.write_all(line.as_bytes())
                        .and_then(|_| w.write_all(b"\n"))
                        .is_err()
                    {
                        crate::telemetry::metrics::access_log_dropped();
                    }
                }
            }
            Ok(Msg::Output(next)) => {
                if next != output || sink.is_none() {
                    if let Some(w) = sink.as_mut() {
                        let _ = w.flush();
                    }
                    output = next;
                    sink = open(&output);
                }
            }
            Ok(Msg::Reopen) => {
                if let Some(w) = sink.as_mut() {
                    let _ = w.flush();
                }
                sink = open(&output);
                tracing::info!(target: LOG_TARGET, "access log reopened");
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Some(w) = sink.as_mut() {
                    let _ = w.flush();
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn open(output: &AccessLogOutput) -> Option<Box<dyn Write + Send>> {
    match output {
        AccessLogOutput::Off => None,
        AccessLogOutput::Stdout => Some(Box::new(std::io::BufWriter::new(std::io::stdout()))),
        AccessLogOutput::File(path) => {
            match OpenOptions::new().create(true).append(true).open(path) {
                Ok(f) => Some(Box::new(std::io::BufWriter::new(f))),
                Err(e) => {
                    tracing::error!(target: LOG_TARGET, file = %path.display(), error = %e, "cannot open the access log; lines are dropped until it can be (SIGUSR1 or a reload retries)");
                    None
                }
            }
        }
    }
}

/// Appends now as a JSON string, RFC 3339 UTC with milliseconds (`"2026-12-02T04:11:09.123Z"`).
pub fn now_rfc3339(out: &mut String) {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    out.push('"');
    rfc3339(out, since.as_secs(), since.subsec_millis());
    out.push('"');
}

fn rfc3339(out: &mut String, secs: u64, millis: u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    use crate::telemetry::json::push_padded;
    push_padded(out, year.max(0) as u64, 4);
    out.push('-');
    push_padded(out, month as u64, 2);
    out.push('-');
    push_padded(out, day as u64, 2);
    out.push('T');
    push_padded(out, rem / 3600, 2);
    out.push(':');
    push_padded(out, rem % 3600 / 60, 2);
    out.push(':');
    push_padded(out, rem % 60, 2);
    out.push('.');
    push_padded(out, u64::from(millis), 3);
    out.push('Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        let at = |secs, millis| {
            let mut out = String::new();
            rfc3339(&mut out, secs, millis);
            out
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_796_184_669, 123), "2026-12-02T04:11:09.123Z");
    }
}
