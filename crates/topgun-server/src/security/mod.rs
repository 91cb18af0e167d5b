//! Who may do what: authentication, access policies, and the guards that bound what one
//! connection, user or address may cost.
//!
//! Owns JWT verification ([`auth`]), the role policies and their decisions ([`policy`], sans
//! I/O), the policies in force and each connection's subject ([`access`]), the per-user and
//! per-address guards ([`guard`]) and the hooks around ops with the rate limiter
//! ([`interceptor`]).
//!
//! Invariants:
//! * every request is checked against the policies in force when it is served, not when the
//!   connection authenticated: a policy change applies to the next request;
//! * a refused request changes nothing and is answered with its reason;
//! * without policies, an authenticated subject may do everything (the TopGun default).
//!
//! Public face: [`auth::Principal`], [`policy::PolicySet`], [`access::ConnAccess`],
//! [`interceptor::Interceptor`].

pub mod access;
pub mod admin_policy;
pub mod admin_store;
pub mod admission;
pub mod auth;
pub mod condition;
pub mod guard;
pub mod interceptor;
pub mod policy;
