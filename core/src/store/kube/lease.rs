//! Leader election on Lease `tessera-core-leader` (client-go's algorithm: get, then replace with
//! the `resourceVersion` read; expiry judged by when this replica saw the Lease change, not by
//! the holder's clock). Only the leader probes, keeps token Secrets and declares static plugins.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use super::{KubeStore, LEASE, managed};

impl KubeStore {
    /// Elects a leader on the Lease: `true` on the channel while this replica leads. Until
    /// `shutdown`, then it releases the Lease (if held) so another replica takes over at once.
    pub fn spawn_leader_election(
        self: &Arc<Self>,
        leading: watch::Sender<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let leases: Api<Lease> = Api::namespaced(me.client.clone(), &me.namespace);
            let mut observed: Option<(Option<String>, Option<String>)> = None;
            let mut observed_at = Instant::now();
            let mut last_renewed: Option<Instant> = None;
            loop {
                let leader = me
                    .try_lead(&leases, &mut observed, &mut observed_at, &mut last_renewed)
                    .await;
                let leader = leader || last_renewed.is_some_and(|t| t.elapsed() < me.timing.lease);
                if !leader {
                    last_renewed = None;
                }
                leading.send_if_modified(|l| std::mem::replace(l, leader) != leader);
                let wait = if leader {
                    me.timing.renew
                } else {
                    me.timing.retry
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => break,
                }
            }
            if *leading.borrow() {
                leading.send_replace(false);
                me.release(&leases).await;
            }
        })
    }

    /// One round of the election; true when this replica holds the Lease after it.
    async fn try_lead(
        &self,
        leases: &Api<Lease>,
        observed: &mut Option<(Option<String>, Option<String>)>,
        observed_at: &mut Instant,
        last_renewed: &mut Option<Instant>,
    ) -> bool {
        let now = MicroTime(Timestamp::now());
        let secs = i32::try_from(self.timing.lease.as_secs().max(1)).unwrap_or(15);
        let current = match self
            .bounded("reading the Lease", leases.get_opt(LEASE))
            .await
        {
            Ok(Ok(l)) => l,
            _ => return false,
        };
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE.into()),
                    labels: Some(managed()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            let ok = matches!(
                self.bounded(
                    "creating the Lease",
                    leases.create(&PostParams::default(), &lease)
                )
                .await,
                Ok(Ok(_))
            );
            if ok {
                *last_renewed = Some(Instant::now());
                tracing::info!(identity = %self.identity, "leading (created the Lease)");
            }
            return ok;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = (
            holder.clone(),
            spec.renew_time.as_ref().map(|t| t.0.to_string()),
        );
        if observed.as_ref() != Some(&record) {
            *observed = Some(record);
            *observed_at = Instant::now();
        }
        let duration = spec
            .lease_duration_seconds
            .map_or(self.timing.lease, |s| Duration::from_secs(s.max(0) as u64));
        let mine = holder.as_deref() == Some(self.identity.as_str());
        // Judged by when this replica saw the Lease change, not by the holder's clock.
        let expired = holder.is_none() || observed_at.elapsed() > duration;
        if !mine && !expired {
            return false;
        }
        if !mine {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(secs);
        spec.renew_time = Some(now);
        match self
            .bounded(
                "renewing the Lease",
                leases.replace(LEASE, &PostParams::default(), &lease),
            )
            .await
        {
            Ok(Ok(_)) => {
                if !mine {
                    tracing::info!(identity = %self.identity, "leading (took over the Lease)");
                }
                *last_renewed = Some(Instant::now());
                true
            }
            _ => false,
        }
    }

    /// Gives the Lease up (on shutdown), so the next replica need not wait for it to expire.
    async fn release(&self, leases: &Api<Lease>) {
        let Ok(Ok(Some(mut lease))) = self
            .bounded("reading the Lease", leases.get_opt(LEASE))
            .await
        else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        spec.lease_duration_seconds = Some(1);
        let _ = self
            .bounded(
                "releasing the Lease",
                leases.replace(LEASE, &PostParams::default(), &lease),
            )
            .await;
        tracing::info!(identity = %self.identity, "released the Lease");
    }
}
