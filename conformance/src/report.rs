//! Output: human (grouped by section, summary last), JSON (one object per
//! case), JUnit XML (one suite per section).

use std::fmt::Write as _;

use crate::run::{CaseReport, Outcome};
use crate::spec::{citation, section};

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// Grouped by section, summary line last.
    Human,
    /// A JSON array, one object per case.
    Json,
    /// JUnit XML, one testsuite per section.
    Junit,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "human" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            "junit" => Ok(Self::Junit),
            other => Err(format!("unknown format `{other}` (human, json, junit)")),
        }
    }
}

/// Counts for the summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// pass + info.
    pub passed: usize,
    /// fail (and non-strict under `--strict`), not known deviations.
    pub failed: usize,
    /// skip + unsupported.
    pub skipped: usize,
    /// non-strict outcomes.
    pub non_strict: usize,
    /// error outcomes.
    pub errors: usize,
    /// failures listed in the expectations file.
    pub known: usize,
    /// Of `failed`, the cases whose requirement an RFC states.
    pub rfc_failed: usize,
    /// Of `failed`, the cases whose requirement is WIRE.md's alone.
    pub wire_failed: usize,
}

/// Counts `reports`.
#[must_use]
pub fn summary(reports: &[CaseReport], strict: bool) -> Summary {
    let mut s = Summary::default();
    for r in reports {
        if r.known_deviation.is_some() {
            s.known += 1;
            continue;
        }
        let failed = match r.outcome {
            Outcome::Pass | Outcome::Info => {
                s.passed += 1;
                false
            }
            Outcome::Fail => true,
            Outcome::NonStrict => {
                s.non_strict += 1;
                strict
            }
            Outcome::Skip | Outcome::Unsupported => {
                s.skipped += 1;
                false
            }
            Outcome::Error => {
                s.errors += 1;
                false
            }
        };
        if failed {
            s.failed += 1;
            if r.case.wire_only() {
                s.wire_failed += 1;
            } else {
                s.rfc_failed += 1;
            }
        }
    }
    s
}

fn groups(reports: &[CaseReport]) -> Vec<(&'static str, Vec<&CaseReport>)> {
    let mut out: Vec<(&'static str, Vec<&CaseReport>)> = Vec::new();
    for r in reports {
        let sec = r.case.section();
        match out.iter_mut().find(|(s, _)| *s == sec) {
            Some((_, v)) => v.push(r),
            None => out.push((sec, vec![r])),
        }
    }
    out
}

fn mark(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "✔",
        Outcome::Fail => "×",
        Outcome::NonStrict => "!",
        Outcome::Info => "i",
        Outcome::Skip | Outcome::Unsupported => "-",
        Outcome::Error => "E",
    }
}

/// Human output; the last line is `N passed, N failed, N skipped`.
#[must_use]
pub fn human(reports: &[CaseReport], strict: bool, target: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "ASoc conformance against {target}\n");
    for (sec, rs) in groups(reports) {
        let title = section(sec).map_or("", |s| s.title);
        let _ = writeln!(out, "{sec}  {title} ({})", citation(sec));
        for r in rs {
            let c = &r.case;
            let _ = writeln!(
                out,
                "  {} {:<11} {} [{}] {} ({} ms)",
                mark(r.outcome),
                c.id,
                c.title,
                c.level_label(),
                r.outcome.as_str(),
                r.duration.as_millis()
            );
            match r.outcome {
                Outcome::Fail | Outcome::NonStrict => {
                    let _ = writeln!(out, "      requirement: {}", c.requirement);
                    let _ = writeln!(
                        out,
                        "      expected: {}",
                        r.expected.as_deref().unwrap_or("")
                    );
                    let _ = writeln!(out, "      actual:   {}", r.actual.as_deref().unwrap_or(""));
                }
                Outcome::Pass => {}
                _ => {
                    if let Some(a) = &r.actual {
                        let _ = writeln!(out, "      {a}");
                    }
                }
            }
            if let Some(k) = &r.known_deviation {
                let _ = writeln!(out, "      known deviation: {k}");
            }
        }
        out.push('\n');
    }
    let s = summary(reports, strict);
    let _ = writeln!(out, "{}", failed_line(&s));
    let _ = writeln!(
        out,
        "{} non-strict, {} errors, {} known deviations",
        s.non_strict, s.errors, s.known
    );
    let _ = writeln!(
        out,
        "{} passed, {} failed, {} skipped",
        s.passed, s.failed, s.skipped
    );
    out
}

