//! Lines on standard output: one JSON object per line with `--json`,
//! readable text otherwise; each line is flushed as it is written so that
//! another program can follow the output live.

use std::io::Write;

use serde_json::Value;

/// Where a command reports what happens.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Out {
    json: bool,
    /// Lines go to this thread's capture instead of standard output.
    capture: bool,
}

thread_local! {
    static CAPTURED: std::cell::RefCell<Vec<Value>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Out {
    pub(crate) fn new(json: bool) -> Self {
        Self {
            json,
            capture: false,
        }
    }

    /// The JSON lines `f` emits through the `Out` it is given, collected
    /// instead of printed (the audit log and the metrics see the events as
    /// `--json` shows them).
    pub(crate) fn capture(f: impl FnOnce(Out)) -> Vec<Value> {
        let previous = CAPTURED.with(|c| std::mem::take(&mut *c.borrow_mut()));
        f(Self {
            json: true,
            capture: true,
        });
        CAPTURED.with(|c| std::mem::replace(&mut *c.borrow_mut(), previous))
    }

    /// Writes `json` or `human`, whichever the output mode asks for.
    pub(crate) fn emit(self, json: Value, human: impl FnOnce() -> String) {
        if self.capture {
            CAPTURED.with(|c| c.borrow_mut().push(json));
            return;
        }
        let line = if self.json { json.to_string() } else { human() };
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (e.g. `| head`) must not kill a running node.
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    /// A line of text in human mode only (progress notes, summaries).
    pub(crate) fn note(self, human: impl FnOnce() -> String) {
        if !self.json {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{}", human());
            let _ = stdout.flush();
        }
    }
}

/// A line on standard error that never panics: a node must outlive a
/// stderr that fails (a full disk, a file-size limit, a closed pipe), where
/// `eprintln!` would panic in the middle of a stream's handler.
pub(crate) fn warn(line: std::fmt::Arguments<'_>) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
