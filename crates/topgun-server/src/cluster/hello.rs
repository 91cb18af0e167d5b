//! The handshake that opens every connection between members (CLUSTER.md §13): both sides
//! prove they know `TOPGUN_CLUSTER_SECRET` and belong to the same cluster before a single
//! frame of Raft or data is read.
//!
//! ```text
//! dialer                                   acceptor
//!   HELLO {cluster, name, incarnation, proto, channel, nonce_d}  →
//!                                          checks cluster name and protocol
//!   ←  HELLO_ACK {name, incarnation, nonce_a, mac_a}   (or REFUSED {reason})
//! checks mac_a
//!   PROOF {mac_d}  →
//!                                          checks mac_d
//!   ←  ACCEPTED                              (or REFUSED {reason})
//! ```
//!
//! `mac_a` and `mac_d` are HMAC-SHA256 under the secret over the whole transcript (both
//! identities, the channel, both nonces), each with its own label, so neither can be replayed
//! as the other or on another connection: the other side's nonce is fresh. Without a secret
//! (a cluster listening on loopback only) the key is empty: the exchange still checks the
//! cluster name and the protocol.
//!
//! Invariants:
//! * nothing but these four small frames is read before the peer is authenticated, each
//!   bounded by [`HANDSHAKE_FRAME_BYTES_MAX`], all within [`HANDSHAKE_TIMEOUT`];
//! * MACs are compared in constant time.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::frame::{Frame, FrameError, read_frame_within};

/// The version of the member-to-member protocol; both sides must speak the same.
pub const PROTOCOL_VERSION: u16 = 1;

/// The most a handshake frame may hold.
pub const HANDSHAKE_FRAME_BYTES_MAX: usize = 4096;

/// The most a handshake may take, from connect to accepted.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

const HELLO: u8 = 1;
const HELLO_ACK: u8 = 2;
const PROOF: u8 = 3;
const ACCEPTED: u8 = 4;
const REFUSED: u8 = 5;

type HmacSha256 = Hmac<Sha256>;

/// Which of a pair's connections this is: Raft and membership, or data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Channel {
    Control,
    Data,
}

/// Who is at the other end: a member name, its incarnation and where it listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerIdentity {
    pub name: String,
    /// Random per start (or per data directory): tells a restarted member from its old self.
    pub incarnation: u128,
    /// The cluster address (`host:port`) the member listens on: where replies to it go,
    /// since every socket carries one direction only.
    pub addr: String,
}

/// What a member proves itself with.
#[derive(Clone)]
pub struct Credentials {
    pub cluster: String,
    pub me: PeerIdentity,
    /// `TOPGUN_CLUSTER_SECRET`; empty where the cluster listens on loopback only.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("cluster", &self.cluster)
            .field("me", &self.me)
            .field(
                "secret",
                &if self.secret.is_empty() {
                    "none"
                } else {
                    "set"
                },
            )
            .finish()
    }
}

/// Why a handshake failed.
#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error("the peer refused the connection: {0}")]
    Refused(String),
    #[error("the peer is in cluster {theirs:?}, not {ours:?}")]
    OtherCluster { ours: String, theirs: String },
    #[error("the peer speaks protocol {0}, not {PROTOCOL_VERSION}")]
    Protocol(u16),
    #[error("the peer does not know the cluster secret")]
    BadProof,
    #[error("unexpected frame type {0} during the handshake")]
    Unexpected(u8),
    #[error("a malformed handshake frame: {0}")]
    Malformed(String),
    #[error("the handshake took longer than {HANDSHAKE_TIMEOUT:?}")]
    Timeout,
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl HandshakeError {
    /// Whether the two sides cannot agree as configured (as opposed to a network failure
    /// worth retrying at once).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Refused(_) | Self::OtherCluster { .. } | Self::Protocol(_) | Self::BadProof
        )
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    cluster: String,
    me: PeerIdentity,
    proto: u16,
    channel: Channel,
    nonce: [u8; 32],
}

