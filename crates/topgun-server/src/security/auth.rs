//! JWT authentication (PROTOCOL.md §4.1): HS256 with a shared secret, or RS256 with a public
//! key in PEM. `exp` is required, `nbf` honoured (both with 60 s leeway), `sub` becomes the
//! user id, `roles` (an array of strings) the roles; issuer and audience are enforced when
//! configured.
//!
//! Time checks take the current time as an argument, so the session that calls this stays
//! free of clocks and its tests are exact.

use std::fmt;

use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use thiserror::Error;

/// Tolerance for clock skew on `exp` and `nbf`.
pub const LEEWAY_SECS: f64 = 60.0;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub roles: Vec<String>,
    /// When the token stops being valid (its `exp` plus the leeway), in ms since the Unix
    /// epoch: the session logs the connection out then.
    pub expires_at_ms: u64,
}

/// Why a configured key cannot be used.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("not a valid RS256 public key in PEM: {0}")]
    BadPem(String),
    /// RFC 7518 §3.2: an HS256 key must be at least as long as the hash, 32 bytes.
    #[error(
        "an HS256 secret must be at least {min} bytes (RFC 7518 §3.2), got {len}; use a longer \
         random secret, or an RS256 public key in PEM"
    )]
    ShortSecret { len: usize, min: usize },
}

/// The shortest HS256 secret accepted: the size of the SHA-256 hash.
pub const HS256_SECRET_BYTES_MIN: usize = 32;

/// Why a token was refused. The text is sent to the client in `AUTH_FAIL`: it names the
/// problem with the client's own token and nothing about the server.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token is not signed with {0}")]
    WrongAlgorithm(&'static str),
    #[error("token has no exp claim")]
    MissingExp,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token has no sub claim")]
    MissingSub,
    #[error("token issuer is not accepted")]
    WrongIssuer,
    #[error("token audience is not accepted")]
    WrongAudience,
}

#[derive(Deserialize)]
struct Claims {
    exp: Option<f64>,
    nbf: Option<f64>,
    sub: Option<String>,
    #[serde(default)]
    roles: Option<Vec<String>>,
}

/// Verifies client tokens against the configured key.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    /// HS256 only: the same secret, to sign the admin login's tokens. An RS256 server holds
    /// only the public key and cannot sign.
    signing: Option<jsonwebtoken::EncodingKey>,
    algorithm: Algorithm,
    issuer: Option<String>,
    audience: Option<String>,
}

