//! Running cases: selection, outcomes, expectations.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::case::{Case, Finding, Level};
use crate::target::{Ctx, Implementation, Sources, TargetConfig};

/// How a case ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The requirement held.
    Pass,
    /// A MUST did not hold.
    Fail,
    /// A SHOULD did not hold.
    NonStrict,
    /// An informational case reported what it saw.
    Info,
    /// Not run on purpose (not applicable to this target).
    Skip,
    /// The target lacks what the case needs.
    Unsupported,
    /// Harness or connection trouble, kept apart from failures.
    Error,
}

impl Outcome {
    /// Stable lower-case name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::NonStrict => "non-strict",
            Self::Info => "info",
            Self::Skip => "skip",
            Self::Unsupported => "unsupported",
            Self::Error => "error",
        }
    }
}

/// The result of one case.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CaseReport {
    /// The case.
    pub case: Case,
    /// How it ended.
    pub outcome: Outcome,
    /// What the requirement asks for (on failure).
    pub expected: Option<String>,
    /// What was observed (on failure), or the observation / reason.
    pub actual: Option<String>,
    /// How long it took.
    pub duration: Duration,
    /// The reason from the expectations file, when the case is a known
    /// deviation of this implementation.
    pub known_deviation: Option<String>,
}

impl CaseReport {
    /// Whether this result makes the run fail (exit code 1).
    #[must_use]
    pub fn is_unexpected(&self, strict: bool) -> bool {
        let bad = match self.outcome {
            Outcome::Fail | Outcome::Error => true,
            Outcome::NonStrict => strict,
            _ => false,
        };
        bad && self.known_deviation.is_none()
    }
}

/// Runs one case against `imp`, turning a panic into `error`.
pub fn run_case(
    case: &Case,
    cfg: &TargetConfig,
    imp: &mut dyn Implementation,
    sources: &Sources,
) -> CaseReport {
    let start = Instant::now();
    let result = if case.needs_echo && !cfg.echo {
        Err(Finding::Unsupported(
            "needs the implementation's echo mode".into(),
        ))
    } else {
        let mut ctx = Ctx::new(cfg, imp, sources);
        catch_unwind(AssertUnwindSafe(|| (case.run)(&mut ctx))).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "panic".into());
            Err(Finding::Error(format!("case panicked: {msg}")))
        })
    };
    let (outcome, expected, actual) = match result {
        Ok(note) if case.level == Level::Info => (Outcome::Info, None, Some(note)),
        Ok(note) => (Outcome::Pass, None, Some(note)),
        Err(Finding::Fail { expected, actual }) => {
            let o = match case.level {
                Level::Must => Outcome::Fail,
                Level::Should => Outcome::NonStrict,
                Level::Info => Outcome::Info,
            };
            (o, Some(expected), Some(actual))
        }
        Err(Finding::Unsupported(r)) => (Outcome::Unsupported, None, Some(r)),
        Err(Finding::Skip(r)) => (Outcome::Skip, None, Some(r)),
        Err(Finding::Error(r)) => (Outcome::Error, None, Some(r)),
    };
    CaseReport {
        case: *case,
        outcome,
        expected,
        actual,
        duration: start.elapsed(),
        known_deviation: None,
    }
}

/// Which cases to run: section prefixes (`R1`, `R1-5`, `R1-5.2/3`; none
/// means all) minus `--exclude` globs.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Selection {
    /// Section prefixes or ids.
    pub include: Vec<String>,
    /// Globs over ids (`*` and `?`).
    pub exclude: Vec<String>,
}

impl Selection {
    /// Whether `id` is selected.
    #[must_use]
    pub fn matches(&self, id: &str) -> bool {
        let included =
            self.include.is_empty() || self.include.iter().any(|p| prefix_matches(p, id));
        included && !self.exclude.iter().any(|g| glob(g, id))
    }

    /// The selected cases of `cases`, in order.
    #[must_use]
    pub fn apply(&self, cases: &[Case]) -> Vec<Case> {
        cases
            .iter()
            .filter(|c| self.matches(c.id))
            .copied()
            .collect()
    }
}

/// `R1-5` selects `R1-5.2/3` but not `R1-50.1/1`.
#[must_use]
pub fn prefix_matches(prefix: &str, id: &str) -> bool {
    match id.strip_prefix(prefix) {
        Some("") => true,
        Some(rest) => rest.starts_with(['-', '.', '/']) || prefix.ends_with(['-', '.', '/']),
        None => false,
    }
}

/// Shell-style glob with `*` and `?`.
#[must_use]
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Known deviations of an implementation: `ID-or-GLOB reason…` per line,
/// `#` comments.
#[derive(Clone, Debug, Default)]
pub struct Expectations {
    entries: Vec<(String, String)>,
}

impl Expectations {
    /// Parses the file's text; a line without a reason is an error.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, reason) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("line {}: `{line}` has no reason", n + 1))?;
            entries.push((id.to_string(), reason.trim().to_string()));
        }
        Ok(Self { entries })
    }

    /// The reason `id` is a known deviation, if it is one.
    #[must_use]
    pub fn reason(&self, id: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(g, _)| glob(g, id))
            .map(|(_, r)| r.as_str())
    }

    /// Marks the reports that are known deviations.
    pub fn apply(&self, reports: &mut [CaseReport]) {
        for r in reports {
            if matches!(
                r.outcome,
                Outcome::Fail | Outcome::NonStrict | Outcome::Error
            ) {
                r.known_deviation = self.reason(r.case.id).map(str::to_string);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_respect_section_boundaries() {
        assert!(prefix_matches("R1", "R1-5.2/3"));
        assert!(prefix_matches("R1-5", "R1-5.2/3"));
        assert!(prefix_matches("R1-5.2/3", "R1-5.2/3"));
        assert!(!prefix_matches("R1-5.2/3", "R1-5.2/30"));
        assert!(!prefix_matches("R1-1", "R1-10.4/1"));
        assert!(!prefix_matches("R2", "R1-5.2/3"));
    }

    #[test]
    fn globs() {
        assert!(glob("R1-9.*", "R1-9.2/3"));
        assert!(glob("*/1", "R2-4.3/1"));
        assert!(!glob("*/1", "R2-4.3/10"));
        assert!(glob("R?-4.3/?", "R2-4.3/5"));
        assert!(!glob("R1-4*", "R2-4.3/5"));
    }

    #[test]
    fn expectations_need_reasons() {
        assert!(Expectations::parse("R1-4.4/3\n").is_err());
        let e =
            Expectations::parse("# python\nR2-4.3/* does not check HELLO challenges\n").unwrap();
        assert_eq!(
            e.reason("R2-4.3/1"),
            Some("does not check HELLO challenges")
        );
        assert_eq!(e.reason("R2-4.2/1"), None);
    }
}
