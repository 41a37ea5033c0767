//! Bearer-token authentication. Every `/v1` request carries `Authorization: Bearer
//! <secret>`. Reads check the secret against the store on every request; pushes may use
//! a token that already authenticated, but only while the store's token epoch (changed by
//! any `ctxsync token create`/`revoke`, in any process) is the one it authenticated
//! under, so a revoked token still stops working at once. A token acts only as its agent.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use ctxsync_store::{Actor, Role, Store, TokenInfo};

use crate::errors::ApiError;

/// The secret a request presented. Extracting it does not touch the store; call
/// [`Bearer::check`] on a blocking thread to authenticate.
#[derive(Clone)]
pub struct Bearer(String);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(..)")
    }
}

/// Tokens that authenticated under one token epoch.
#[derive(Debug, Default)]
pub struct AuthCache {
    epoch: u128,
    tokens: std::collections::HashMap<String, TokenInfo>,
}

impl AuthCache {
    /// Most tokens kept; a server with more live tokens than this re-checks the rest.
    const MAX: usize = 4096;

    pub fn get(&self, bearer: &Bearer, epoch: u128) -> Option<TokenInfo> {
        (self.epoch == epoch)
            .then(|| self.tokens.get(&bearer.0).cloned())
            .flatten()
    }

    pub fn put(&mut self, bearer: &Bearer, epoch: u128, token: TokenInfo) {
        if self.epoch != epoch {
            self.tokens.clear();
            self.epoch = epoch;
        }
        if self.tokens.len() < Self::MAX {
            self.tokens.insert(bearer.0.clone(), token);
        }
    }
}

/// The secret of `Authorization: Bearer <secret>`, if the header has that form.
pub fn secret_of(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>` header"))?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
    let (scheme, secret) = text
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized("expected `Authorization: Bearer <token>`"))?;
    let secret = secret.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || secret.is_empty() {
        return Err(ApiError::unauthorized(
            "expected `Authorization: Bearer <token>`",
        ));
    }
    Ok(secret)
}

impl Bearer {
    /// Authenticates against the store (blocking). Unknown and revoked tokens are 401.
    pub fn check(&self, store: &dyn Store) -> Result<TokenInfo, ApiError> {
        match store.authenticate(&self.0)? {
            Some(token) => Ok(token),
            None => Err(ApiError::unauthorized(
                "unknown or revoked token (create one with `ctxsync token create --agent NAME`)",
            )),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        secret_of(&parts.headers).map(|s| Bearer(s.to_owned()))
    }
}

/// Refuses acting as another agent than the token's.
/// Refuses a write by a read-only (viewer) token.
pub fn may_write(token: &TokenInfo) -> Result<(), ApiError> {
    if token.role == Role::Viewer {
        Err(ApiError::forbidden(format!(
            "token {} is a viewer's (read-only); writes need an agent or admin token",
            token.id
        )))
    } else {
        Ok(())
    }
}

/// The caller of a revert or a conflict resolution, as the store checks it.
pub fn actor(token: &TokenInfo) -> Actor {
    Actor {
        agent: token.agent.clone(),
        role: token.role,
    }
}

pub fn same_agent(token: &TokenInfo, claimed: &str, what: &str) -> Result<(), ApiError> {
    may_write(token)?;
    if token.agent == claimed {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "this token acts as {:?}; it cannot {what} as {claimed:?}",
            token.agent
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_header_forms() {
        let mut h = HeaderMap::new();
        assert!(secret_of(&h).is_err());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(secret_of(&h).is_err());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert!(secret_of(&h).is_err());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer s3cret"),
        );
        assert_eq!(secret_of(&h).ok(), Some("s3cret"));
    }
}
