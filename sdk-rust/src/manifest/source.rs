//! Reading a manifest document from bytes: size limit, UTF-8, YAML or JSON, with bounded work.
//!
//! Everything that can go wrong before the document is a JSON value ends here as a
//! [`SourceError`] with a line and column where the parser knows them. The checks:
//!
//! - more than [`MAX_MANIFEST_BYTES`] is refused before any parsing;
//! - bytes that are not UTF-8 are refused, naming the line and column of the first bad byte;
//! - duplicate keys are refused (YAML and JSON alike; a silent "last one wins" hides mistakes);
//! - nesting deeper than the parsers' limit (128) is refused;
//! - a document that expands to more than [`MAX_NODES`] values is refused, which bounds YAML
//!   alias bombs ("billion laughs") to a few hundred thousand steps;
//! - more than one YAML document, non-finite numbers (`.nan`, `.inf`) and non-scalar keys are
//!   refused.

use std::cell::Cell;
use std::fmt;
use std::path::Path;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Largest manifest accepted, in bytes (1 MiB).
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// Most values (scalars, sequences, mappings) one document may hold after YAML aliases are
/// expanded.
pub const MAX_NODES: usize = 100_000;

/// The syntax of a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// YAML 1.2 (also reads JSON, but with YAML's messages).
    Yaml,
    /// JSON.
    Json,
}

impl Format {
    /// `.json` files are JSON; everything else is read as YAML.
    pub fn from_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// What kind of problem stopped a document from being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// Larger than [`MAX_MANIFEST_BYTES`].
    TooLarge,
    /// Not UTF-8.
    NotUtf8,
    /// Not well-formed YAML or JSON, or a structure refused above (duplicate keys, several
    /// documents, non-finite numbers, non-scalar keys).
    Syntax,
    /// Well-formed, but over a work limit: nested too deep, or too many values once YAML
    /// aliases are expanded.
    TooComplex,
}

impl SourceErrorKind {
    /// Every kind, so docs and tests can list their codes.
    pub const ALL: [SourceErrorKind; 4] = [
        SourceErrorKind::TooLarge,
        SourceErrorKind::NotUtf8,
        SourceErrorKind::Syntax,
        SourceErrorKind::TooComplex,
    ];

    /// A stable, machine-readable code (used by `--json` output).
    pub fn code(self) -> &'static str {
        match self {
            SourceErrorKind::TooLarge => "manifest_too_large",
            SourceErrorKind::NotUtf8 => "manifest_not_utf8",
            SourceErrorKind::Syntax => "manifest_syntax",
            SourceErrorKind::TooComplex => "manifest_too_complex",
        }
    }
}

/// A document that could not be read, with the position of the problem when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceError {
    /// What went wrong, broadly.
    pub kind: SourceErrorKind,
    /// What went wrong, in words, without the position.
    pub message: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: {}", self.message),
            (Some(l), None) => write!(f, "line {l}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for SourceError {}

impl SourceError {
    fn new(kind: SourceErrorKind, message: impl Into<String>) -> SourceError {
        SourceError {
            kind,
            message: message.into(),
            line: None,
            column: None,
        }
    }
}

/// Parses `bytes` as one YAML or JSON document into a JSON value.
pub fn parse(bytes: &[u8], format: Format) -> Result<Value, SourceError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(too_large(bytes.len()));
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => return Err(not_utf8(bytes, e.valid_up_to())),
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let budget = Cell::new(MAX_NODES);
    match format {
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let value = Node { budget: &budget }
                .deserialize(&mut de)
                .and_then(|v| de.end().map(|()| v))
                .map_err(json_error)?;
            Ok(value)
        }
        Format::Yaml => {
            let de = serde_norway::Deserializer::from_str(text);
            Node { budget: &budget }
                .deserialize(de)
                .map_err(|e| refine_duplicate(yaml_error(e), text))
        }
    }
}

/// The error for a document of `len` bytes, over the limit.
pub fn too_large(len: usize) -> SourceError {
    SourceError::new(
        SourceErrorKind::TooLarge,
        format!(
            "the document is {len} bytes; the limit is {MAX_MANIFEST_BYTES} bytes (1 MiB), so it was not parsed"
        ),
    )
}

fn not_utf8(bytes: &[u8], valid_up_to: usize) -> SourceError {
    let before = &bytes[..valid_up_to];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    // Columns count characters, and everything before `valid_up_to` is valid UTF-8.
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    SourceError {
        kind: SourceErrorKind::NotUtf8,
        message: format!(
            "byte 0x{:02x} at offset {valid_up_to} is not valid UTF-8; save the file as UTF-8",
            bytes.get(valid_up_to).copied().unwrap_or_default()
        ),
        line: Some(line),
        column: Some(column),
    }
}

