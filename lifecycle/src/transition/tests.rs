//! Every (state, event) pair of the lifecycle, driven without a server or a clock: each row of
//! the table is its own test, named for the transition it pins.

use super::*;
use crate::model::Reason;
use crate::probe::Failure;

const T: Thresholds = Thresholds {
    success: 2,
    failure: 3,
};
const NOW: &str = "2026-12-01T00:00:00Z";
const LATER: &str = "2026-12-01T00:05:00Z";
const PINNED: &str = "sha384-AAAA";
const OTHER: &str = "sha384-BBBB";

fn admin() -> Actor {
    Actor {
        who: "admin:j1".into(),
        request_id: Some("r1".into()),
    }
}

fn manifest(version: &str) -> ManifestJson {
    ManifestJson::new(&json!({
        "name": "analytics", "version": version,
        "ui": {"contributions": {"panels": [{"id": "analytics.overview"}], "routes": [{"path": "/analytics/:tab"}]}}
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn reg(version: &str) -> Registration {
    Registration {
        name: "analytics".into(),
        version: version.into(),
        manifest: manifest(version),
        backend_url: "http://127.0.0.1:9001".into(),
        remote_url: "http://127.0.0.1:9001/mf/remoteEntry.js".into(),
        token_id: "t1".into(),
    }
}

fn stats(successes: u32, failures: u32) -> ProbeStats {
    ProbeStats {
        consecutive_successes: successes,
        consecutive_failures: failures,
        ..ProbeStats::default()
    }
}

fn pass(version: &str, integrity: &str) -> Round {
    Round::new(version, Ok(()), Ok(integrity.to_string()))
}

fn fail(version: &str) -> Round {
    Round::new(version, Err("HTTP 500".into()), Ok(PINNED.to_string()))
}

fn step(s: Option<Step>) -> Step {
    s.unwrap_or_else(|| panic!("expected a step"))
}

/// A record in `state`, reached the way the lifecycle reaches it.
fn in_state(state: State) -> PluginRecord {
    let registering = || step(register(None, &reg("1.0.0"), &admin(), NOW)).record;
    let ready = || {
        step(probe(
            registering(),
            &pass("1.0.0", PINNED),
            &stats(2, 0),
            T,
            NOW,
        ))
        .record
    };
    match state {
        State::Installed => {
            step(
                install(
                    None,
                    "analytics",
                    "http://127.0.0.1:9001",
                    "declared",
                    &admin(),
                    NOW,
                )
                .unwrap_or_else(|e| panic!("{e}")),
            )
            .record
        }
        State::Registering => registering(),
        State::Ready => ready(),
        State::Degraded => step(probe(ready(), &fail("1.0.0"), &stats(0, 3), T, NOW)).record,
        State::Disabled => disable(ready(), "incident 42", &admin(), NOW).record,
    }
}

/// The events of the lifecycle.
#[derive(Clone, Copy, Debug)]
enum Event {
    RegisterSame,
    RegisterNewVersion,
    /// A passing round with the pinned bytes; the consecutive successes counted with it.
    ProbePass(u32),
    /// A failing readiness round; the consecutive failures counted with it.
    ProbeFail(u32),
    /// A passing round whose bytes differ from the pinned ones.
    ProbeChangedBytes,
    Disable,
    Enable,
    AcceptRemote,
    UiLoadFailed,
    InstallAgain,
    ExternalNewer,
    ExternalStale,
}

fn apply(rec: PluginRecord, event: Event) -> Option<Step> {
    let now = LATER;
    match event {
        Event::RegisterSame => register(Some(rec), &reg("1.0.0"), &admin(), now),
        Event::RegisterNewVersion => register(Some(rec), &reg("2.0.0"), &admin(), now),
        Event::ProbePass(n) => probe(rec, &pass("1.0.0", PINNED), &stats(n, 0), T, now),
        Event::ProbeFail(n) => probe(rec, &fail("1.0.0"), &stats(0, n), T, now),
        Event::ProbeChangedBytes => probe(rec, &pass("1.0.0", OTHER), &stats(1, 0), T, now),
        Event::Disable => Some(disable(rec, "incident 43", &admin(), now)),
        Event::Enable => enable(rec, &admin(), now),
        Event::AcceptRemote => accept_remote(rec, &admin(), now),
        Event::UiLoadFailed => report_ui(rec, "1.0.0", false, "mount threw", &admin(), now),
        Event::InstallAgain => install(
            Some(rec),
            "analytics",
            "http://127.0.0.1:9001",
            "declared",
            &admin(),
            now,
        )
        .unwrap_or_else(|e| panic!("{e}")),
        Event::ExternalNewer => {
            let mut other = rec.clone();
            other.updated_at = now.into();
            external(Some(other), true).map(|r| Step {
                record: r.unwrap_or_else(|| panic!("kept")),
                events: Vec::new(),
                reset_probes: false,
            })
        }
        Event::ExternalStale => {
            external(Some(rec), false).map(|_| panic!("a stale record was applied"))
        }
    }
}

/// What a row expects: `None` when the event writes nothing; else the state after it, the
/// version the shell is shown (if any) and the audit action (if any).
type Expect = Option<(State, Option<&'static str>, Option<&'static str>)>;

fn check(from: State, event: Event, expect: Expect) {
    let rec = in_state(from);
    let got = apply(rec.clone(), event);
    match (got, expect) {
        (None, None) => {}
        (Some(s), None) => panic!(
            "{from:?} + {event:?}: expected no change, got {:?}",
            s.record.state
        ),
        (None, Some(e)) => panic!("{from:?} + {event:?}: expected {e:?}, got no change"),
        (Some(s), Some((state, exposed, action))) => {
            assert_eq!(s.record.state, state, "{from:?} + {event:?}: state");
            assert_eq!(
                s.record.exposed().map(|d| d.version.as_str()),
                exposed,
                "{from:?} + {event:?}: exposed version"
            );
            let actions: Vec<&str> = s.events.iter().map(|e| e.action.as_str()).collect();
            assert_eq!(
                actions,
                action.into_iter().collect::<Vec<_>>(),
                "{from:?} + {event:?}: audit"
            );
            for e in &s.events {
                assert_eq!(e.plugin.as_deref(), Some("analytics"));
                assert_eq!(e.time, LATER);
                assert!(!e.reason.is_empty(), "every transition says why");
            }
            if s.record != rec {
                assert_eq!(
                    s.record.updated_at, LATER,
                    "{from:?} + {event:?}: updatedAt"
                );
            }
        }
    }
}

macro_rules! transitions {
    ($($name:ident: $from:ident + $event:expr => $expect:expr;)*) => {
        $(
            #[test]
            fn $name() {
                check(State::$from, $event, $expect);
            }
        )*
    };
}

use Event::*;
use State::{Degraded as Dg, Disabled as Ds, Installed as In, Ready as Rd, Registering as Rg};

transitions! {
    // register, same name/version/manifest/URLs
    transition_installed_register_starts_registering: Installed + RegisterSame => Some((Rg, None, Some("register")));
    transition_registering_register_same_is_idempotent: Registering + RegisterSame => None;
    transition_ready_register_same_is_idempotent: Ready + RegisterSame => None;
    transition_degraded_register_same_is_idempotent: Degraded + RegisterSame => None;
    transition_disabled_register_same_is_idempotent: Disabled + RegisterSame => None;
    // register, a new version
    transition_installed_register_new_version_starts_registering: Installed + RegisterNewVersion => Some((Rg, None, Some("register")));
    transition_registering_register_new_version_stays_registering: Registering + RegisterNewVersion => Some((Rg, None, Some("register")));
    transition_ready_register_new_version_keeps_serving_the_last_ready: Ready + RegisterNewVersion => Some((Rg, Some("1.0.0"), Some("register")));
    transition_degraded_register_new_version_shows_nothing_until_probed: Degraded + RegisterNewVersion => Some((Rg, None, Some("register")));
    transition_disabled_register_new_version_stays_disabled: Disabled + RegisterNewVersion => Some((Ds, None, Some("register")));
    // a passing round below the success threshold
    transition_installed_probe_pass_is_ignored: Installed + ProbePass(1) => None;
    transition_registering_probe_pass_below_threshold_waits: Registering + ProbePass(1) => None;
    transition_ready_probe_pass_changes_nothing: Ready + ProbePass(1) => None;
    transition_degraded_probe_pass_below_threshold_stays_degraded: Degraded + ProbePass(1) => None;
    transition_disabled_probe_pass_is_ignored: Disabled + ProbePass(5) => None;
    // a passing round at the success threshold
    transition_registering_probe_pass_at_threshold_becomes_ready: Registering + ProbePass(2) => Some((Rd, Some("1.0.0"), Some("transition")));
    transition_degraded_probe_pass_at_threshold_recovers_to_ready: Degraded + ProbePass(2) => Some((Rd, Some("1.0.0"), Some("transition")));
    transition_ready_probe_pass_at_threshold_changes_nothing: Ready + ProbePass(2) => None;
    transition_installed_probe_pass_at_threshold_is_ignored: Installed + ProbePass(2) => None;
    // a failing round below the failure threshold
    transition_installed_probe_fail_is_ignored: Installed + ProbeFail(1) => None;
    transition_registering_probe_fail_records_the_reason: Registering + ProbeFail(1) => Some((Rg, None, None));
    transition_ready_probe_fail_below_threshold_stays_ready: Ready + ProbeFail(2) => None;
    transition_degraded_probe_fail_same_reason_changes_nothing: Degraded + ProbeFail(1) => None;
    transition_disabled_probe_fail_is_ignored: Disabled + ProbeFail(9) => None;
    // a failing round at the failure threshold
    transition_ready_probe_fail_at_threshold_degrades_and_hides: Ready + ProbeFail(3) => Some((Dg, None, Some("transition")));
    transition_registering_probe_fail_at_threshold_stays_registering: Registering + ProbeFail(3) => Some((Rg, None, None));
    transition_degraded_probe_fail_at_threshold_stays_degraded: Degraded + ProbeFail(3) => None;
    // the remote entry's bytes changed under the same version
    transition_installed_changed_bytes_is_ignored: Installed + ProbeChangedBytes => None;
    transition_registering_changed_bytes_before_pinning_waits: Registering + ProbeChangedBytes => None;
    transition_ready_changed_bytes_withdraws: Ready + ProbeChangedBytes => Some((Dg, None, Some("transition")));
    transition_degraded_changed_bytes_withdraws: Degraded + ProbeChangedBytes => Some((Dg, None, Some("transition")));
    transition_disabled_changed_bytes_is_ignored: Disabled + ProbeChangedBytes => None;
    // the kill switch
    transition_installed_disable: Installed + Disable => Some((Ds, None, Some("disable")));
    transition_registering_disable: Registering + Disable => Some((Ds, None, Some("disable")));
    transition_ready_disable_hides_at_once: Ready + Disable => Some((Ds, None, Some("disable")));
    transition_degraded_disable: Degraded + Disable => Some((Ds, None, Some("disable")));
    transition_disabled_disable_again_records_the_new_reason: Disabled + Disable => Some((Ds, None, Some("disable")));
    // enable
    transition_disabled_enable_probes_again_before_showing: Disabled + Enable => Some((Rg, None, Some("enable")));
    transition_installed_enable_changes_nothing: Installed + Enable => None;
    transition_registering_enable_changes_nothing: Registering + Enable => None;
    transition_ready_enable_changes_nothing: Ready + Enable => None;
    transition_degraded_enable_changes_nothing: Degraded + Enable => None;
    // accept a changed remote entry: nothing to accept unless it was withdrawn for its bytes
    transition_degraded_by_failing_probes_accept_remote_changes_nothing: Degraded + AcceptRemote => None;
    transition_registering_accept_remote_changes_nothing: Registering + AcceptRemote => None;
    transition_ready_accept_remote_changes_nothing: Ready + AcceptRemote => None;
    transition_installed_accept_remote_changes_nothing: Installed + AcceptRemote => None;
    transition_disabled_accept_remote_changes_nothing: Disabled + AcceptRemote => None;
    // a shell's report that the UI failed to load
    transition_ready_ui_load_failed_keeps_state: Ready + UiLoadFailed => Some((Rd, Some("1.0.0"), Some("ui-report")));
    transition_registering_ui_load_failed_keeps_state: Registering + UiLoadFailed => Some((Rg, None, Some("ui-report")));
    transition_degraded_ui_load_failed_keeps_state: Degraded + UiLoadFailed => Some((Dg, None, Some("ui-report")));
    transition_disabled_ui_load_failed_keeps_state: Disabled + UiLoadFailed => Some((Ds, None, Some("ui-report")));
    transition_installed_ui_load_failed_keeps_state: Installed + UiLoadFailed => Some((In, None, Some("ui-report")));
    // declared again in the config
    transition_installed_install_same_changes_nothing: Installed + InstallAgain => None;
    transition_registering_install_changes_nothing: Registering + InstallAgain => None;
    transition_ready_install_changes_nothing: Ready + InstallAgain => None;
    transition_degraded_install_changes_nothing: Degraded + InstallAgain => None;
    transition_disabled_install_changes_nothing: Disabled + InstallAgain => None;
    // a record written by another replica
    transition_ready_external_newer_replaces: Ready + ExternalNewer => Some((Rd, Some("1.0.0"), None));
    transition_degraded_external_newer_replaces: Degraded + ExternalNewer => Some((Dg, None, None));
    transition_registering_external_stale_is_ignored: Registering + ExternalStale => None;
    transition_disabled_external_stale_is_ignored: Disabled + ExternalStale => None;
    transition_installed_external_newer_replaces: Installed + ExternalNewer => Some((In, None, None));
}

#[test]
fn lifecycle_remote_entry_changed_stays_withdrawn_until_accepted_then_pins_the_new_bytes() {
    let ready = in_state(State::Ready);
    let changed = step(probe(ready, &pass("1.0.0", OTHER), &stats(1, 0), T, LATER)).record;
    assert_eq!(changed.state, State::Degraded);
    assert!(remote_changed(&changed));
    assert!(changed.exposed().is_none());
    let ready_cond = changed
        .conditions
        .iter()
        .find(|c| c.kind == condition::READY);
    assert_eq!(
        ready_cond.map(|c| c.reason),
        Some(Reason::RemoteEntryChanged)
    );
    // Passing rounds with the new bytes, however many, do not lift it.
    assert!(
        probe(
            changed.clone(),
            &pass("1.0.0", OTHER),
            &stats(9, 0),
            T,
            LATER
        )
        .is_none()
    );
    assert!(!probe_is_quiet(
        &changed,
        &pass("1.0.0", OTHER),
        &stats(9, 0),
        T
    ));
    // Re-registering the same version is not an idempotent repeat once withdrawn.
    let again = step(register(
        Some(changed.clone()),
        &reg("1.0.0"),
        &admin(),
        LATER,
    ));
    assert_eq!(again.record.state, State::Registering);
    assert!(again.record.serving.is_none());
    // An admin accepts: probed again, and the next passing rounds pin the new bytes.
    let accepted = step(accept_remote(changed.clone(), &admin(), LATER)).record;
    assert_eq!(accepted.state, State::Registering);
    assert_eq!(accepted.current.integrity, None);
    let back = step(probe(
        accepted,
        &pass("1.0.0", OTHER),
        &stats(2, 0),
        T,
        LATER,
    ))
    .record;
    assert_eq!(back.state, State::Ready);
    assert_eq!(back.current.integrity.as_deref(), Some(OTHER));
    assert_eq!(
        back.exposed().map(|d| d.integrity.as_deref()),
        Some(Some(OTHER))
    );
}

#[test]
fn lifecycle_thresholds_count_consecutive_rounds() {
    // success threshold 3: Ready only on the third consecutive passing round.
    let t = Thresholds {
        success: 3,
        failure: 1,
    };
    let mut s = ProbeStats::default();
    let mut rec = in_state(State::Registering);
    for round in 1..=3 {
        s = s.count(&pass("1.0.0", PINNED), 4, LATER);
        if let Some(next) = probe(rec.clone(), &pass("1.0.0", PINNED), &s, t, LATER) {
            rec = next.record;
        }
        assert_eq!(rec.state == State::Ready, round == 3, "after round {round}");
    }
    // failure threshold 1: one failing round degrades; a failure resets the successes.
    s = s.count(&fail("1.0.0"), 4, LATER);
    assert_eq!((s.consecutive_successes, s.consecutive_failures), (0, 1));
    assert_eq!(
        s.last_failure_reason.as_deref(),
        Some("readiness probe failed: HTTP 500")
    );
    let degraded = step(probe(rec, &fail("1.0.0"), &s, t, LATER)).record;
    assert_eq!(degraded.state, State::Degraded);
    let cond = degraded
        .conditions
        .iter()
        .find(|c| c.kind == condition::READY);
    assert_eq!(cond.map(|c| c.reason), Some(Reason::ReadinessProbeFailed));
    assert!(cond.is_some_and(|c| c.message.contains("(1 consecutive failures)")));
}

#[test]
fn lifecycle_stale_round_of_an_older_version_changes_nothing() {
    let rec = step(register(
        Some(in_state(State::Ready)),
        &reg("2.0.0"),
        &admin(),
        LATER,
    ))
    .record;
    assert!(!probe_applies(&rec, &pass("1.0.0", PINNED)));
    assert!(probe(rec, &pass("1.0.0", PINNED), &stats(5, 0), T, LATER).is_none());
}

#[test]
fn lifecycle_new_version_replaces_the_served_one_only_once_ready() {
    let rec = step(register(
        Some(in_state(State::Ready)),
        &reg("2.0.0"),
        &admin(),
        LATER,
    ))
    .record;
    assert_eq!(rec.exposed().map(|d| d.version.as_str()), Some("1.0.0"));
    let ready = step(probe(rec, &pass("2.0.0", OTHER), &stats(2, 0), T, LATER)).record;
    assert_eq!(ready.exposed().map(|d| d.version.as_str()), Some("2.0.0"));
    assert_eq!(ready.current.integrity.as_deref(), Some(OTHER));
}

#[test]
fn lifecycle_registration_clears_what_a_shell_saw_of_the_last_one() {
    let reported = step(report_ui(
        in_state(State::Ready),
        "1.0.0",
        false,
        "boom",
        &admin(),
        NOW,
    ))
    .record;
    assert!(
        reported
            .conditions
            .iter()
            .any(|c| c.kind == condition::UI_LOADED)
    );
    // The same report again writes nothing.
    assert!(report_ui(reported.clone(), "1.0.0", false, "boom", &admin(), LATER).is_none());
    let again = step(register(Some(reported), &reg("2.0.0"), &admin(), LATER)).record;
    assert!(
        !again
            .conditions
            .iter()
            .any(|c| c.kind == condition::UI_LOADED)
    );
}

#[test]
fn lifecycle_every_transition_records_who_and_why() {
    let step = disable(in_state(State::Ready), "incident 7", &admin(), LATER);
    let e = &step.events[0];
    assert_eq!(
        (e.actor.as_str(), e.request_id.as_deref()),
        ("admin:j1", Some("r1"))
    );
    assert_eq!(e.reason, "incident 7");
    let d = step
        .record
        .disabled
        .as_ref()
        .map(|d| (d.by.as_str(), d.reason.as_str()));
    assert_eq!(d, Some(("admin:j1", "incident 7")));
    let enabled = enable(step.record, &admin(), LATER).map(|s| s.reset_probes);
    assert_eq!(
        enabled,
        Some(true),
        "rounds from before the kill switch do not count"
    );
}

/// The prober's shortcut must never skip a transition: whenever it says a round is quiet,
/// the full transition writes nothing.
#[test]
fn lifecycle_quiet_probe_rounds_never_hide_a_transition() {
    let rounds = [
        pass("1.0.0", PINNED),
        pass("1.0.0", OTHER),
        fail("1.0.0"),
        Round::new("1.0.0", Ok(()), Err("connection refused".into())),
        pass("2.0.0", PINNED),
    ];
    for state in State::ALL {
        for round in &rounds {
            for (s, f) in [(0, 0), (1, 0), (0, 1), (0, 2), (3, 0), (0, 5)] {
                let rec = in_state(state);
                let before = stats(s, f);
                if probe_is_quiet(&rec, round, &before, T) {
                    let after = before.count(round, 1, LATER);
                    assert!(
                        probe(rec, round, &after, T, LATER).is_none(),
                        "{state:?} {round:?} {before:?}: a quiet round changed the record"
                    );
                }
            }
        }
    }
}

#[test]
fn lifecycle_conflicting_contribution_is_refused_with_its_holder() {
    let holder = in_state(State::Ready);
    let claims = Claims::build([&holder]);
    let mut other = reg("1.0.0");
    other.name = "billing".into();
    let refused = check_claims(&claims, &other, |_| Some("1.0.0".into()));
    let Err(Refusal::ContributionConflict(c)) = refused else {
        panic!("expected a conflict, got {refused:?}");
    };
    assert_eq!(
        (c.kind, c.value.as_str(), c.owner.as_str()),
        ("panel id", "analytics.overview", "analytics")
    );
    // A disabled holder releases its claims.
    let disabled = disable(holder, "x", &admin(), LATER).record;
    assert!(check_claims(&Claims::build([&disabled]), &other, |_| None).is_ok());
    // Its own contributions never conflict with itself.
    assert!(check_claims(&claims, &reg("2.0.0"), |_| None).is_ok());
}

#[test]
fn lifecycle_failure_reasons_follow_the_probe_that_failed() {
    let readiness = Round::new("1.0.0", Err("timeout".into()), Err("refused".into()));
    assert_eq!(
        readiness.failure.as_ref().map(|f| f.reason),
        Some(Reason::ReadinessProbeFailed)
    );
    let remote = Round::new("1.0.0", Ok(()), Err("HTTP 404".into()));
    assert_eq!(
        remote.failure,
        Some(Failure {
            reason: Reason::RemoteEntryUnreachable,
            message: "remote entry unreachable: HTTP 404".into()
        })
    );
    let rec = step(probe(
        in_state(State::Registering),
        &remote,
        &stats(0, 1),
        T,
        LATER,
    ))
    .record;
    let cond = rec.conditions.iter().find(|c| c.kind == condition::READY);
    assert_eq!(cond.map(|c| c.reason), Some(Reason::RemoteEntryUnreachable));
}

#[test]
fn transition_withdrawn_accept_remote_probes_again_and_shows_nothing_until_then() {
    let withdrawn = step(probe(
        in_state(State::Ready),
        &pass("1.0.0", OTHER),
        &stats(1, 0),
        T,
        NOW,
    ))
    .record;
    let accepted = step(accept_remote(withdrawn, &admin(), LATER));
    assert_eq!(accepted.record.state, State::Registering);
    assert!(accepted.record.exposed().is_none());
    assert_eq!(accepted.events[0].action, "accept-remote");
    // A disabled plugin withdrawn for its bytes stays disabled when they are accepted.
    let withdrawn = step(probe(
        in_state(State::Ready),
        &pass("1.0.0", OTHER),
        &stats(1, 0),
        T,
        NOW,
    ))
    .record;
    let disabled = disable(withdrawn, "x", &admin(), NOW).record;
    assert_eq!(
        step(accept_remote(disabled, &admin(), LATER)).record.state,
        State::Disabled
    );
}
