//! The connection handshake: the one place a peer is admitted before any
//! of its requests runs. See docs/protocol.md ("Handshake") and
//! docs/security.md.
//!
//! ```text
//! client -> server   hello      client nonce, client process id
//! server -> client   challenge  address, server process id, mode, server nonce, key id, server proof
//! client -> server   proof      client proof          (mode "auth" only)
//! server -> client   verdict    "ok" | "denied"       (mode "auth" only)
//! ```
//!
//! Over a channel that only the two peers can reach (a child's pipes, a
//! socket pair), the hello is symmetric and authenticates nothing: each
//! side sends `peer` with its process id, and reads the other's. Over a
//! channel others may reach that neither side listens on, both send
//! `hello`, and the one with the larger nonce plays the server's part.
//!
//! In mode `"open"` (a server started without authentication, for pyacq
//! peers) the challenge admits the peer at once, and a client accepts such
//! a server only when it was told to ([`Auth::Open`]). The same messages
//! travel as native hello frames or, over ZeroMQ, as the `farcall_hello`
//! and `farcall_auth` actions.

use bytes::Bytes;

use crate::auth::{self, Key, KeyId, Nonce, Side, KEY_LEN, PROOF_LEN};
use crate::error::{Error, Result};
use crate::protocol::Frames;
use crate::value::Value;

/// How a server or client authenticates.
#[derive(Clone, Debug, Default)]
pub enum Auth {
    /// With this process's key ([`auth::process_key`]); a client also
    /// tries the per-user key file.
    #[default]
    ProcessKey,
    /// With this key.
    Key(Key),
    /// Not at all: a server admits anyone, a client talks to a server that
    /// cannot authenticate (pyacq). An explicit opt-in.
    Open,
}

/// Names a process to its peers (16 random bytes, one per process): the
/// address of its [`crate::host::Host::local`] is made from it, so that a
/// peer binds the proxies of this process to the link they came by.
pub type ClientId = [u8; 16];

/// This process's id.
pub fn client_id() -> ClientId {
    static ID: std::sync::OnceLock<ClientId> = std::sync::OnceLock::new();
    *ID.get_or_init(|| auth::random().unwrap_or_default())
}

/// The marker that starts every native hello frame list.
pub const MAGIC: &[u8] = b"farcall/1";
const MODE_AUTH: &str = "auth";
const MODE_OPEN: &str = "open";

/// The server's first answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Challenge {
    /// The address the server is reachable at.
    pub address: String,
    /// The server's process id (`None` from a ZeroMQ server that did not
    /// send it).
    pub process: Option<ClientId>,
    /// `None` for an open server.
    pub auth: Option<ServerProof>,
}

/// What an authenticating server sends with its challenge.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerProof {
    /// The server's fresh nonce, for the client to sign.
    pub nonce: Nonce,
    /// Which key the server holds.
    pub key_id: KeyId,
    /// The server's proof over the client's nonce.
    pub proof: [u8; PROOF_LEN],
}

// ---- server side --------------------------------------------------------

/// Where one peer is in the handshake, on the server.
#[derive(Clone, Debug, Default)]
pub enum PeerState {
    /// Nothing received yet.
    #[default]
    New,
    /// Challenged; waiting for the client's proof.
    Challenged {
        /// The client's nonce.
        client_nonce: Nonce,
        /// Ours.
        server_nonce: Nonce,
    },
    /// May send requests.
    Admitted,
}

impl PeerState {
    /// True once the peer may send requests.
    pub fn admitted(&self) -> bool {
        matches!(self, PeerState::Admitted)
    }
}

/// A server's admission policy: its key, or none (open).
#[derive(Clone, Debug)]
pub struct Gate {
    key: Option<Key>,
}

impl Gate {
    /// The gate for `auth` (resolving the process key).
    pub fn new(auth: &Auth) -> Result<Gate> {
        let key = match auth {
            Auth::ProcessKey => Some(auth::process_key()?),
            Auth::Key(k) => Some(k.clone()),
            Auth::Open => None,
        };
        Ok(Gate { key })
    }

    /// True when peers must prove they hold the key.
    pub fn authenticates(&self) -> bool {
        self.key.is_some()
    }

    /// The key id peers need, if any.
    pub fn key_id(&self) -> Option<KeyId> {
        self.key.as_ref().map(Key::id)
    }

    /// Lets clients of this process find the key of the server at
    /// `address` without being told.
    pub fn publish_key(&self, address: &str) {
        if let Some(key) = &self.key {
            auth::remember(address, key);
        }
    }

