//! Version ranges written the way plugin authors write them (npm / node-semver syntax),
//! translated into `semver` requirements.
//!
//! The `semver` crate understands Cargo requirements only (`>=1.2, <2`); plugin authors write
//! `">=2.1 <3.0"`, `"^1.4"`, `"1.2 - 1.8"` or `"1.x || 2.x"`. This module is the small layer in
//! between. It follows node-semver's documented desugaring (with `includePrerelease` off):
//!
//! | written           | means                          |
//! |-------------------|--------------------------------|
//! | `*`, `x`, `""`    | `>=0.0.0`                      |
//! | `1`, `1.x`        | `>=1.0.0 <2.0.0-0`             |
//! | `1.2`, `1.2.x`    | `>=1.2.0 <1.3.0-0`             |
//! | `1.2.3`, `=1.2.3` | `=1.2.3`                       |
//! | `~1.2.3`          | `>=1.2.3 <1.3.0-0`             |
//! | `~1.2`, `~1`      | `>=1.2.0 <1.3.0-0`, `>=1.0.0 <2.0.0-0` |
//! | `^1.2.3`          | `>=1.2.3 <2.0.0-0`             |
//! | `^0.2.3`, `^0.0.3`| `>=0.2.3 <0.3.0-0`, `>=0.0.3 <0.0.4-0` |
//! | `^0.x`, `^0.0.x`  | `>=0.0.0 <1.0.0-0`, `>=0.0.0 <0.1.0-0` |
//! | `>1`, `>1.2`      | `>=2.0.0`, `>=1.3.0`           |
//! | `<=1.2`, `<1.2`   | `<1.3.0-0`, `<1.2.0-0`         |
//! | `1.2 - 2.3.4`     | `>=1.2.0 <=2.3.4`              |
//! | `1.2.3 - 2.3`     | `>=1.2.3 <2.4.0-0`             |
//! | `A || B`          | either                         |
//!
//! Comparators in one set are separated by white space (`>=2.1 <3.0`); an operator may be
//! followed by spaces (`>= 2.1`); a version may carry a leading `v` or `=`.
//!
//! Pre-releases: a version such as `1.3.0-beta.1` satisfies a comparator set only if one of the
//! set's comparators names a pre-release of the same `MAJOR.MINOR.PATCH` (so `^1.2.0` does not
//! admit `1.3.0-beta.1`, but `>=1.3.0-beta.0 <2` does). This is node-semver's rule and also the
//! `semver` crate's, so each comparator set maps onto one [`semver::VersionReq`].
//!
//! Build metadata in a range is ignored, as in node-semver.

use std::fmt;

use semver::{Comparator, Op, Prerelease, Version, VersionReq};

/// Longest range accepted, in bytes (the manifest schema says the same).
pub const MAX_RANGE_LEN: usize = 256;

/// Largest number accepted in a version part (JavaScript's `Number.MAX_SAFE_INTEGER`, the
/// limit node-semver applies), so that every range we accept means the same in the browser.
const MAX_PART: u64 = 9_007_199_254_740_991;

/// A parsed range: any of `alternatives` (the `||`-separated sets) must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// The range as the author wrote it (trimmed); shown in messages and kept on normalization
    /// so that what the core stores reads like what the author wrote.
    source: String,
    /// One Cargo-style requirement per `||` alternative, comparators already desugared.
    alternatives: Vec<VersionReq>,
}

/// Why a range was rejected; names the offending part.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid range \"{range}\": {reason}")]
pub struct RangeError {
    /// The whole range.
    pub range: String,
    /// The part that could not be read (a comparator, an operator, a version), or empty when
    /// the range as a whole is at fault (for example, too long).
    pub part: String,
    /// What is wrong, naming `part`.
    pub reason: String,
}

// === impl Range ===

impl Range {
    /// Parses a node-semver style range.
    pub fn parse(input: &str) -> Result<Range, RangeError> {
        let source = input.trim().to_string();
        let fail = |part: &str, reason: String| RangeError {
            range: source.clone(),
            part: part.to_string(),
            reason,
        };
        if input.len() > MAX_RANGE_LEN {
            return Err(fail("", format!("longer than {MAX_RANGE_LEN} characters")));
        }
        let mut alternatives = Vec::new();
        for set in source.split("||") {
            let comparators = parse_set(set.trim()).map_err(|e| fail(&e.part, e.reason))?;
            alternatives.push(VersionReq { comparators });
        }
        Ok(Range {
            source,
            alternatives,
        })
    }