/// Classifies a parser message, saying what the parsers' terse limit messages mean.
fn explain(message: String) -> (SourceErrorKind, String) {
    if message.contains("recursion limit exceeded") {
        (
            SourceErrorKind::TooComplex,
            "nested more than 128 levels deep; refused to bound the work".to_string(),
        )
    } else if message.contains("repetition limit exceeded") {
        (
            SourceErrorKind::TooComplex,
            "YAML aliases expand to far more values than the document holds (\"billion laughs\"); refused to bound the work".to_string(),
        )
    } else if message.contains(LIMIT_MARK) {
        (SourceErrorKind::TooComplex, message)
    } else {
        (SourceErrorKind::Syntax, message)
    }
}

/// Words in the node-budget message, to recognise it after the parser wrapped it.
const LIMIT_MARK: &str = "values once YAML aliases are expanded";

fn json_error(e: serde_json::Error) -> SourceError {
    let (line, column) = (e.line(), e.column());
    // serde_json appends " at line L column C"; keep the message without it.
    let full = e.to_string();
    let message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    let (kind, message) = explain(message);
    SourceError {
        kind,
        message,
        line: (line > 0).then_some(line),
        column: (line > 0).then_some(column),
    }
}

fn yaml_error(e: serde_norway::Error) -> SourceError {
    let location = e.location();
    let full = e.to_string();
    let message = match (&location, full.find(" at line ")) {
        (Some(_), Some(i)) => {
            // "... at line L column C, while parsing ..." -> keep the context after the position.
            let rest = &full[i + " at line ".len()..];
            let context = rest.find(", ").map(|j| &rest[j..]).unwrap_or("");
            format!("{}{context}", &full[..i])
        }
        _ => full,
    };
    let (kind, message) = if message.contains("more than one document") {
        (
            SourceErrorKind::Syntax,
            "the file holds more than one YAML document (separated by ---); a manifest is one document"
                .to_string(),
        )
    } else {
        explain(message)
    };
    SourceError {
        kind,
        message,
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
    }
}

/// The YAML reader places a duplicate-key error at the start of the mapping; in a block
/// mapping the repeated key is the next line at the same indentation that names it again.
fn refine_duplicate(mut e: SourceError, text: &str) -> SourceError {
    let Some(key) = e
        .message
        .split_once("duplicate key \"")
        .and_then(|(_, rest)| rest.split('"').next())
    else {
        return e;
    };
    let (Some(line), Some(column)) = (e.line, e.column) else {
        return e;
    };
    let indent = column - 1;
    let names_key = |l: &str| {
        let Some(rest) = l.get(indent..) else {
            return false;
        };
        if l[..indent].chars().any(|c| c != ' ' && c != '-') {
            return false;
        }
        [
            format!("{key}:"),
            format!("\"{key}\":"),
            format!("'{key}':"),
        ]
        .iter()
        .any(|k| rest.starts_with(k.as_str()))
    };
    let mut hits = text
        .lines()
        .enumerate()
        .skip(line - 1)
        .filter(|(_, l)| names_key(l));
    if let (Some(_), Some((i, _))) = (hits.next(), hits.next()) {
        e.line = Some(i + 1);
        e.column = Some(column);
    }
    e
}

// === the value builder ===

/// Builds a [`Value`] from any serde deserializer, refusing duplicate keys and non-finite
/// numbers, and charging every value against a shared budget.
struct Node<'a> {
    budget: &'a Cell<usize>,
}

