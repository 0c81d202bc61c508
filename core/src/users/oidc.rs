//! The OpenID provider, through the `openidconnect` crate: discovery (once, on first use, again
//! after a failure), the authorization URL with PKCE (S256), state and nonce, the code exchange,
//! and the ID token's checks (signature against the provider's JWKS, issuer, audience, expiry,
//! nonce). The HTTP client is the core's reqwest client, which follows no redirects.

use std::future::Future;
use std::pin::Pin;

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AsyncHttpClient, AuthorizationCode, ClientId, ClientSecret, CsrfToken, HttpClientError,
    HttpRequest, HttpResponse, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};

use crate::config::OidcConfig;

/// reqwest as the provider's HTTP client.
#[derive(Clone, Debug)]
pub(super) struct Http(pub(super) reqwest::Client);

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpClientError<reqwest::Error>;
    type Future =
        Pin<Box<dyn Future<Output = Result<HttpResponse, Self::Error>> + Send + Sync + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let boxed = |e: reqwest::Error| HttpClientError::Reqwest(Box::new(e));
            let request = reqwest::Request::try_from(request).map_err(boxed)?;
            let response = self.0.execute(request).await.map_err(boxed)?;
            let mut builder = openidconnect::http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let body = response.bytes().await.map_err(boxed)?.to_vec();
            builder.body(body).map_err(HttpClientError::Http)
        })
    }
}

/// What the login keeps until the provider sends the user back.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Pending {
    pub(super) state: String,
    pub(super) nonce: String,
    pub(super) verifier: String,
    pub(super) redirect: String,
}

/// What a verified ID token says.
#[derive(Clone, Debug)]
pub(super) struct Verified {
    pub(super) sub: String,
    pub(super) name: Option<String>,
    /// Every claim of the ID token (the tenant and groups claims are configurable).
    pub(super) claims: serde_json::Map<String, serde_json::Value>,
    /// Its expiry (seconds since the epoch).
    pub(super) exp: u64,
}

/// The provider, discovered.
pub(super) struct Provider {
    metadata: CoreProviderMetadata,
}

impl Provider {
    pub(super) async fn discover(config: &OidcConfig, http: &Http) -> Result<Provider, String> {
        let issuer =
            IssuerUrl::new(config.issuer.clone()).map_err(|e| format!("auth.oidc.issuer: {e}"))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, http)
            .await
            .map_err(|e| format!("discovering the OpenID provider {}: {e}", config.issuer))?;
        Ok(Provider { metadata })
    }

    fn client(
        &self,
        config: &OidcConfig,
        secret: &str,
        redirect: &str,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        String,
    > {
        Ok(CoreClient::from_provider_metadata(
            self.metadata.clone(),
            ClientId::new(config.client_id.clone()),
            Some(ClientSecret::new(secret.to_string())),
        )
        .set_redirect_uri(RedirectUrl::new(redirect.to_string()).map_err(|e| e.to_string())?))
    }

    /// The provider's authorization URL, and what to keep until the callback.
    pub(super) fn authorize(
        &self,
        config: &OidcConfig,
        secret: &str,
        redirect: &str,
    ) -> Result<(String, Pending), String> {
        let client = self.client(config, secret, redirect)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in config.scopes.iter().filter(|s| s.as_str() != "openid") {
            req = req.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
        Ok((
            url.to_string(),
            Pending {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                verifier: verifier.secret().clone(),
                redirect: redirect.to_string(),
            },
        ))
    }

    /// Exchanges the code (with the PKCE verifier) and checks the ID token.
    pub(super) async fn exchange(
        &self,
        config: &OidcConfig,
        secret: &str,
        http: &Http,
        pending: &Pending,
        code: &str,
    ) -> Result<Verified, String> {
        let client = self.client(config, secret, &pending.redirect)?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| format!("the provider has no token endpoint: {e}"))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
            .request_async(http)
            .await
            .map_err(|e| format!("exchanging the code at the provider failed: {e}"))?;
        let _ = response.access_token();
        let id_token = response
            .id_token()
            .ok_or("the provider answered without an ID token")?;
        let checked = id_token
            .claims(
                &client.id_token_verifier(),
                &Nonce::new(pending.nonce.clone()),
            )
            .map_err(|e| format!("the ID token does not verify: {e}"))?;
        // Verified above; its payload is read again for the claims this core is configured to
        // take (tenant, groups), which the standard claim types do not carry.
        let payload = id_token.to_string();
        let claims = payload
            .split('.')
            .nth(1)
            .and_then(|p| {
                use base64::Engine;
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p.trim_end_matches('='))
                    .ok()
            })
            .and_then(|b| {
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&b).ok()
            })
            .unwrap_or_default();
        Ok(Verified {
            sub: checked.subject().to_string(),
            name: checked
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string())
                .or_else(|| checked.preferred_username().map(|u| u.to_string())),
            claims,
            exp: u64::try_from(checked.expiration().timestamp()).unwrap_or(0),
        })
    }
}