    /// Answers a client's hello: the challenge to send and the peer's new
    /// state (admitted at once by an open server).
    pub fn challenge(&self, address: &str, client_nonce: &[u8]) -> Result<(Challenge, PeerState)> {
        let Some(key) = &self.key else {
            let open = Challenge {
                address: address.to_string(),
                process: Some(client_id()),
                auth: None,
            };
            return Ok((open, PeerState::Admitted));
        };
        let client_nonce: Nonce = client_nonce
            .try_into()
            .map_err(|_| Error::Protocol("the client's hello has no valid nonce".into()))?;
        let server_nonce = auth::random::<KEY_LEN>()?;
        let challenge = Challenge {
            address: address.to_string(),
            process: Some(client_id()),
            auth: Some(ServerProof {
                nonce: server_nonce,
                key_id: key.id(),
                proof: key.prove(Side::Server, &client_nonce, &server_nonce),
            }),
        };
        let state = PeerState::Challenged {
            client_nonce,
            server_nonce,
        };
        Ok((challenge, state))
    }

    /// Checks the client's proof; true admits the peer.
    pub fn admits(&self, state: &PeerState, proof: &[u8]) -> bool {
        match (&self.key, state) {
            (
                Some(key),
                PeerState::Challenged {
                    client_nonce,
                    server_nonce,
                },
            ) => key.verify(Side::Client, proof, server_nonce, client_nonce),
            _ => false,
        }
    }
}

// ---- client side --------------------------------------------------------

/// A client's side of one handshake.
pub struct ClientHandshake {
    nonce: Nonce,
    keys: Vec<Key>,
    allow_open: bool,
    address: String,
}

impl ClientHandshake {
    /// Starts a handshake with the server at `address` under `auth`.
    pub fn new(address: &str, auth: &Auth) -> Result<ClientHandshake> {
        let (keys, allow_open) = match auth {
            Auth::ProcessKey => (auth::candidates(address), false),
            Auth::Key(k) => (vec![k.clone()], false),
            Auth::Open => (Vec::new(), true),
        };
        Ok(ClientHandshake {
            nonce: auth::random::<KEY_LEN>()?,
            keys,
            allow_open,
            address: address.to_string(),
        })
    }

    /// The nonce the hello carries.
    pub fn nonce(&self) -> &Nonce {
        &self.nonce
    }

    /// Checks the server's challenge; returns the proof to send back
    /// (`None`: an open server, nothing to send).
    pub fn answer(&self, challenge: &Challenge) -> Result<Option<[u8; PROOF_LEN]>> {
        let Some(server) = &challenge.auth else {
            if self.allow_open {
                return Ok(None);
            }
            return Err(Error::exception(
                "PermissionError",
                format!(
                    "the server at {} does not authenticate (a pyacq peer, or auth=False); \
                     connect with auth=False to talk to it anyway",
                    self.address
                ),
            ));
        };
        if self.allow_open {
            return Err(Error::exception(
                "PermissionError",
                format!(
                    "the server at {} requires authentication; connect with its key",
                    self.address
                ),
            ));
        }
        let key = self
            .keys
            .iter()
            .find(|k| k.id() == server.key_id)
            .ok_or_else(|| {
                let ids: Vec<String> = self
                    .keys
                    .iter()
                    .map(|k| auth::encode_hex(&k.id()))
                    .collect();
                Error::exception(
                    "PermissionError",
                    format!(
                        "the key does not match the server at {}: it uses key id {}, this \
                         client has {}; pass the server's key as key= or share the per-user \
                         key file",
                        self.address,
                        auth::encode_hex(&server.key_id),
                        match ids.is_empty() {
                            true => "no key".to_string(),
                            false => format!("key id {}", ids.join(", ")),
                        }
                    ),
                )
            })?;
        if !key.verify(Side::Server, &server.proof, &self.nonce, &server.nonce) {
            return Err(Error::exception(
                "PermissionError",
                format!(
                    "the server at {} failed to prove it holds the key",
                    self.address
                ),
            ));
        }
        auth::remember(&self.address, key);
        Ok(Some(key.prove(Side::Client, &server.nonce, &self.nonce)))
    }
}

// ---- native frames ------------------------------------------------------

/// A native hello message, by what it carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Hello {
    /// Client -> server: the client's nonce and process id.
    Hello(Nonce, ClientId),
    /// Server -> client.
    Challenge(Challenge),
    /// Client -> server: the client's proof.
    Proof([u8; PROOF_LEN]),
    /// Server -> client: admitted, or why not.
    Verdict(std::result::Result<(), String>),
    /// Either side of a private channel: who it is.
    Peer(ClientId),
}