    /// Whether `version` lies in the range (node-semver's `satisfies`).
    pub fn matches(&self, version: &Version) -> bool {
        self.alternatives.iter().any(|req| req.matches(version))
    }

    /// The range as written (trimmed).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The translated requirements, one per `||` alternative.
    pub fn requirements(&self) -> &[VersionReq] {
        &self.alternatives
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Range {
    type Err = RangeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Range::parse(s)
    }
}

impl serde::Serialize for Range {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> serde::Deserialize<'de> for Range {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Range::parse(&s).map_err(serde::de::Error::custom)
    }
}

// === parsing ===

/// An error inside one comparator set, before the whole range is attached.
struct PartError {
    part: String,
    reason: String,
}

fn part_error(part: &str, reason: impl Into<String>) -> PartError {
    PartError {
        part: part.to_string(),
        reason: reason.into(),
    }
}

/// The operators a comparator may start with, longest first so `>=` wins over `>`.
const OPERATORS: [&str; 8] = ["<=", ">=", "~>", "<", ">", "=", "~", "^"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    None,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Tilde,
    Caret,
}

fn operator_of(s: &str) -> Operator {
    match s {
        "<" => Operator::Lt,
        "<=" => Operator::Le,
        ">" => Operator::Gt,
        ">=" => Operator::Ge,
        "=" => Operator::Eq,
        "~" | "~>" => Operator::Tilde,
        "^" => Operator::Caret,
        _ => Operator::None,
    }
}

/// A version with parts possibly left out or written as `x`/`X`/`*` (`None`).
#[derive(Debug)]
struct Partial {
    major: Option<u64>,
    minor: Option<u64>,
    patch: Option<u64>,
    pre: Prerelease,
}

impl Partial {
    fn any_wild(&self) -> bool {
        self.major.is_none() || self.minor.is_none() || self.patch.is_none()
    }
}

/// Splits a comparator set into tokens, gluing a bare operator to the version after it
/// (`>= 1.2` is `>=1.2`).
fn tokens(set: &str) -> Result<Vec<String>, PartError> {
    let mut out: Vec<String> = Vec::new();
    let mut pending: Option<&str> = None;
    for word in set.split_whitespace() {
        if let Some(op) = pending.take() {
            out.push(format!("{op}{word}"));
        } else if OPERATORS.contains(&word) {
            pending = Some(word);
        } else {
            out.push(word.to_string());
        }
    }
    if let Some(op) = pending {
        return Err(part_error(
            op,
            format!("operator \"{op}\" is not followed by a version"),
        ));
    }
    Ok(out)
}

fn parse_set(set: &str) -> Result<Vec<Comparator>, PartError> {
    let toks = tokens(set)?;
    if toks.is_empty() {
        // node-semver: an empty set (`""`, or one side of `||`) means any version.
        return Ok(vec![cmp(Op::GreaterEq, 0, 0, 0, Prerelease::EMPTY)]);
    }
    if let Some(pos) = toks.iter().position(|t| t == "-") {
        if toks.len() != 3 || pos != 1 {
            return Err(part_error(
                set,
                format!(
                    "\"{set}\" is not a hyphen range: write exactly one version on each side, as in \"1.2 - 1.8\""
                ),
            ));
        }
        return hyphen(&toks[0], &toks[2]);
    }
    let mut out = Vec::new();
    for tok in &toks {
        out.extend(comparator(tok)?);
    }
    Ok(out)
}

fn hyphen(from: &str, to: &str) -> Result<Vec<Comparator>, PartError> {
    let lo = plain_version(from)?;
    let hi = plain_version(to)?;
    let mut out = Vec::new();
    match (lo.major, lo.minor, lo.patch) {
        (None, _, _) => {}
        (Some(m), None, _) => out.push(cmp(Op::GreaterEq, m, 0, 0, Prerelease::EMPTY)),
        (Some(m), Some(n), None) => out.push(cmp(Op::GreaterEq, m, n, 0, Prerelease::EMPTY)),
        (Some(m), Some(n), Some(p)) => out.push(cmp(Op::GreaterEq, m, n, p, lo.pre)),
    }
    match (hi.major, hi.minor, hi.patch) {
        (None, _, _) => {}
        (Some(m), None, _) => out.push(cmp(Op::Less, bump(to, m)?, 0, 0, pre_zero())),
        (Some(m), Some(n), None) => out.push(cmp(Op::Less, m, bump(to, n)?, 0, pre_zero())),
        (Some(m), Some(n), Some(p)) => out.push(cmp(Op::LessEq, m, n, p, hi.pre)),
    }
    if out.is_empty() {
        out.push(cmp(Op::GreaterEq, 0, 0, 0, Prerelease::EMPTY));
    }
    Ok(out)
}