impl Node<'_> {
    fn charge<E: de::Error>(&self) -> Result<(), E> {
        match self.budget.get().checked_sub(1) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(E::custom(format_args!(
                "the document holds more than {MAX_NODES} {LIMIT_MARK}; refused to bound the work"
            ))),
        }
    }

    fn child(&self) -> Node<'_> {
        Node {
            budget: self.budget,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.charge()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.charge()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.charge()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.charge()?;
        Number::from_f64(v).map(Value::Number).ok_or_else(|| {
            E::custom(format_args!(
                "{v} is not a finite number; JSON has no NaN or infinity"
            ))
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.charge()?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.charge()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.charge()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.charge()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.child())? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.charge()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key \"{key}\"")));
            }
            let value = map.next_value_seed(self.child())?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_and_json_give_the_same_value() {
        let y = parse(b"name: hello\nlist: [1, 2.5, true, null]\n", Format::Yaml).unwrap();
        let j = parse(
            br#"{"name":"hello","list":[1,2.5,true,null]}"#,
            Format::Json,
        )
        .unwrap();
        assert_eq!(y, j);
        assert_eq!(y, json!({"name": "hello", "list": [1, 2.5, true, null]}));
    }

    #[test]
    fn duplicate_keys_are_refused_with_position() {
        let e = parse(b"name: a\nversion: 1.0.0\nname: b\n", Format::Yaml).unwrap_err();
        assert_eq!(e.kind, SourceErrorKind::Syntax);
        assert!(e.message.contains("duplicate key \"name\""), "{e}");
        assert_eq!((e.line, e.column), (Some(3), Some(1)));
        let e = parse(
            b"ui:\n  mode: ModuleFederation\n  x: 1\n  mode: Other\n",
            Format::Yaml,
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (Some(4), Some(3)), "{e:?}");
        let e = parse(br#"{"a": 1, "a": 2}"#, Format::Json).unwrap_err();
        assert!(e.message.contains("duplicate key \"a\""), "{e}");
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let e = parse(b"name: hello\nui: [1\n", Format::Yaml).unwrap_err();
        assert_eq!(e.kind, SourceErrorKind::Syntax);
        assert_eq!((e.line, e.column), (Some(3), Some(1)), "{e:?}");
        assert!(
            e.message.starts_with("did not find expected ',' or ']'"),
            "{e:?}"
        );
        let e = parse(b"{\"a\": }", Format::Json).unwrap_err();
        assert_eq!((e.line, e.column), (Some(1), Some(7)));
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let big = vec![b'#'; MAX_MANIFEST_BYTES + 1];
        let e = parse(&big, Format::Yaml).unwrap_err();
        assert_eq!(e.kind, SourceErrorKind::TooLarge);
        assert!(parse(&vec![b' '; MAX_MANIFEST_BYTES], Format::Yaml).is_ok());
    }

    #[test]
    fn non_utf8_names_the_position() {
        let e = parse(b"name: ok\nti\xfftle: x\n", Format::Yaml).unwrap_err();
        assert_eq!(e.kind, SourceErrorKind::NotUtf8);
        assert_eq!((e.line, e.column), (Some(2), Some(3)));
        assert!(e.message.contains("0xff"), "{e}");
    }

    #[test]
    fn alias_bomb_is_bounded() {
        let mut doc = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for (i, prev) in ["b", "c", "d", "e", "f", "g", "h", "i"]
            .iter()
            .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
        {
            doc.push_str(&format!("{i}: &{i} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
        }
        let e = parse(doc.as_bytes(), Format::Yaml).unwrap_err();
        assert_eq!(e.kind, SourceErrorKind::TooComplex, "{e}");
        assert!(e.message.contains("billion laughs"), "{e}");
    }

    #[test]
    fn node_budget_bounds_expansion_below_the_parser_limit() {
        // 400 aliases of a 400-item list: few events for the parser, 160,000 values.
        let mut doc = format!("a: &a [{}]\nb: [", vec!["1"; 400].join(","));
        doc.push_str(&vec!["*a"; 400].join(","));
        doc.push_str("]\n");
        let e = parse(doc.as_bytes(), Format::Yaml).unwrap_err();
        assert_eq!(e.kind, SourceErrorKind::TooComplex, "{e}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let doc = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert_eq!(
            parse(doc.as_bytes(), Format::Yaml).unwrap_err().kind,
            SourceErrorKind::TooComplex
        );
        assert_eq!(
            parse(doc.as_bytes(), Format::Json).unwrap_err().kind,
            SourceErrorKind::TooComplex
        );
        let mut nested = String::new();
        for i in 0..1000 {
            nested.push_str(&" ".repeat(i));
            nested.push_str("a:\n");
        }
        assert_eq!(
            parse(nested.as_bytes(), Format::Yaml).unwrap_err().kind,
            SourceErrorKind::TooComplex
        );
    }

    #[test]
    fn special_values_and_documents() {
        assert_eq!(parse(b"", Format::Yaml).unwrap(), Value::Null);
        assert_eq!(
            parse(b"\xef\xbb\xbfa: 1\n", Format::Yaml).unwrap(),
            json!({"a": 1})
        );
        let e = parse(b"a: .nan\n", Format::Yaml).unwrap_err();
        assert!(e.message.contains("not a finite number"), "{e}");
        let e = parse(b"a: 1\n---\nb: 2\n", Format::Yaml).unwrap_err();
        assert!(e.message.contains("more than one YAML document"), "{e}");
        assert!(parse(b"? [1]\n: 2\n", Format::Yaml).is_err());
        assert!(parse(b"{} x", Format::Json).is_err());
    }
}