impl Hello {
    /// The frames of this message.
    pub fn to_frames(&self) -> Frames {
        let mut frames = vec![Bytes::from_static(MAGIC)];
        match self {
            Hello::Hello(nonce, client) => {
                frames.push(Bytes::from_static(b"hello"));
                frames.push(Bytes::copy_from_slice(nonce));
                frames.push(Bytes::copy_from_slice(client));
            }
            Hello::Challenge(c) => {
                frames.push(Bytes::from_static(b"challenge"));
                frames.push(Bytes::from(c.address.clone()));
                frames.push(Bytes::copy_from_slice(&c.process.unwrap_or_default()));
                match &c.auth {
                    None => frames.push(Bytes::from_static(MODE_OPEN.as_bytes())),
                    Some(p) => {
                        frames.push(Bytes::from_static(MODE_AUTH.as_bytes()));
                        frames.push(Bytes::copy_from_slice(&p.nonce));
                        frames.push(Bytes::copy_from_slice(&p.key_id));
                        frames.push(Bytes::copy_from_slice(&p.proof));
                    }
                }
            }
            Hello::Proof(proof) => {
                frames.push(Bytes::from_static(b"proof"));
                frames.push(Bytes::copy_from_slice(proof));
            }
            Hello::Verdict(Ok(())) => frames.push(Bytes::from_static(b"ok")),
            Hello::Verdict(Err(why)) => {
                frames.push(Bytes::from_static(b"denied"));
                frames.push(Bytes::from(why.clone()));
            }
            Hello::Peer(id) => {
                frames.push(Bytes::from_static(b"peer"));
                frames.push(Bytes::copy_from_slice(id));
            }
        }
        frames
    }

    /// Parses hello frames; anything malformed is a protocol error.
    pub fn parse(frames: &[Bytes]) -> Result<Hello> {
        let bad = |why: &str| Error::Protocol(format!("bad handshake message: {why}"));
        let [magic, kind, rest @ ..] = frames else {
            return Err(bad("too few frames"));
        };
        if &magic[..] != MAGIC {
            return Err(bad("not a farcall peer"));
        }
        let fixed =
            |f: &Bytes, what: &str| -> Result<[u8; 32]> { f[..].try_into().map_err(|_| bad(what)) };
        let id =
            |f: &Bytes| -> Result<ClientId> { f[..].try_into().map_err(|_| bad("process id")) };
        Ok(match (&kind[..], rest) {
            (b"hello", [nonce, client]) => Hello::Hello(fixed(nonce, "nonce")?, id(client)?),
            (b"peer", [process]) => Hello::Peer(id(process)?),
            (b"challenge", [address, process, mode]) if &mode[..] == MODE_OPEN.as_bytes() => {
                Hello::Challenge(Challenge {
                    address: utf8(address)?,
                    process: Some(id(process)?),
                    auth: None,
                })
            }
            (b"challenge", [address, process, mode, nonce, key_id, proof])
                if &mode[..] == MODE_AUTH.as_bytes() =>
            {
                Hello::Challenge(Challenge {
                    address: utf8(address)?,
                    process: Some(id(process)?),
                    auth: Some(ServerProof {
                        nonce: fixed(nonce, "nonce")?,
                        key_id: key_id[..].try_into().map_err(|_| bad("key id"))?,
                        proof: fixed(proof, "proof")?,
                    }),
                })
            }
            (b"proof", [proof]) => Hello::Proof(fixed(proof, "proof")?),
            (b"ok", []) => Hello::Verdict(Ok(())),
            (b"denied", [why]) => Hello::Verdict(Err(utf8(why)?)),
            _ => return Err(bad("unknown message")),
        })
    }
}

fn utf8(b: &Bytes) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| Error::Protocol("handshake text is not UTF-8".into()))
}

// ---- ZeroMQ maps --------------------------------------------------------

/// The `rval` of a `farcall_hello` reply, for a challenge.
pub fn challenge_value(c: &Challenge) -> Value {
    let mut entries = vec![
        ("format", Value::from("farcall")),
        ("version", Value::from(crate::VERSION)),
        ("address", Value::from(c.address.clone())),
    ];
    if let Some(process) = c.process {
        entries.push(("process", Value::Bytes(Bytes::copy_from_slice(&process))));
    }
    match &c.auth {
        None => entries.push(("mode", Value::from(MODE_OPEN))),
        Some(p) => {
            entries.push(("mode", Value::from(MODE_AUTH)));
            entries.push(("nonce", Value::Bytes(Bytes::copy_from_slice(&p.nonce))));
            entries.push(("key_id", Value::Bytes(Bytes::copy_from_slice(&p.key_id))));
            entries.push(("proof", Value::Bytes(Bytes::copy_from_slice(&p.proof))));
        }
    }
    Value::map(entries)
}

