//! `TokenReview`: the API server says whose a ServiceAccount token is (see
//! `auth::service_account`). Needs `create` on `tokenreviews.authentication.k8s.io`, the one
//! cluster-scoped permission of the core (the chart binds `system:auth-delegator`).

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

use crate::auth::service_account::{ReviewError, ReviewFuture, Reviewed, TokenReviewer};

/// Reviews tokens with the core's own client.
pub(super) struct KubeTokenReviewer {
    client: kube::Client,
    timeout: Duration,
}

impl KubeTokenReviewer {
    pub(super) fn new(client: kube::Client, timeout: Duration) -> KubeTokenReviewer {
        KubeTokenReviewer { client, timeout }
    }
}

impl TokenReviewer for KubeTokenReviewer {
    fn review<'a>(&'a self, token: &'a str, audience: &'a str) -> ReviewFuture<'a> {
        Box::pin(async move {
            let api: Api<TokenReview> = Api::all(self.client.clone());
            let review = TokenReview {
                metadata: Default::default(),
                spec: TokenReviewSpec {
                    token: Some(token.to_string()),
                    audiences: Some(vec![audience.to_string()]),
                },
                status: None,
            };
            let answer = tokio::time::timeout(
                self.timeout,
                api.create(&PostParams::default(), &review),
            )
            .await
            .map_err(|_| {
                ReviewError::Unavailable(format!(
                    "the Kubernetes API did not answer the TokenReview within {} s",
                    self.timeout.as_secs_f64()
                ))
            })?
            .map_err(|e| match &e {
                kube::Error::Api(s) if s.code == 403 => ReviewError::Unavailable(format!(
                    "the core may not create TokenReviews (bind its ServiceAccount to the ClusterRole system:auth-delegator): {}",
                    s.message
                )),
                _ => ReviewError::Unavailable(format!("TokenReview: {e}")),
            })?;
            let status = answer.status.unwrap_or_default();
            let username = status
                .user
                .and_then(|u| u.username)
                .filter(|u| !u.is_empty());
            match (status.authenticated, username) {
                (Some(true), Some(username)) => Ok(Reviewed {
                    username,
                    audiences: status.audiences.unwrap_or_default(),
                }),
                _ => Err(ReviewError::Refused(
                    status
                        .error
                        .filter(|e| !e.is_empty())
                        .unwrap_or_else(|| "not authenticated".to_string()),
                )),
            }
        })
    }
}
