//! Remote files served through the core's origin: `GET /plugins/<name>/<version>/<path>`.
//!
//! `<path>` is relative to the directory of the plugin's `remoteUrl`; the core fetches
//! `dirname(remoteUrl)/<path>` (never outside that directory, never following redirects) and
//! caches it by (plugin, version, entry integrity, path): a rebuilt remote entry under the same
//! version never meets the chunks of the old one. The remote entry itself is served from the
//! bytes the prober fetched and hashed (or fetched on demand and checked against the pinned
//! integrity), so what the browser runs is exactly what the `integrity` in the shell list
//! describes. The cache is bounded in bytes and evicts the least recently used file.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

/// The cache key of a remote file: the entry's integrity is part of it.
pub fn key(plugin: &str, version: &str, entry_integrity: &str, path: &str) -> String {
    format!("{plugin}/{version}/{entry_integrity}/{path}")
}

/// The strong ETag of a remote file: a digest of the entry's integrity and the file's path
/// (files under one entry are immutable).
pub fn etag(entry_integrity: &str, path: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(entry_integrity.as_bytes())
        .chain_update([0u8])
        .chain_update(path.as_bytes())
        .finalize();
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// The cache.
#[derive(Debug)]
pub struct AssetCache {
    max_bytes: u64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    files: HashMap<String, (Bytes, u64)>,
    bytes: u64,
    clock: u64,
}

impl AssetCache {
    /// A cache holding at most `max_bytes`.
    pub fn new(max_bytes: u64) -> AssetCache {
        AssetCache {
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// A cached file.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        let mut inner = crate::sync::lock(&self.inner);
        inner.clock += 1;
        let clock = inner.clock;
        inner.files.get_mut(key).map(|(b, used)| {
            *used = clock;
            b.clone()
        })
    }

    /// Caches a file, evicting the least recently used ones to stay under the limit.
    pub fn put(&self, key: String, bytes: Bytes) {
        let size = bytes.len() as u64;
        if size > self.max_bytes {
            return;
        }
        let mut inner = crate::sync::lock(&self.inner);
        inner.clock += 1;
        let clock = inner.clock;
        if let Some((old, _)) = inner.files.insert(key, (bytes, clock)) {
            inner.bytes -= old.len() as u64;
        }
        inner.bytes += size;
        while inner.bytes > self.max_bytes {
            let Some(oldest) = inner
                .files
                .iter()
                .min_by_key(|(_, (_, u))| *u)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((b, _)) = inner.files.remove(&oldest) {
                inner.bytes -= b.len() as u64;
            }
        }
    }

    /// Drops every file of a plugin.
    pub fn forget(&self, plugin: &str) {
        let prefix = format!("{plugin}/");
        let mut inner = crate::sync::lock(&self.inner);
        let gone: Vec<String> = inner
            .files
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        for k in gone {
            if let Some((b, _)) = inner.files.remove(&k) {
                inner.bytes -= b.len() as u64;
            }
        }
    }
}

/// Checks a relative asset path: no empty, `.` or `..` segments, no backslashes or control
/// characters. Returns the path to append to the remote's directory.
pub fn safe_path(path: &str) -> Option<&str> {
    if path.is_empty() || path.len() > 1024 || path.starts_with('/') {
        return None;
    }
    let ok = path.split('/').all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .chars()
                .all(|c| !c.is_control() && c != '\\' && c != '%' && c != '?' && c != '#')
    });
    ok.then_some(path)
}

/// The content type of a remote file the core serves, by extension: only what a Module
/// Federation remote needs (scripts, styles, JSON and source maps, WebAssembly, fonts, raster
/// images). Anything else, HTML and SVG above all, could run as a page on the core's origin:
/// `None`, and the core refuses it.
pub fn allowed_type(path: &str) -> Option<&'static str> {
    let (stem, ext) = path.rsplit('/').next()?.rsplit_once('.')?;
    if stem.is_empty() {
        return None;
    }
    Some(match ext.to_ascii_lowercase().as_str() {
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "wasm" => "application/wasm",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        _ => return None,
    })
}

/// The extensions [`allowed_type`] accepts, for messages.
pub const ALLOWED_EXTENSIONS: &str =
    "js, mjs, css, json, map, wasm, woff, woff2, ttf, otf, png, jpg, jpeg, gif, webp, avif, ico";

/// The policy every remote file is served with: whatever it is, it never runs as a page (no
/// script, no plugins, a sandboxed origin) and cannot be framed.
pub const FILE_CSP: &str = "default-src 'none'; sandbox; frame-ancestors 'none'";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_is_refused() {
        for bad in [
            "",
            "../x.js",
            "a/../../b",
            "./a",
            "a//b",
            "/etc/passwd",
            "a\\..\\b",
            "%2e%2e/x",
            "a?x",
            "a\u{0}b",
        ] {
            assert!(safe_path(bad).is_none(), "{bad:?}");
        }
        for ok in ["remoteEntry.js", "chunks/123.js", "a.b.c/d-e_f.css"] {
            assert!(allowed_type(ok).is_some(), "{ok:?}");
            assert_eq!(safe_path(ok), Some(ok));
        }
    }

    #[test]
    fn cache_is_bounded_and_evicts_least_recently_used() {
        let c = AssetCache::new(10);
        c.put("p/a".into(), Bytes::from_static(b"aaaa"));
        c.put("p/b".into(), Bytes::from_static(b"bbbb"));
        assert!(c.get("p/a").is_some());
        c.put("q/c".into(), Bytes::from_static(b"cccc"));
        assert!(c.get("p/b").is_none(), "b was least recently used");
        assert!(c.get("p/a").is_some() && c.get("q/c").is_some());
        c.put("big".into(), Bytes::from_static(b"0123456789ab"));
        assert!(c.get("big").is_none());
        c.forget("p");
        assert!(c.get("p/a").is_none() && c.get("q/c").is_some());
    }

    #[test]
    fn only_the_types_a_remote_needs_are_served() {
        for ok in [
            "a.js", "b.MJS", "c.css", "d.json", "e.js.map", "f.wasm", "g.woff2", "h.png",
        ] {
            assert!(allowed_type(ok).is_some(), "{ok}");
        }
        for bad in [
            "x.html", "x.htm", "x.svg", "x.xml", "x.txt", "README", "x.js/", ".js", "x.",
        ] {
            assert_eq!(allowed_type(bad), None, "{bad}");
        }
    }
}