#[derive(Debug, Serialize, Deserialize)]
struct HelloAck {
    me: PeerIdentity,
    nonce: [u8; 32],
    mac: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Proof {
    mac: Vec<u8>,
}

/// Opens a connection as the dialer; the acceptor's identity once both sides are proven.
pub async fn dial(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    creds: &Credentials,
    channel: Channel,
) -> Result<PeerIdentity, HandshakeError> {
    within_timeout(dial_steps(stream, creds, channel)).await
}

/// Answers a connection as the acceptor; the dialer's identity and channel once both sides
/// are proven. A refusal is told to the dialer before the error is returned.
pub async fn accept(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    creds: &Credentials,
) -> Result<(PeerIdentity, Channel), HandshakeError> {
    within_timeout(accept_steps(stream, creds)).await
}

async fn within_timeout<T>(
    steps: impl Future<Output = Result<T, HandshakeError>>,
) -> Result<T, HandshakeError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, steps)
        .await
        .unwrap_or(Err(HandshakeError::Timeout))
}

async fn dial_steps(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    creds: &Credentials,
    channel: Channel,
) -> Result<PeerIdentity, HandshakeError> {
    let hello = Hello {
        cluster: creds.cluster.clone(),
        me: creds.me.clone(),
        proto: PROTOCOL_VERSION,
        channel,
        nonce: rand::random(),
    };
    send(stream, HELLO, &hello).await?;
    let ack: HelloAck = receive(stream, HELLO_ACK).await?;
    let transcript = transcript(&hello, &ack.me, &ack.nonce);
    if !verify(&creds.secret, b"ack", &transcript, &ack.mac) {
        return Err(HandshakeError::BadProof);
    }
    let mac = sign(&creds.secret, b"proof", &transcript);
    send(stream, PROOF, &Proof { mac }).await?;
    let () = receive(stream, ACCEPTED).await?;
    Ok(ack.me)
}

async fn accept_steps(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    creds: &Credentials,
) -> Result<(PeerIdentity, Channel), HandshakeError> {
    let hello: Hello = receive(stream, HELLO).await?;
    if let Err(refused) = check_hello(&hello, creds) {
        refuse(stream, &refused).await;
        return Err(refused);
    }
    let nonce: [u8; 32] = rand::random();
    let transcript = transcript(&hello, &creds.me, &nonce);
    let mac = sign(&creds.secret, b"ack", &transcript);
    let ack = HelloAck {
        me: creds.me.clone(),
        nonce,
        mac,
    };
    send(stream, HELLO_ACK, &ack).await?;
    let proof: Proof = receive(stream, PROOF).await?;
    if !verify(&creds.secret, b"proof", &transcript, &proof.mac) {
        refuse(stream, &HandshakeError::BadProof).await;
        return Err(HandshakeError::BadProof);
    }
    send(stream, ACCEPTED, &()).await?;
    Ok((hello.me, hello.channel))
}

fn check_hello(hello: &Hello, creds: &Credentials) -> Result<(), HandshakeError> {
    if hello.cluster != creds.cluster {
        return Err(HandshakeError::OtherCluster {
            ours: creds.cluster.clone(),
            theirs: hello.cluster.clone(),
        });
    }
    if hello.proto != PROTOCOL_VERSION {
        return Err(HandshakeError::Protocol(hello.proto));
    }
    Ok(())
}

/// Tells the dialer why it is refused; a failure to tell it changes nothing.
async fn refuse(stream: &mut (impl AsyncWrite + Unpin), why: &HandshakeError) {
    let _ = send(stream, REFUSED, &why.to_string()).await;
}

/// What both MACs cover: every field that identifies the connection, length-prefixed so that
/// no two transcripts run together alike.
fn transcript(hello: &Hello, acceptor: &PeerIdentity, acceptor_nonce: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut field = |bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    field(hello.cluster.as_bytes());
    field(hello.me.name.as_bytes());
    field(&hello.me.incarnation.to_be_bytes());
    field(hello.me.addr.as_bytes());
    field(&hello.proto.to_be_bytes());
    field(&[u8::from(hello.channel == Channel::Data)]);
    field(&hello.nonce);
    field(acceptor.name.as_bytes());
    field(&acceptor.incarnation.to_be_bytes());
    field(acceptor.addr.as_bytes());
    field(acceptor_nonce);
    out
}

fn mac(secret: &[u8], label: &[u8], transcript: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length, the empty one included.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(label);
    mac.update(transcript);
    mac
}

fn sign(secret: &[u8], label: &[u8], transcript: &[u8]) -> Vec<u8> {
    mac(secret, label, transcript)
        .finalize()
        .into_bytes()
        .to_vec()
}

fn verify(secret: &[u8], label: &[u8], transcript: &[u8], tag: &[u8]) -> bool {
    mac(secret, label, transcript).verify_slice(tag).is_ok()
}