/// A hyphen-range side: a version with no operator.
fn plain_version(tok: &str) -> Result<Partial, PartError> {
    if OPERATORS
        .iter()
        .any(|op| tok.starts_with(op) && !tok.starts_with('='))
    {
        return Err(part_error(
            tok,
            format!("\"{tok}\": a hyphen range takes plain versions, without operators"),
        ));
    }
    partial(tok, tok)
}

fn comparator(tok: &str) -> Result<Vec<Comparator>, PartError> {
    let op_str = OPERATORS
        .iter()
        .find(|op| tok.starts_with(**op))
        .copied()
        .unwrap_or("");
    let mut op = operator_of(op_str);
    let rest = &tok[op_str.len()..];
    if rest.is_empty() {
        return Err(part_error(
            tok,
            format!("operator \"{tok}\" is not followed by a version"),
        ));
    }
    if OPERATORS.iter().any(|o| rest.starts_with(o) && *o != "=") {
        return Err(part_error(
            tok,
            format!("\"{tok}\" is not a valid comparator: one operator, then a version"),
        ));
    }
    let v = partial(rest, tok)?;
    let any = || vec![cmp(Op::GreaterEq, 0, 0, 0, Prerelease::EMPTY)];
    let nothing = || vec![cmp(Op::Less, 0, 0, 0, pre_zero())];

    if op == Operator::Eq && v.any_wild() {
        op = Operator::None;
    }
    let Some(major) = v.major else {
        return Ok(match op {
            Operator::Lt | Operator::Gt => nothing(),
            _ => any(),
        });
    };
    Ok(match op {
        Operator::Tilde => match (v.minor, v.patch) {
            (None, _) => range2(major, 0, 0, Prerelease::EMPTY, bump(tok, major)?, 0),
            (Some(n), None) => range2(major, n, 0, Prerelease::EMPTY, major, bump(tok, n)?),
            (Some(n), Some(p)) => range2(major, n, p, v.pre, major, bump(tok, n)?),
        },
        Operator::Caret => match (v.minor, v.patch) {
            (None, _) => range2(major, 0, 0, Prerelease::EMPTY, bump(tok, major)?, 0),
            (Some(n), None) if major == 0 => range2(0, n, 0, Prerelease::EMPTY, 0, bump(tok, n)?),
            (Some(n), None) => range2(major, n, 0, Prerelease::EMPTY, bump(tok, major)?, 0),
            (Some(n), Some(p)) if major != 0 => range2(major, n, p, v.pre, bump(tok, major)?, 0),
            (Some(n), Some(p)) if n != 0 => range2(0, n, p, v.pre, 0, bump(tok, n)?),
            (Some(n), Some(p)) => vec![
                cmp(Op::GreaterEq, 0, n, p, v.pre),
                cmp(Op::Less, 0, 0, bump(tok, p)?, pre_zero()),
            ],
        },
        Operator::None => match (v.minor, v.patch) {
            (None, _) => range2(major, 0, 0, Prerelease::EMPTY, bump(tok, major)?, 0),
            (Some(n), None) => range2(major, n, 0, Prerelease::EMPTY, major, bump(tok, n)?),
            (Some(n), Some(p)) => vec![cmp(Op::Exact, major, n, p, v.pre)],
        },
        Operator::Eq => {
            // Only reached with a full version (a wildcard `=` became `Operator::None`).
            vec![cmp(
                Op::Exact,
                major,
                v.minor.unwrap_or(0),
                v.patch.unwrap_or(0),
                v.pre,
            )]
        }
        Operator::Gt => match (v.minor, v.patch) {
            (None, _) => vec![cmp(
                Op::GreaterEq,
                bump(tok, major)?,
                0,
                0,
                Prerelease::EMPTY,
            )],
            (Some(n), None) => vec![cmp(
                Op::GreaterEq,
                major,
                bump(tok, n)?,
                0,
                Prerelease::EMPTY,
            )],
            (Some(n), Some(p)) => vec![cmp(Op::Greater, major, n, p, v.pre)],
        },
        Operator::Ge => match (v.minor, v.patch) {
            (Some(n), Some(p)) => vec![cmp(Op::GreaterEq, major, n, p, v.pre)],
            (n, _) => vec![cmp(
                Op::GreaterEq,
                major,
                n.unwrap_or(0),
                0,
                Prerelease::EMPTY,
            )],
        },
        Operator::Lt => match (v.minor, v.patch) {
            (Some(n), Some(p)) => vec![cmp(Op::Less, major, n, p, v.pre)],
            (n, _) => vec![cmp(Op::Less, major, n.unwrap_or(0), 0, pre_zero())],
        },
        Operator::Le => match (v.minor, v.patch) {
            (None, _) => vec![cmp(Op::Less, bump(tok, major)?, 0, 0, pre_zero())],
            (Some(n), None) => vec![cmp(Op::Less, major, bump(tok, n)?, 0, pre_zero())],
            (Some(n), Some(p)) => vec![cmp(Op::LessEq, major, n, p, v.pre)],
        },
    })
}

