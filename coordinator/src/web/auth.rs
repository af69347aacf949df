//! Who may read the coordinator's HTTP routes: the job API token, presented as a bearer
//! header (`/metrics`, scripts) or once through the login form, which opens a session held in
//! a cookie (the browser). Without a job API token everything is open, as the gRPC API is.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use gantry_proto::auth::Token;

/// The session cookie's name.
pub const COOKIE: &str = "gantry_session";
/// How long a session lasts after its login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; past that, the oldest go first.
const MAX_SESSIONS: usize = 10_000;

/// The token and the sessions it opened.
#[derive(Debug)]
pub struct Auth {
    token: Option<Token>,
    /// Session id -> expiry.
    sessions: Mutex<HashMap<String, Instant>>,
    /// Cookies are marked `Secure` (the server speaks HTTPS).
    secure: bool,
}

impl Auth {
    /// Checks against `token` (None: everything is open); `secure` marks cookies for HTTPS only.
    pub fn new(token: Option<Token>, secure: bool) -> Self {
        Self {
            token,
            sessions: Mutex::default(),
            secure,
        }
    }

    /// Whether a token is needed at all.
    pub fn required(&self) -> bool {
        self.token.is_some()
    }

    /// Whether the request carries `Authorization: Bearer <token>` (or no token is needed).
    pub fn bearer(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else { return true };
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|presented| token.matches(presented.trim()))
    }

    /// Whether the request holds a live session (or no token is needed, or it carries the
    /// bearer token: scripts may read the API without a cookie).
    pub fn session(&self, headers: &HeaderMap) -> bool {
        if self.token.is_none() || self.bearer(headers) {
            return true;
        }
        let Some(id) = session_id(headers) else { return false };
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        match sessions.get(&id) {
            Some(expiry) if *expiry > now => true,
            Some(_) => {
                sessions.remove(&id);
                false
            }
            None => false,
        }
    }

    /// A new session when `presented` is the token (compared in constant time); its
    /// `Set-Cookie` value.
    pub fn login(&self, presented: &str) -> Option<HeaderValue> {
        if let Some(token) = &self.token
            && !token.matches(presented.trim())
        {
            return None;
        }
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        let id = hex::encode(bytes);
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, expiry| *expiry > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, e)| **e).map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), now + SESSION_TTL);
        HeaderValue::from_str(&self.cookie(&id, SESSION_TTL.as_secs())).ok()
    }

    /// Ends the request's session; the `Set-Cookie` value that clears it.
    pub fn logout(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(id) = session_id(headers) {
            self.sessions.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        }
        HeaderValue::from_str(&self.cookie("", 0)).expect("an ASCII cookie")
    }

    fn cookie(&self, value: &str, max_age: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
    }
}

/// The session id in the request's cookies.
fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(set_cookie: &HeaderValue) -> HeaderMap {
        let pair = set_cookie.to_str().unwrap().split(';').next().unwrap().to_string();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {pair}")).unwrap(),
        );
        headers
    }

    #[test]
    fn a_session_opens_with_the_token_only_and_closes_at_logout() {
        let auth = Auth::new(Some(Token::new("s3cret", "test").unwrap()), true);
        assert!(auth.required());
        assert!(auth.login("wrong").is_none());
        assert!(auth.login("").is_none());
        assert!(!auth.session(&HeaderMap::new()));
        let cookie = auth.login("s3cret\n").expect("the token opens a session");
        let text = cookie.to_str().unwrap();
        for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(text.contains(attribute), "{text}");
        }
        let headers = with_cookie(&cookie);
        assert!(auth.session(&headers));
        // A made-up session id is refused.
        let mut forged = HeaderMap::new();
        forged.insert(header::COOKIE, HeaderValue::from_static("gantry_session=00ff"));
        assert!(!auth.session(&forged));
        let cleared = auth.logout(&headers);
        assert!(cleared.to_str().unwrap().contains("Max-Age=0"));
        assert!(!auth.session(&headers));
    }

    #[test]
    fn the_bearer_header_is_checked_and_no_token_means_open() {
        let auth = Auth::new(Some(Token::new("s3cret", "test").unwrap()), false);
        let mut headers = HeaderMap::new();
        assert!(!auth.bearer(&headers));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer nope"));
        assert!(!auth.bearer(&headers));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
        assert!(auth.bearer(&headers));
        assert!(auth.session(&headers));
        let cookie = auth.login("s3cret").unwrap();
        assert!(!cookie.to_str().unwrap().contains("Secure"));

        let open = Auth::new(None, false);
        assert!(!open.required());
        assert!(open.bearer(&HeaderMap::new()) && open.session(&HeaderMap::new()));
    }
}
