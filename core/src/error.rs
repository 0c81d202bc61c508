//! The one error envelope: `{"error": {"code", "message", "details", "requestId"}}`.
//!
//! Every error the HTTP API returns is an [`ApiError`] built from a [`Code`]; each code has
//! exactly one status, and every code is listed in `docs/errors.md` (a test keeps the two in
//! step through [`Code::ALL`]).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

macro_rules! codes {
    ($($variant:ident = $code:literal, $status:ident;)*) => {
        /// A machine-readable error code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Code { $($variant),* }

        impl Code {
            /// Every code, for docs and tests.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The code as it appears in the envelope.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code),* }
            }

            /// The HTTP status that goes with it.
            pub fn status(self) -> StatusCode {
                match self { $(Code::$variant => StatusCode::$status),* }
            }
        }
    };
}

codes! {
    TokenMissing = "token_missing", UNAUTHORIZED;
    TokenMalformed = "token_malformed", UNAUTHORIZED;
    TokenAlgorithmNotAllowed = "token_algorithm_not_allowed", UNAUTHORIZED;
    TokenUnknownKey = "token_unknown_key", UNAUTHORIZED;
    TokenSignatureInvalid = "token_signature_invalid", UNAUTHORIZED;
    TokenWrongAudience = "token_wrong_audience", UNAUTHORIZED;
    TokenWrongIssuer = "token_wrong_issuer", UNAUTHORIZED;
    TokenExpired = "token_expired", UNAUTHORIZED;
    TokenNotYetValid = "token_not_yet_valid", UNAUTHORIZED;
    TokenRevoked = "token_revoked", UNAUTHORIZED;
    ServiceAccountTokenInvalid = "service_account_token_invalid", UNAUTHORIZED;
    ServiceAccountNotMapped = "service_account_not_mapped", FORBIDDEN;
    TokenReviewUnavailable = "token_review_unavailable", SERVICE_UNAVAILABLE;
    NotSignedIn = "not_signed_in", UNAUTHORIZED;
    LoginFailed = "login_failed", BAD_REQUEST;
    AdminRequired = "admin_required", FORBIDDEN;
    SignInNotConfigured = "sign_in_not_configured", NOT_FOUND;
    PayloadTooLarge = "payload_too_large", PAYLOAD_TOO_LARGE;
    HeadersTooLarge = "headers_too_large", REQUEST_HEADER_FIELDS_TOO_LARGE;
    InvalidRequest = "invalid_request", BAD_REQUEST;
    InvalidManifest = "invalid_manifest", BAD_REQUEST;
    InvalidEvent = "invalid_event", BAD_REQUEST;
    EventTypeNotOwned = "event_type_not_owned", FORBIDDEN;
    DeadLetterNotFound = "dead_letter_not_found", NOT_FOUND;
    InvalidJob = "invalid_job", BAD_REQUEST;
    JobNotFound = "job_not_found", NOT_FOUND;
    JobDeclared = "job_declared", CONFLICT;
    JobRunning = "job_running", CONFLICT;
    InvalidSecret = "invalid_secret", BAD_REQUEST;
    SecretNotDeclared = "secret_not_declared", FORBIDDEN;
    SecretNotFound = "secret_not_found", NOT_FOUND;
    SecretsManagedElsewhere = "secrets_managed_elsewhere", CONFLICT;
    WebhookNotFound = "webhook_not_found", NOT_FOUND;
    WebhookSignatureInvalid = "webhook_signature_invalid", UNAUTHORIZED;
    WebhookNotConfigured = "webhook_not_configured", SERVICE_UNAVAILABLE;
    EgressAuthRequired = "egress_auth_required", PROXY_AUTHENTICATION_REQUIRED;
    EgressNotAllowed = "egress_not_allowed", FORBIDDEN;
    EgressAddressNotAllowed = "egress_address_not_allowed", FORBIDDEN;
    TokenPluginMismatch = "token_plugin_mismatch", FORBIDDEN;
    OriginNotAllowed = "origin_not_allowed", FORBIDDEN;
    CapabilityNotGranted = "capability_not_granted", FORBIDDEN;
    IncompatibleCore = "incompatible_core", UNPROCESSABLE_ENTITY;
    UrlNotAllowed = "url_not_allowed", BAD_REQUEST;
    ContributionConflict = "contribution_conflict", CONFLICT;
    RateLimited = "rate_limited", TOO_MANY_REQUESTS;
    PluginNotFound = "plugin_not_found", NOT_FOUND;
    NotFound = "not_found", NOT_FOUND;
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED;
    PathNotAllowed = "path_not_allowed", BAD_REQUEST;
    FileTypeNotAllowed = "file_type_not_allowed", FORBIDDEN;
    PluginNotReady = "plugin_not_ready", SERVICE_UNAVAILABLE;
    PluginOverloaded = "plugin_overloaded", SERVICE_UNAVAILABLE;
    PluginCircuitOpen = "plugin_circuit_open", SERVICE_UNAVAILABLE;
    PluginTimeout = "plugin_timeout", GATEWAY_TIMEOUT;
    UpstreamFailed = "upstream_failed", BAD_GATEWAY;
    NotReady = "not_ready", SERVICE_UNAVAILABLE;
    StoreUnavailable = "store_unavailable", SERVICE_UNAVAILABLE;
    TooManyConnections = "too_many_connections", SERVICE_UNAVAILABLE;
    Internal = "internal", INTERNAL_SERVER_ERROR;
}