/// Reads a `farcall_hello` reply's `rval`.
pub fn challenge_from_value(v: &Value) -> Result<Challenge> {
    let bad = |why: &str| Error::Protocol(format!("bad farcall_hello reply: {why}"));
    let bytes = |key: &str| match v.get(key) {
        Some(Value::Bytes(b)) => Ok(b.clone()),
        _ => Err(bad(key)),
    };
    let address = v
        .get("address")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let auth = match v.get("mode").and_then(Value::as_str) {
        Some(MODE_OPEN) => None,
        Some(MODE_AUTH) => Some(ServerProof {
            nonce: bytes("nonce")?[..].try_into().map_err(|_| bad("nonce"))?,
            key_id: bytes("key_id")?[..].try_into().map_err(|_| bad("key_id"))?,
            proof: bytes("proof")?[..].try_into().map_err(|_| bad("proof"))?,
        }),
        _ => return Err(bad("mode")),
    };
    let process = match v.get("process") {
        Some(Value::Bytes(b)) => Some(b[..].try_into().map_err(|_| bad("process"))?),
        _ => None,
    };
    Ok(Challenge {
        address,
        process,
        auth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_messages_round_trip() {
        let key = Key::generate().unwrap();
        let gate = Gate::new(&Auth::Key(key.clone())).unwrap();
        let client = ClientHandshake::new("unix:///x", &Auth::Key(key)).unwrap();
        let hello = Hello::Hello(*client.nonce(), client_id());
        assert_eq!(Hello::parse(&hello.to_frames()).unwrap(), hello);
        let (challenge, state) = gate.challenge("unix:///x", client.nonce()).unwrap();
        let sent = Hello::Challenge(challenge.clone());
        assert_eq!(Hello::parse(&sent.to_frames()).unwrap(), sent);
        let proof = client.answer(&challenge).unwrap().expect("a proof");
        assert!(gate.admits(&state, &proof));
        assert!(!gate.admits(&PeerState::New, &proof));
        for verdict in [
            Hello::Verdict(Ok(())),
            Hello::Verdict(Err("no".into())),
            Hello::Peer(client_id()),
        ] {
            assert_eq!(Hello::parse(&verdict.to_frames()).unwrap(), verdict);
        }
        assert_eq!(
            challenge_from_value(&challenge_value(&challenge)).unwrap(),
            challenge
        );
    }

    #[test]
    fn wrong_keys_and_open_servers_are_refused() {
        let gate = Gate::new(&Auth::Key(Key::generate().unwrap())).unwrap();
        let stranger = ClientHandshake::new("a", &Auth::Key(Key::generate().unwrap())).unwrap();
        let (challenge, _) = gate.challenge("a", stranger.nonce()).unwrap();
        assert!(stranger.answer(&challenge).is_err(), "no matching key id");
        let open_client = ClientHandshake::new("a", &Auth::Open).unwrap();
        assert!(
            open_client.answer(&challenge).is_err(),
            "auth server, open client"
        );
        let open_gate = Gate::new(&Auth::Open).unwrap();
        let (open, state) = open_gate.challenge("a", &[]).unwrap();
        assert!(state.admitted());
        assert_eq!(open_client.answer(&open).unwrap(), None);
        let keyed = ClientHandshake::new("a", &Auth::Key(Key::generate().unwrap())).unwrap();
        assert!(
            keyed.answer(&open).is_err(),
            "a keyed client refuses an open server"
        );
    }

    #[test]
    fn a_forged_server_proof_is_refused() {
        let key = Key::generate().unwrap();
        let client = ClientHandshake::new("a", &Auth::Key(key.clone())).unwrap();
        let forged = Challenge {
            address: "a".into(),
            process: None,
            auth: Some(ServerProof {
                nonce: [1; 32],
                key_id: key.id(),
                proof: [2; 32],
            }),
        };
        assert!(client.answer(&forged).is_err());
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        for frames in [
            vec![],
            vec![Bytes::from_static(b"nope"), Bytes::from_static(b"hello")],
            vec![Bytes::from_static(MAGIC), Bytes::from_static(b"hello")],
            vec![
                Bytes::from_static(MAGIC),
                Bytes::from_static(b"hello"),
                Bytes::from_static(b"short"),
            ],
        ] {
            assert!(matches!(Hello::parse(&frames), Err(Error::Protocol(_))));
        }
    }
}
