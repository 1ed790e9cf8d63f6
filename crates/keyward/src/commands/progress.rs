//! Progress and Ctrl-C for the long operations (`store copy`, `backup`, `restore`, and
//! `token revoke --all`).
//!
//! On a terminal, a bar on stderr with the rate and the time left; in a pipe, or with
//! `--quiet`, nothing until the command's one summary line. Ctrl-C does not kill the process: it
//! asks the operation to stop ([`keyward::keyward_store::Progress::stopped`]), which rolls back
//! or removes its partial file, and the command then says so and exits 130.

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use keyward::keyward_store::Progress;
use std::io::IsTerminal as _;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// A long operation stopped by Ctrl-C; the message says what was (not) left behind (or, for a
/// bulk revocation, done).
#[derive(Debug, thiserror::Error)]
#[error("interrupted: {0}")]
pub(super) struct Interrupted(pub(super) String);

/// Whether Ctrl-C was pressed since [`Interrupt::listen`].
#[derive(Clone)]
pub(super) struct Interrupt {
    pressed: watch::Receiver<bool>,
}

impl Interrupt {
    /// Takes over Ctrl-C (SIGINT) from here on: it no longer kills the process.
    pub(super) fn listen() -> anyhow::Result<Self> {
        let mut interrupts = signal(SignalKind::interrupt()).context("cannot handle Ctrl-C")?;
        let (press, pressed) = watch::channel(false);
        tokio::spawn(async move {
            if interrupts.recv().await.is_some() {
                let _ = press.send(true);
            }
        });
        Ok(Self { pressed })
    }

    /// Whether Ctrl-C was pressed.
    pub(super) fn pressed(&self) -> bool {
        *self.pressed.borrow()
    }

    /// Returns once Ctrl-C is pressed.
    pub(super) async fn wait(&self) {
        let mut pressed = self.pressed.clone();
        if pressed.wait_for(|p| *p).await.is_err() {
            // The listener is gone without a press: none will come.
            std::future::pending::<()>().await;
        }
    }
}

/// What an operation counts.
#[derive(Debug, Clone, Copy)]
pub(super) enum Unit {
    /// Rows written (a copy, a restore).
    Rows,
    /// Bytes copied (a backup).
    Bytes,
    /// Tokens revoked (a bulk revocation).
    Tokens,
}

/// A progress bar (hidden unless stderr is a terminal and not `--quiet`) that also carries the
/// Ctrl-C state to the operation.
pub(super) struct Meter {
    bar: ProgressBar,
    unit: Unit,
    interrupt: Interrupt,
}

impl Meter {
    /// A meter for an operation counted in `unit`.
    pub(super) fn new(quiet: bool, unit: Unit, interrupt: Interrupt) -> Self {
        let bar = if quiet || !std::io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        };
        Self {
            bar,
            unit,
            interrupt,
        }
    }

    /// Shows `what` with a spinner, for a phase whose size is not known (reading a database).
    pub(super) fn spin(&self, what: String) {
        self.bar.set_style(style("{spinner} {msg} {elapsed}"));
        self.bar.set_message(what);
        self.bar.enable_steady_tick(Duration::from_millis(120));
    }

    /// Clears the bar, before the summary line or an error.
    pub(super) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Meter {
    fn start(&self, total: u64) {
        let template = match self.unit {
            Unit::Rows => "{msg} [{bar:30}] {human_pos}/{human_len} rows, {per_sec}, {eta} left",
            Unit::Bytes => "{msg} [{bar:30}] {bytes}/{total_bytes}, {bytes_per_sec}, {eta} left",
            Unit::Tokens => {
                "{msg} [{bar:30}] {human_pos}/{human_len} tokens, {per_sec}, {eta} left"
            }
        };
        self.bar.set_style(style(template).progress_chars("=> "));
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.reset_eta();
    }

    fn advance(&self, done: u64) {
        self.bar.inc(done);
    }

    fn stopped(&self) -> bool {
        self.interrupt.pressed()
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}
