//! One attempt of a job run: `POST basePath + path` with a call token (`kind: job`) and the
//! `Tessera-Job`, `Tessera-Run-Id` and `Tessera-Scheduled-Time` headers, bounded by the job's
//! timeout; the first 4 KiB of the answer's body are kept.

use std::time::Duration;

use reqwest::header;

use super::model::{BODY_BYTES, clip};
use crate::auth::Keys;
use crate::auth::call::{CallKind, CallTokens, OnBehalfOf};

/// Where and what to call.
pub(super) struct Target<'a> {
    /// The plugin.
    pub plugin: &'a str,
    /// `backendUrl + basePath + path`.
    pub url: &'a str,
    /// The job.
    pub job: &'a str,
    /// The run id.
    pub run_id: &'a str,
    /// The scheduled time, RFC 3339.
    pub scheduled: &'a str,
    /// The job's timeout.
    pub timeout: Duration,
}

/// How an attempt ended.
#[derive(Debug)]
pub(super) struct Answer {
    /// The HTTP status, when one came.
    pub status: Option<u16>,
    /// The first 4 KiB of the body.
    pub body: Option<String>,
    /// Why it failed (`None`: a 2xx).
    pub failure: Option<String>,
}

/// Makes one attempt.
pub(super) async fn attempt(
    http: &reqwest::Client,
    keys: &Keys,
    calls: &CallTokens,
    t: &Target<'_>,
) -> Answer {
    let token = match calls.token(keys, t.plugin, &OnBehalfOf::core(None), CallKind::Job) {
        Ok(tok) => tok,
        Err(e) => {
            return Answer {
                status: None,
                body: None,
                failure: Some(format!("cannot sign a call token: {e}")),
            };
        }
    };
    let call = async {
        let res = http
            .post(t.url)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header("tessera-job", t.job)
            .header("tessera-run-id", t.run_id)
            .header("tessera-scheduled-time", t.scheduled)
            .header(header::CONTENT_LENGTH, "0")
            .send()
            .await;
        let mut res = match res {
            Ok(r) => r,
            Err(e) => {
                return Answer {
                    status: None,
                    body: None,
                    failure: Some(format!(
                        "the plugin cannot be reached: {}",
                        crate::error::source_chain(&e)
                    )),
                };
            }
        };
        let status = res.status().as_u16();
        let mut bytes = Vec::new();
        while bytes.len() < BODY_BYTES {
            match res.chunk().await {
                Ok(Some(c)) => bytes.extend_from_slice(&c),
                Ok(None) => break,
                Err(_) => break,
            }
        }
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(BODY_BYTES)]);
        let body = (!text.is_empty()).then(|| clip(&text, BODY_BYTES));
        Answer {
            status: Some(status),
            body,
            failure: (!(200..300).contains(&status))
                .then(|| format!("the plugin answered {status}")),
        }
    };
    match tokio::time::timeout(t.timeout, call).await {
        Ok(a) => a,
        Err(_) => Answer {
            status: None,
            body: None,
            failure: Some(format!(
                "no answer within the job's timeout of {} s",
                t.timeout.as_secs()
            )),
        },
    }
}