/// Parses `[v|=]MAJOR[.MINOR[.PATCH[-PRE][+BUILD]]]` with `x`, `X` or `*` for any part.
/// `tok` is the whole comparator, named in errors.
fn partial(text: &str, tok: &str) -> Result<Partial, PartError> {
    let text = text.trim_start_matches(['v', '=']);
    let bad = |why: &str| part_error(tok, format!("\"{tok}\" is not a valid version: {why}"));
    if text.is_empty() {
        return Err(bad("the version is missing"));
    }
    // Build metadata is ignored; a pre-release may only follow a full MAJOR.MINOR.PATCH.
    let text = match text.split_once('+') {
        Some((v, build)) => {
            if build.is_empty()
                || !build.split('.').all(|id| {
                    !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
            {
                return Err(bad(
                    "build metadata must be dot-separated [0-9A-Za-z-] identifiers",
                ));
            }
            v
        }
        None => text,
    };
    let (core, pre) = match text.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (text, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() > 3 {
        return Err(bad("at most three parts, MAJOR.MINOR.PATCH"));
    }
    let mut nums = [None, None, None];
    let mut wild = false;
    for (i, p) in parts.iter().enumerate() {
        match *p {
            "x" | "X" | "*" => wild = true,
            _ => {
                let n = number(p).map_err(|why| bad(&why))?;
                // node-semver ignores parts after a wildcard (`1.x.3` is `1.x`).
                if !wild {
                    nums[i] = Some(n);
                }
            }
        }
    }
    let pre = match pre {
        None => Prerelease::EMPTY,
        Some(_) if parts.len() < 3 || wild => {
            return Err(bad(
                "a pre-release can only follow a full MAJOR.MINOR.PATCH",
            ));
        }
        Some("") => return Err(bad("the pre-release after '-' is empty")),
        Some(p) => Prerelease::new(p).map_err(|e| bad(&format!("pre-release \"{p}\": {e}")))?,
    };
    Ok(Partial {
        major: nums[0],
        minor: nums[1],
        patch: nums[2],
        pre,
    })
}

fn number(p: &str) -> Result<u64, String> {
    if p.is_empty() {
        return Err("empty version part".to_string());
    }
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("\"{p}\" is not a number or x"));
    }
    if p.len() > 1 && p.starts_with('0') {
        return Err(format!("\"{p}\" has a leading zero"));
    }
    match p.parse::<u64>() {
        Ok(n) if n <= MAX_PART => Ok(n),
        _ => Err(format!("\"{p}\" is larger than {MAX_PART}")),
    }
}

fn bump(tok: &str, n: u64) -> Result<u64, PartError> {
    match n.checked_add(1) {
        Some(m) if m <= MAX_PART => Ok(m),
        _ => Err(part_error(
            tok,
            format!("\"{tok}\": version part {n} is too large to take an upper bound from"),
        )),
    }
}

/// The `-0` pre-release that node-semver puts on exclusive upper bounds (`<2.0.0-0`), so that
/// pre-releases of the next version are excluded too.
fn pre_zero() -> Prerelease {
    Prerelease::new("0").unwrap_or(Prerelease::EMPTY)
}

fn cmp(op: Op, major: u64, minor: u64, patch: u64, pre: Prerelease) -> Comparator {
    Comparator {
        op,
        major,
        minor: Some(minor),
        patch: Some(patch),
        pre,
    }
}

/// `>=lo <hi-0` with the upper bound's patch at 0.
fn range2(
    major: u64,
    minor: u64,
    patch: u64,
    pre: Prerelease,
    hi_major: u64,
    hi_minor: u64,
) -> Vec<Comparator> {
    vec![
        cmp(Op::GreaterEq, major, minor, patch, pre),
        cmp(Op::Less, hi_major, hi_minor, 0, pre_zero()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (range, version, satisfied?) with node-semver's answers (`semver.satisfies(v, r)`,
    /// `includePrerelease` off), from its documented desugaring rules.
    const CASES: &[(&str, &str, bool)] = &[
        // comparators and whitespace
        (">=2.1 <3.0", "2.1.0", true),
        (">=2.1 <3.0", "2.9.9", true),
        (">=2.1 <3.0", "3.0.0", false),
        (">=2.1 <3.0", "2.0.9", false),
        (">= 2.1 < 3.0", "2.5.0", true),
        (">=1.0.0", "1.0.0", true),
        (">1.0.0", "1.0.0", false),
        ("<=1.2.3", "1.2.3", true),
        ("<1.2.3", "1.2.3", false),
        ("=1.2.3", "1.2.3", true),
        ("1.2.3", "1.2.4", false),
        ("v1.2.3", "1.2.3", true),
        // caret
        ("^1.4", "1.4.0", true),
        ("^1.4", "1.99.0", true),
        ("^1.4", "2.0.0", false),
        ("^1.4", "1.3.9", false),
        ("^1.2.3", "1.2.2", false),
        ("^0.2.3", "0.2.9", true),
        ("^0.2.3", "0.3.0", false),
        ("^0.0.3", "0.0.3", true),
        ("^0.0.3", "0.0.4", false),
        ("^0.x", "0.9.0", true),
        ("^0.x", "1.0.0", false),
        ("^0.0.x", "0.0.9", true),
        ("^0.0.x", "0.1.0", false),
        ("^0", "0.5.0", true),
        // tilde
        ("~1.2", "1.2.9", true),
        ("~1.2", "1.3.0", false),
        ("~1.2.3", "1.2.3", true),
        ("~1.2.3", "1.2.2", false),
        ("~1", "1.9.9", true),
        ("~1", "2.0.0", false),
        ("~>1.2", "1.2.5", true),
        ("~0.2.3", "0.3.0", false),
        // x-ranges and partial versions
        ("1.x", "1.0.0", true),
        ("1.x", "1.99.99", true),
        ("1.x", "2.0.0", false),
        ("1.2.x", "1.2.7", true),
        ("1.2.x", "1.3.0", false),
        ("1.X", "1.5.0", true),
        ("1.2", "1.2.0", true),
        ("1.2", "1.3.0", false),
        ("1", "1.0.1", true),
        ("*", "9.9.9", true),
        ("x", "0.0.0", true),
        ("", "1.0.0", true),
        (">1", "1.9.9", false),
        (">1", "2.0.0", true),
        (">1.2", "1.3.0", true),
        (">1.2", "1.2.9", false),
        ("<=1.2", "1.2.9", true),
        ("<=1.2", "1.3.0", false),
        ("<1.2", "1.1.9", true),
        ("<1.2", "1.2.0", false),
        (">=1.2", "1.2.0", true),
        ("=1.2", "1.2.5", true),
        ("<*", "0.0.0", false),
        // hyphen ranges
        ("1.2 - 1.8", "1.2.0", true),
        ("1.2 - 1.8", "1.8.9", true),
        ("1.2 - 1.8", "1.9.0", false),
        ("1.2.3 - 2.3.4", "2.3.4", true),
        ("1.2.3 - 2.3.4", "2.3.5", false),
        ("1.2.3 - 2.3.4", "1.2.2", false),
        ("1.2.3 - 2", "2.9.9", true),
        ("1.2.3 - 2", "3.0.0", false),
        ("* - 2", "0.0.1", true),
        // or
        ("1.x || >=2.5.0 <3", "1.3.0", true),
        ("1.x || >=2.5.0 <3", "2.4.0", false),
        ("1.x || >=2.5.0 <3", "2.7.1", true),
        ("^1.0 || ^2.0", "2.3.0", true),
        ("^1.0 || ^2.0", "3.0.0", false),
        ("^1.0||^2.0", "1.1.0", true),
        ("1.2.3 ||", "9.0.0", true),
        // pre-releases: only when a comparator of the same set names the same M.m.p
        ("^1.2.0", "1.3.0-beta.1", false),
        ("^1.2.0", "1.2.0-beta.1", false),
        (">=1.3.0-beta.0 <2", "1.3.0-beta.1", true),
        (">=1.3.0-beta.0 <2", "1.3.0", true),
        (">=1.3.0-beta.0 <2", "1.4.0-beta.1", false),
        ("^1.2.3-alpha.1", "1.2.3-alpha.7", true),
        ("^1.2.3-alpha.1", "1.2.3-alpha.0", false),
        ("^1.2.3-alpha.1", "1.2.4-alpha.1", false),
        ("~1.2.3-beta.2", "1.2.3-beta.4", true),
        ("~1.2.3-beta.2", "1.2.4-beta.2", false),
        ("*", "1.0.0-rc.1", false),
        ("1.x", "1.1.0-rc.1", false),
        ("<2.0.0", "2.0.0-rc.1", false),
        ("<2", "2.0.0-rc.1", false),
        ("1.0.0-rc.1 - 1.0.0", "1.0.0-rc.2", true),
        ("=1.0.0-rc.1", "1.0.0-rc.1", true),
        ("^1.0.0-0", "1.0.0-rc.1", true),
        // build metadata is ignored
        ("1.2.3+build.5", "1.2.3", true),
        ("^1.2.3", "1.5.0+build.9", true),
    ];

    #[test]
    fn node_semver_table() {
        assert!(CASES.len() >= 40);
        let mut wrong = Vec::new();
        for (range, version, expected) in CASES {
            let r = Range::parse(range).unwrap_or_else(|e| panic!("{range:?}: {e}"));
            let v = Version::parse(version).unwrap();
            if r.matches(&v) != *expected {
                wrong.push(format!(
                    "{range:?} vs {version}: expected {expected}, translated as {:?}",
                    r.requirements()
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// Invalid ranges, with the part the error must name.
    const INVALID: &[(&str, &str)] = &[
        (">=1.0 <<2", "<<2"),
        ("1.2.3.4", "1.2.3.4"),
        ("banana", "banana"),
        (">=", ">="),
        ("^", "^"),
        (">=1.0 <", "<"),
        ("1.2 -", "1.2 -"),
        ("- 1.2", "- 1.2"),
        (">=1 - 2", ">=1"),
        ("1.2-1.8", "1.2-1.8"),
        ("01.2.3", "01.2.3"),
        ("1.2.3-", "1.2.3-"),
        ("1.2.3-beta..1", "1.2.3-beta..1"),
        ("1.x-beta", "1.x-beta"),
        ("^1.2 || >>3", ">>3"),
        ("99999999999999999999", "99999999999999999999"),
        ("1.2.3+", "1.2.3+"),
    ];

    #[test]
    fn invalid_ranges_name_the_bad_part() {
        for (range, part) in INVALID {
            let e = Range::parse(range).expect_err(range);
            assert_eq!(e.part, *part, "{range:?}: {e}");
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("invalid range \"{}\":", range.trim())),
                "{msg}"
            );
            assert!(
                msg.contains(&format!("\"{part}\"")),
                "{msg} does not name {part:?}"
            );
        }
    }

    #[test]
    fn too_long_is_refused() {
        let long = "1.x || ".repeat(40);
        assert!(
            Range::parse(&long)
                .unwrap_err()
                .reason
                .contains("longer than")
        );
    }

    #[test]
    fn display_and_serde_keep_what_was_written() {
        let r = Range::parse("  >=2.1 <3.0 ").unwrap();
        assert_eq!(r.to_string(), ">=2.1 <3.0");
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!(">=2.1 <3.0")
        );
        let back: Range = serde_json::from_value(serde_json::json!(">=2.1 <3.0")).unwrap();
        assert_eq!(back, r);
        assert!(serde_json::from_value::<Range>(serde_json::json!("<<1")).is_err());
    }
}