/// An error answer of the API.
#[derive(Debug)]
pub struct ApiError {
    /// What went wrong, as a code.
    pub code: Code,
    /// What went wrong, for people.
    pub message: String,
    /// Structured context (problems with paths, missing capabilities, ...).
    pub details: Vec<Value>,
    /// Seconds to wait, for 429.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with no details.
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: Vec<Value>) -> ApiError {
        self.details = details;
        self
    }

    /// A store failure: the write was not acknowledged.
    pub fn store(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "store write failed");
        ApiError::new(
            Code::StoreUnavailable,
            format!("the store did not accept the write; nothing was changed: {e}"),
        )
    }

    /// The envelope, with the request id when known.
    pub fn body(&self, request_id: Option<&str>) -> Value {
        let mut error = json!({
            "code": self.code.as_str(),
            "message": self.message,
            "details": self.details,
        });
        if let Some(id) = request_id {
            error["requestId"] = json!(id);
        }
        json!({ "error": error })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The request id is filled in by the middleware that set it (`api::middleware::request_id`).
        let mut res = (self.code.status(), axum::Json(self.body(None))).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        res.extensions_mut()
            .insert(ErrorBody(self.code, self.body(None)));
        res
    }
}

/// Marks a response as an error envelope (its code and body), so the request-id middleware can
/// add `requestId` and logs and metrics can name the code.
#[derive(Clone, Debug)]
pub struct ErrorBody(pub Code, pub Value);

/// The domain's refusals, mapped to codes here and nowhere else.
impl From<tessera_lifecycle::Refusal> for ApiError {
    fn from(r: tessera_lifecycle::Refusal) -> ApiError {
        use tessera_lifecycle::Refusal;
        let message = r.to_string();
        match r {
            Refusal::NotFound { .. } => ApiError::new(Code::PluginNotFound, message),
            Refusal::ContributionConflict(c) => ApiError::new(Code::ContributionConflict, message)
                .with_details(vec![json!({
                    "kind": c.kind, "value": c.value, "plugin": c.plugin,
                    "conflictsWith": c.owner, "conflictsWithVersion": c.owner_version,
                })]),
            Refusal::Invalid(_) => ApiError::new(Code::Internal, message),
        }
    }
}

/// An error with its causes, for people.
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
