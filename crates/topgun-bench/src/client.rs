//! One benchmark connection: connect, authenticate as the TS client does, then send and
//! receive whole MsgPack frames while counting the bytes that crossed the socket.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use topgun_core::protocol::messages::{Auth, Ping};
use topgun_core::protocol::{DecodeError, Limits, Message};

use crate::cli::Common;

/// Why a benchmark connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        source: tokio_tungstenite::tungstenite::Error,
    },
    #[error("cannot sign a token: {0}")]
    Token(#[from] jsonwebtoken::errors::Error),
    #[error("the server refused the token: {0}")]
    AuthFailed(String),
    #[error("the server closed the connection (code {code:?}): {reason}")]
    Closed { code: Option<u16>, reason: String },
    #[error("no {0} within the timeout")]
    Timeout(&'static str),
    #[error("socket: {0}")]
    Socket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("undecodable frame from the server: {0}")]
    Decode(#[from] DecodeError),
}

/// Where and how connections are opened.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    secret: Option<String>,
    pub timeout: Duration,
    /// Decode limits for the server's frames: generous, since a server may send a whole
    /// leaf or a large batch of events in one frame.
    pub limits: Limits,
}

impl Target {
    pub fn new(common: &Common) -> Self {
        Self {
            url: common.url.clone(),
            secret: common.jwt_secret.clone(),
            timeout: common.timeout,
            limits: Limits {
                max_frame_bytes: 64 * 1024 * 1024,
                max_collection_len: 1 << 20,
                ..Limits::default()
            },
        }
    }

    /// A token for `subject`, valid for a day, when a secret was given.
    fn token(&self, subject: &str) -> Result<Option<String>, ClientError> {
        let Some(secret) = &self.secret else {
            return Ok(None);
        };
        let claims = serde_json::json!({
            "sub": subject,
            "exp": crate::now_ms() / 1000 + 86_400,
            "roles": ["ADMIN"],
        });
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )?;
        Ok(Some(token))
    }

    /// Opens a connection and waits until the server has accepted it: `AUTH` answered by
    /// `AUTH_ACK` with a token; otherwise a `PING` answered by `PONG` (a no-auth server
    /// sends nothing on connect, and may ignore `AUTH`).
    pub async fn open(&self, subject: &str) -> Result<Conn, ClientError> {
        // Small buffers: `conns` holds thousands of idle connections in this process, and
        // tungstenite zero-fills a read's whole free space before every socket read. With
        // 16 KiB, that `memset` was 8 % of the generator's CPU in `fanout`, whose reads
        // carry about 1.3 KB each.
        let config = WebSocketConfig::default()
            .read_buffer_size(4 * 1024)
            .write_buffer_size(0)
            .max_message_size(Some(self.limits.max_frame_bytes))
            .max_frame_size(Some(self.limits.max_frame_bytes));
        let connect = tokio_tungstenite::connect_async_with_config(&self.url, Some(config), true);
        let (ws, _) = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| ClientError::Timeout("WebSocket handshake"))?
            .map_err(|source| ClientError::Connect {
                url: self.url.clone(),
                source,
            })?;
        let mut conn = Conn {
            ws,
            limits: self.limits,
            bytes_in: 0,
            bytes_out: 0,
        };
        match self.token(subject)? {
            Some(token) => conn.authenticate(token, self.timeout).await?,
            None => conn.ping_pong(self.timeout).await?,
        }
        Ok(conn)
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An open, accepted connection.
#[derive(Debug)]
pub struct Conn {
    ws: Socket,
    limits: Limits,
    /// MsgPack bytes received and sent (WebSocket frame headers not counted).
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Conn {
    async fn authenticate(&mut self, token: String, timeout: Duration) -> Result<(), ClientError> {
        let auth = Message::Auth(Auth {
            token: token.into(),
            protocol_version: None,
            device_token: None,
        });
        self.send(&auth).await?;
        loop {
            match self.recv_within(timeout, "AUTH_ACK").await? {
                Message::AuthAck(_) => return Ok(()),
                Message::AuthFail(fail) => {
                    let why = fail.error.map_or_else(String::new, |e| e.to_string());
                    return Err(ClientError::AuthFailed(why));
                }
                _ => {}
            }
        }
    }

    async fn ping_pong(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let timestamp = crate::now_ms();
        self.send(&Message::Ping(Ping { timestamp })).await?;
        loop {
            match self.recv_within(timeout, "PONG").await? {
                Message::Pong(_) => return Ok(()),
                Message::AuthRequired(_) => {
                    return Err(ClientError::AuthFailed(
                        "the server requires authentication: pass --jwt-secret".into(),
                    ));
                }
                _ => {}
            }
        }
    }

    /// Sends one message as one binary frame.
    pub async fn send(&mut self, message: &Message) -> Result<(), ClientError> {
        self.send_frame(message.encode()).await
    }

    /// Sends an encoded frame.
    pub async fn send_frame(&mut self, frame: Vec<u8>) -> Result<(), ClientError> {
        self.bytes_out += frame.len() as u64;
        self.ws.send(Ws::Binary(frame.into())).await?;
        Ok(())
    }

    /// The next protocol message. Text and control frames are skipped.
    pub async fn recv(&mut self) -> Result<Message, ClientError> {
        let frame = self.recv_frame().await?;
        Ok(Message::decode(&frame, &self.limits)?)
    }

    /// The next binary frame, undecoded (for readers that pick out a few fields).
    pub async fn recv_frame(
        &mut self,
    ) -> Result<tokio_tungstenite::tungstenite::Bytes, ClientError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Ws::Binary(bytes))) => {
                    self.bytes_in += bytes.len() as u64;
                    return Ok(bytes);
                }
                Some(Ok(Ws::Close(frame))) => {
                    return Err(ClientError::Closed {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.map_or_else(String::new, |f| f.reason.to_string()),
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => {
                    return Err(ClientError::Closed {
                        code: None,
                        reason: "connection lost".into(),
                    });
                }
            }
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// [`Conn::recv`] with a deadline; `what` names the awaited message in the error.
    pub async fn recv_within(
        &mut self,
        timeout: Duration,
        what: &'static str,
    ) -> Result<Message, ClientError> {
        tokio::time::timeout(timeout, self.recv())
            .await
            .map_err(|_| ClientError::Timeout(what))?
    }

    /// Closes the connection politely; errors are moot at this point.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