async fn send(
    stream: &mut (impl AsyncWrite + Unpin),
    kind: u8,
    body: &impl Serialize,
) -> Result<(), HandshakeError> {
    let body =
        rmp_serde::to_vec_named(body).map_err(|e| HandshakeError::Malformed(e.to_string()))?;
    let encoded = Frame::new(kind, body).encode()?;
    stream.write_all(&encoded).await.map_err(FrameError::from)?;
    Ok(())
}

async fn receive<T: for<'de> Deserialize<'de>>(
    stream: &mut (impl AsyncRead + Unpin),
    want: u8,
) -> Result<T, HandshakeError> {
    let frame = read_frame_within(stream, HANDSHAKE_FRAME_BYTES_MAX).await?;
    if frame.kind == REFUSED {
        let why: String = rmp_serde::from_slice(&frame.body).unwrap_or_default();
        return Err(HandshakeError::Refused(why));
    }
    if frame.kind != want {
        return Err(HandshakeError::Unexpected(frame.kind));
    }
    rmp_serde::from_slice(&frame.body).map_err(|e| HandshakeError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn creds(cluster: &str, name: &str, secret: &[u8]) -> Credentials {
        Credentials {
            cluster: cluster.into(),
            me: PeerIdentity {
                name: name.into(),
                incarnation: 7,
                addr: format!("{name}.test:9000"),
            },
            secret: secret.to_vec(),
        }
    }

    /// Runs both sides over an in-memory pipe.
    async fn handshake(
        dialer: &Credentials,
        acceptor: &Credentials,
    ) -> (
        Result<PeerIdentity, HandshakeError>,
        Result<(PeerIdentity, Channel), HandshakeError>,
    ) {
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        tokio::join!(
            dial(&mut a, dialer, Channel::Data),
            accept(&mut b, acceptor)
        )
    }

    #[tokio::test]
    async fn members_with_one_secret_and_cluster_name_know_each_other() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let (dialed, accepted) =
            handshake(&creds("c", "n1", secret), &creds("c", "n2", secret)).await;
        assert_eq!(dialed.unwrap().name, "n2");
        let (peer, channel) = accepted.unwrap();
        assert_eq!((peer.name.as_str(), channel), ("n1", Channel::Data));
        // Loopback clusters without a secret still meet.
        let (dialed, accepted) = handshake(&creds("c", "n1", b""), &creds("c", "n2", b"")).await;
        assert!(dialed.is_ok() && accepted.is_ok());
    }

    #[tokio::test]
    async fn a_wrong_secret_or_cluster_is_refused_on_both_sides() {
        let (dialed, accepted) =
            handshake(&creds("c", "n1", b"one"), &creds("c", "n2", b"two")).await;
        assert!(
            matches!(dialed, Err(HandshakeError::BadProof)),
            "{dialed:?}"
        );
        assert!(accepted.is_err());
        let (dialed, accepted) = handshake(&creds("a", "n1", b"s"), &creds("b", "n2", b"s")).await;
        assert!(
            matches!(&dialed, Err(HandshakeError::Refused(why)) if why.contains("cluster")),
            "{dialed:?}"
        );
        assert!(matches!(accepted, Err(HandshakeError::OtherCluster { .. })));
    }

    #[tokio::test]
    async fn an_acceptor_never_reads_a_large_frame_before_the_proof() {
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let huge = u32::try_from(HANDSHAKE_FRAME_BYTES_MAX + 1).unwrap();
        a.write_all(&huge.to_be_bytes()).await.unwrap();
        let accepted = accept(&mut b, &creds("c", "n2", b"")).await;
        assert!(matches!(
            accepted,
            Err(HandshakeError::Frame(FrameError::TooLarge(_)))
        ));
    }

    #[test]
    fn the_transcript_binds_every_field() {
        let hello = Hello {
            cluster: "c".into(),
            me: creds("c", "n1", b"").me,
            proto: PROTOCOL_VERSION,
            channel: Channel::Control,
            nonce: [1; 32],
        };
        let base = transcript(&hello, &creds("c", "n2", b"").me, &[2; 32]);
        let other_channel = Hello {
            channel: Channel::Data,
            ..hello
        };
        assert_ne!(
            base,
            transcript(&other_channel, &creds("c", "n2", b"").me, &[2; 32])
        );
        assert_ne!(
            sign(b"k", b"ack", &base),
            sign(b"k", b"proof", &base),
            "labels keep one MAC from standing in for the other"
        );
    }
}