impl fmt::Debug for JwtVerifier {
    /// Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// `secret` is an RS256 public key if it holds a PEM block (`\n` escapes, as found in
    /// environment variables, are unfolded), otherwise an HS256 shared secret.
    pub fn from_secret(
        secret: &str,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Result<Self, KeyError> {
        let unfolded = secret.replace("\\n", "\n");
        let (key, algorithm, signing) = if unfolded.contains("-----BEGIN") {
            let key = DecodingKey::from_rsa_pem(unfolded.as_bytes())
                .map_err(|e| KeyError::BadPem(e.to_string()))?;
            (key, Algorithm::RS256, None)
        } else if secret.len() < HS256_SECRET_BYTES_MIN {
            return Err(KeyError::ShortSecret {
                len: secret.len(),
                min: HS256_SECRET_BYTES_MIN,
            });
        } else {
            (
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
                Some(jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())),
            )
        };
        Ok(Self {
            key,
            signing,
            algorithm,
            issuer,
            audience,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// An HS256 token `{sub, roles, exp}` (with the configured issuer and audience, so that
    /// this verifier accepts it), or `None` on an RS256 server, which cannot sign.
    pub fn sign(&self, sub: &str, roles: &[&str], exp_secs: u64) -> Option<String> {
        let signing = self.signing.as_ref()?;
        let mut claims = serde_json::json!({ "sub": sub, "roles": roles, "exp": exp_secs });
        if let Some(issuer) = &self.issuer {
            claims["iss"] = issuer.as_str().into();
        }
        if let Some(audience) = &self.audience {
            claims["aud"] = audience.as_str().into();
        }
        let header = jsonwebtoken::Header::new(Algorithm::HS256);
        jsonwebtoken::encode(&header, &claims, signing).ok()
    }

    /// Checks `token` at `now_secs` (seconds since the Unix epoch).
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Principal, AuthError> {
        let mut validation = Validation::new(self.algorithm);
        // Time claims are checked below against the caller's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        if let Some(audience) = &self.audience {
            validation.set_audience(&[audience]);
            validation.validate_aud = true;
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &validation)
            .map_err(|e| self.classify(e.kind()))?
            .claims;
        #[allow(clippy::cast_precision_loss)]
        let now = now_secs as f64;
        let exp = claims.exp.ok_or(AuthError::MissingExp)?;
        if now > exp + LEEWAY_SECS {
            return Err(AuthError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| now + LEEWAY_SECS < nbf) {
            return Err(AuthError::NotYetValid);
        }
        let user_id = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::MissingSub)?;
        // The leeway that admitted the token also bounds how long it stays valid.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let expires_at_ms = ((exp + LEEWAY_SECS).max(0.0) * 1000.0) as u64;
        Ok(Principal {
            user_id,
            roles: claims.roles.unwrap_or_default(),
            expires_at_ms,
        })
    }

    fn classify(&self, kind: &JwtErrorKind) -> AuthError {
        match kind {
            JwtErrorKind::InvalidSignature => AuthError::BadSignature,
            JwtErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm(match self.algorithm {
                Algorithm::RS256 => "RS256",
                _ => "HS256",
            }),
            JwtErrorKind::InvalidIssuer | JwtErrorKind::MissingRequiredClaim(_)
                if self.issuer.is_some() =>
            {
                AuthError::WrongIssuer
            }
            JwtErrorKind::InvalidAudience => AuthError::WrongAudience,
            _ => AuthError::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    /// 32 bytes or more, as HS256 requires.
    const SECRET: &str = "auth-tests-secret-0123456789abcdef";

    fn hs256(claims: &serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn verifier() -> JwtVerifier {
        JwtVerifier::from_secret(SECRET, None, None).unwrap()
    }

    #[test]
    fn a_signed_token_verifies_with_its_issuer_and_audience() {
        let v = JwtVerifier::from_secret(SECRET, Some("iss".into()), Some("aud".into())).unwrap();
        let token = v.sign("admin", &["admin"], NOW + 60).unwrap();
        let principal = v.verify(&token, NOW).unwrap();
        assert_eq!(
            (principal.user_id.as_str(), principal.roles),
            ("admin", vec!["admin".to_owned()])
        );
        assert_eq!(
            verifier().verify(&token, NOW + 200),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn accepts_a_valid_token_with_roles() {
        let token = hs256(
            &json!({"sub": "alice", "exp": NOW + 60, "roles": ["ADMIN"]}),
            SECRET,
        );
        assert_eq!(
            verifier().verify(&token, NOW),
            Ok(Principal {
                user_id: "alice".into(),
                roles: vec!["ADMIN".into()],
                expires_at_ms: (NOW + 60 + 60) * 1000,
            })
        );
    }

    #[test]
    fn refusals_name_the_problem() {
        let v = verifier();
        let cases = [
            (
                hs256(&json!({"sub": "a", "exp": NOW + 60}), "other"),
                AuthError::BadSignature,
            ),
            (hs256(&json!({"sub": "a"}), SECRET), AuthError::MissingExp),
            (
                hs256(&json!({"sub": "a", "exp": NOW - 61}), SECRET),
                AuthError::Expired,
            ),
            (
                hs256(
                    &json!({"sub": "a", "exp": NOW + 600, "nbf": NOW + 61}),
                    SECRET,
                ),
                AuthError::NotYetValid,
            ),
            (
                hs256(&json!({"exp": NOW + 60}), SECRET),
                AuthError::MissingSub,
            ),
            (
                hs256(&json!({"sub": "", "exp": NOW + 60}), SECRET),
                AuthError::MissingSub,
            ),
            ("not-a-jwt".to_owned(), AuthError::Malformed),
        ];
        for (token, expected) in cases {
            assert_eq!(v.verify(&token, NOW), Err(expected.clone()), "{expected}");
        }
        // Within the leeway: accepted.
        let token = hs256(&json!({"sub": "a", "exp": NOW - 59}), SECRET);
        assert!(v.verify(&token, NOW).is_ok());
    }

    #[test]
    fn issuer_and_audience_are_enforced_when_configured() {
        let v =
            JwtVerifier::from_secret(SECRET, Some("topgun".into()), Some("app".into())).unwrap();
        let good = hs256(
            &json!({"sub": "a", "exp": NOW + 60, "iss": "topgun", "aud": "app"}),
            SECRET,
        );
        assert!(v.verify(&good, NOW).is_ok());
        let wrong_iss = hs256(
            &json!({"sub": "a", "exp": NOW + 60, "iss": "x", "aud": "app"}),
            SECRET,
        );
        assert_eq!(v.verify(&wrong_iss, NOW), Err(AuthError::WrongIssuer));
        let wrong_aud = hs256(
            &json!({"sub": "a", "exp": NOW + 60, "iss": "topgun", "aud": "y"}),
            SECRET,
        );
        assert_eq!(v.verify(&wrong_aud, NOW), Err(AuthError::WrongAudience));
    }

    #[test]
    fn rs256_public_keys_verify_and_refuse_hs256_tokens() {
        let private = include_str!("../../tests/fixtures/rs256-private.pem");
        let public = include_str!("../../tests/fixtures/rs256-public.pem");
        // As an environment variable would hold it: one line with `\n` escapes.
        let v = JwtVerifier::from_secret(&public.replace('\n', "\\n"), None, None).unwrap();
        assert_eq!(v.algorithm(), Algorithm::RS256);
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &json!({"sub": "bob", "exp": NOW + 60}),
            &EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(&token, NOW).map(|p| p.user_id), Ok("bob".into()));
        let forged = hs256(&json!({"sub": "bob", "exp": NOW + 60}), public);
        assert_eq!(
            v.verify(&forged, NOW),
            Err(AuthError::WrongAlgorithm("RS256"))
        );
        assert!(
            JwtVerifier::from_secret(
                "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----",
                None,
                None
            )
            .is_err()
        );
    }
}
