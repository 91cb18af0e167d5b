//! What every HTTP request meets before its route (COMPAT §1.1, §3.1):
//!
//! * **Per-IP rate limit** on `/api/admin/*` and `/api/auth/*`: 100 requests/s, bursts of 50;
//!   more → 429 `{code, message}` with `Retry-After`. The address is the peer's, or behind
//!   `TOPGUN_TRUSTED_PROXY` the client `X-Forwarded-For` names ([`super::client_ip`]).
//! * **CORS** for `/sync` and `/api/*` from the origins of `TOPGUN_CORS_ORIGINS` (none by
//!   default): a preflight (`OPTIONS` with `Access-Control-Request-Method`) from an allowed
//!   origin is answered 204 here; any other answer to an allowed origin carries
//!   `Access-Control-Allow-Origin`. Other origins get no CORS headers, so browsers refuse.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Host, client_ip, json_error};
use crate::clock::now_ms;
use crate::config::CorsOrigins;
use crate::connection::listener::Peer;
use crate::security::interceptor::Bucket;

/// Requests per second one address may make to the limited routes.
pub const API_REQUESTS_PER_SEC: f64 = 100.0;
/// How many it may make at once.
pub const API_BURST: f64 = 50.0;
/// Most addresses tracked; idle (full) buckets are dropped when there are more, and a new
/// address is refused while every tracked one is busy.
const ADDRESSES_MAX: usize = 100_000;

/// Token buckets per address for the admin and auth routes.
#[derive(Debug, Default)]
pub struct ApiRateLimit {
    /// std Mutex: never held across an `.await`.
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl ApiRateLimit {
    /// Takes a request from `ip`'s bucket, or says how many ms until one is there.
    pub fn take(&self, ip: IpAddr, now_ms: u64) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(&ip) && buckets.len() >= ADDRESSES_MAX {
            buckets.retain(|_, b| !b.is_full(API_REQUESTS_PER_SEC, API_BURST, now_ms));
            if buckets.len() >= ADDRESSES_MAX {
                return Err(1000);
            }
        }
        buckets
            .entry(ip)
            .or_insert_with(|| Bucket::full(API_BURST, now_ms))
            .take(1.0, API_REQUESTS_PER_SEC, API_BURST, now_ms)
    }
}

fn limited(path: &str) -> bool {
    path.starts_with("/api/admin/") || path.starts_with("/api/auth/")
}

/// The rate limit, as a middleware over the whole router.
pub async fn rate_limit<H: Host>(
    State(host): State<Arc<H>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Request,
    next: Next,
) -> Response {
    if limited(request.uri().path()) {
        let ip = client_ip(&*host, request.headers(), peer.addr.ip());
        if let Err(wait_ms) = host.api_rate_limit().take(ip, now_ms()) {
            let mut response = json_error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many requests from {ip}; retry in {wait_ms} ms"),
            );
            let secs = wait_ms.div_ceil(1000).to_string();
            if let Ok(value) = HeaderValue::from_str(&secs) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
    }
    next.run(request).await
}

/// The `Access-Control-Allow-Origin` value for a request's origin, if it is allowed.
fn allowed_origin(cors: &CorsOrigins, origin: &str) -> Option<HeaderValue> {
    let allowed = match cors {
        CorsOrigins::None => false,
        CorsOrigins::Any => true,
        CorsOrigins::Only(origins) => origins.contains(&origin.to_ascii_lowercase()),
    };
    if !allowed {
        return None;
    }
    match cors {
        CorsOrigins::Any => Some(HeaderValue::from_static("*")),
        _ => HeaderValue::from_str(origin).ok(),
    }
}

fn cors_path(path: &str) -> bool {
    path == "/sync" || path.starts_with("/api/")
}

/// CORS, as a middleware over the whole router (preflights never reach a route).
pub async fn cors<H: Host>(State(host): State<Arc<H>>, request: Request, next: Next) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|_| cors_path(request.uri().path()))
        .and_then(|origin| allowed_origin(host.cors(), origin));
    let Some(origin) = origin else {
        return next.run(request).await;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        response
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_burst_then_the_rate() {
        let limit = ApiRateLimit::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..50 {
            assert_eq!(limit.take(a, 1_000), Ok(()));
        }
        assert_eq!(limit.take(a, 1_000), Err(10), "one more after 10 ms");
        assert_eq!(limit.take(b, 1_000), Ok(()), "another address has its own");
        assert_eq!(limit.take(a, 1_010), Ok(()));
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let only = CorsOrigins::Only(["https://app.example".to_owned()].into());
        assert_eq!(
            allowed_origin(&only, "https://APP.example"),
            Some(HeaderValue::from_static("https://APP.example"))
        );
        assert_eq!(allowed_origin(&only, "https://evil.example"), None);
        assert_eq!(
            allowed_origin(&CorsOrigins::None, "https://app.example"),
            None
        );
        assert_eq!(
            allowed_origin(&CorsOrigins::Any, "https://x"),
            Some(HeaderValue::from_static("*"))
        );
        assert!(cors_path("/sync") && cors_path("/api/status") && !cors_path("/metrics"));
    }
}
