//! Property tests: whatever a mutation of a valid manifest looks like, validation answers
//! (valid, or invalid with every problem pointing into the document) and never panics; the CLI
//! ends in exit 0 or 1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::Value;
use tessera_sdk::manifest::{self, Document, Format};
use tessera_tests::mutate::{apply, edits, pointers, valid_manifest};
use tessera_tests::tessera_with_stdin;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutated_manifests_validate_without_panicking(edits in edits(6)) {
        let mut doc = valid_manifest();
        apply(&mut doc, &edits);
        let report = manifest::validate(&doc);
        match report.manifest {
            Some(m) => {
                prop_assert!(report.problems.is_empty());
                // The normalized form is valid and a fixed point.
                let n = m.to_json();
                let again = manifest::validate(&n).into_result();
                prop_assert_eq!(again.map(|m| m.to_json()), Ok(n));
            }
            None => {
                prop_assert!(!report.problems.is_empty());
                for p in &report.problems {
                    prop_assert!(p.path.is_empty() || p.path.starts_with('/'), "{}", p);
                    prop_assert!(!p.message.is_empty());
                    // A pointer names a place in the document, or a missing property's place.
                    let parent = p.path.rsplit_once('/').map_or("", |(a, _)| a);
                    prop_assert!(doc.pointer(&p.path).is_some() || doc.pointer(parent).is_some(), "{}", p);
                }
            }
        }
    }

    #[test]
    fn mutated_yaml_text_never_panics(edits in edits(4), cut in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut doc = valid_manifest();
        apply(&mut doc, &edits);
        let mut text = serde_norway::to_string(&doc).unwrap().into_bytes();
        // One byte replaced anywhere: the reader either reads it or says where it could not.
        let at = cut.index(text.len());
        text[at] = byte;
        match Document::parse(&text, Format::Yaml) {
            Ok(d) => { let _ = manifest::validate_document(&d); }
            Err(e) => prop_assert!(!e.message.is_empty()),
        }
    }
}

proptest! {
    // Each case starts a process; fewer cases, same property.
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn cli_ends_in_exit_0_or_1_on_mutated_manifests(edits in edits(6), as_json in any::<bool>()) {
        let mut doc = valid_manifest();
        apply(&mut doc, &edits);
        let text = if as_json {
            serde_json::to_string(&doc).unwrap()
        } else {
            serde_norway::to_string(&doc).unwrap()
        };
        let run = tessera_with_stdin(&["plugin", "validate", "--json", "-"], Some(text.as_bytes()));
        prop_assert!(run.code == Some(0) || run.code == Some(1), "{:?}\n{}", run, text);
        prop_assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        let out: Value = serde_json::from_str(&run.stdout).unwrap();
        if run.code == Some(1) {
            prop_assert!(out.as_array().is_some_and(|a| !a.is_empty()));
        } else {
            prop_assert!(out.is_object());
        }
    }
}

#[test]
fn mutation_helpers_reach_every_part_of_the_manifest() {
    let ps = pointers(&valid_manifest());
    for p in [
        "/compat/core",
        "/ui/contributions/panels/0/id",
        "/configSchema/$defs/c/pattern",
        "/permissions/network/egressAllow/0",
    ] {
        assert!(ps.iter().any(|q| q == p), "{p}");
    }
    assert!(manifest::validate(&valid_manifest()).into_result().is_ok());
}