/// `failed: N of RFC requirements, N of WIRE.md-only ones`.
#[must_use]
pub fn failed_line(s: &Summary) -> String {
    format!(
        "failed: {} of RFC requirements, {} of WIRE.md-only requirements",
        s.rfc_failed, s.wire_failed
    )
}

/// JSON: an array with one object per case.
#[must_use]
pub fn json(reports: &[CaseReport]) -> String {
    let v: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.case.id,
                "section": r.case.section(),
                "title": r.case.title,
                "requirement": r.case.requirement,
                "level": r.case.level.as_str(),
                "wire_only": r.case.wire_only(),
                "role": r.case.role.as_str(),
                "transport": r.case.transport.as_str(),
                "outcome": r.outcome.as_str(),
                "expected": r.expected,
                "actual": r.actual,
                "duration": r.duration.as_secs_f64(),
                "known_deviation": r.known_deviation,
            })
        })
        .collect();
    serde_json::to_string_pretty(&v).unwrap_or_else(|_| "[]".into()) + "\n"
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => o.push(c),
        }
    }
    o
}

/// JUnit XML: one testsuite per section, `name` on every testcase.
#[must_use]
pub fn junit(reports: &[CaseReport], strict: bool) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"asoc-conformance\">\n",
    );
    for (sec, rs) in groups(reports) {
        let count = |f: &dyn Fn(&CaseReport) -> bool| rs.iter().filter(|r| f(r)).count();
        let failures = count(&|r| r.is_unexpected(strict) && r.outcome != Outcome::Error);
        let errors = count(&|r| r.is_unexpected(strict) && r.outcome == Outcome::Error);
        let skipped = count(&|r| matches!(r.outcome, Outcome::Skip | Outcome::Unsupported));
        let time: f64 = rs.iter().map(|r| r.duration.as_secs_f64()).sum();
        let title = section(sec).map_or("", |s| s.title);
        let _ = writeln!(
            out,
            "  <testsuite name=\"{} {}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time:.3}\">",
            esc(sec),
            esc(title),
            rs.len()
        );
        for r in rs {
            let _ = write!(
                out,
                "    <testcase name=\"{} {}\" classname=\"{}\" time=\"{:.3}\"",
                esc(r.case.id),
                esc(r.case.title),
                esc(sec),
                r.duration.as_secs_f64()
            );
            let detail = format!(
                "requirement: {}\nexpected: {}\nactual: {}{}",
                r.case.requirement,
                r.expected.as_deref().unwrap_or(""),
                r.actual.as_deref().unwrap_or(""),
                r.known_deviation
                    .as_deref()
                    .map(|k| format!("\nknown deviation: {k}"))
                    .unwrap_or_default()
            );
            let msg = |o: Outcome| format!("{} ({})", o.as_str(), r.case.level_label());
            match r.outcome {
                _ if r.is_unexpected(strict) && r.outcome == Outcome::Error => {
                    let _ = writeln!(
                        out,
                        ">\n      <error message=\"{}\">{}</error>\n    </testcase>",
                        esc(&msg(r.outcome)),
                        esc(&detail)
                    );
                }
                _ if r.is_unexpected(strict) => {
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        esc(&msg(r.outcome)),
                        esc(&detail)
                    );
                }
                Outcome::Skip | Outcome::Unsupported => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"{}: {}\"/>\n    </testcase>",
                        r.outcome.as_str(),
                        esc(r.actual.as_deref().unwrap_or(""))
                    );
                }
                Outcome::Pass => {
                    let _ = writeln!(out, "/>");
                }
                _ => {
                    let _ = writeln!(
                        out,
                        ">\n      <system-out>{}</system-out>\n    </testcase>",
                        esc(&format!("{}: {detail}", r.outcome.as_str()))
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}
