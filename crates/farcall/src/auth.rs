//! Authentication: shared keys and the challenge-response both peers run
//! before any request is accepted (see docs/security.md).
//!
//! Both sides prove they hold the same 32-byte key without sending it:
//! each picks a fresh random nonce, and each answers with
//! `HMAC-SHA256(key, label || their nonce || our nonce)`, the labels
//! differing by direction so one side's proof is never valid for the
//! other. Proofs are compared in constant time. A key is named on the wire
//! by its [`KeyId`] (a hash prefix) so a client holding several keys picks
//! the right one without revealing any.
//!
//! Which key a process uses by default ([`process_key`]): the one its
//! parent handed it through the spawn pipe, else the per-user key file
//! (created on first use, mode 0600), so every process of the same user on
//! the machine (or sharing the home directory) can reach the others.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Bytes in a key and in a nonce.
pub const KEY_LEN: usize = 32;
/// Bytes in a proof (an HMAC-SHA256 tag).
pub const PROOF_LEN: usize = 32;
/// Bytes in a key id.
pub const KEY_ID_LEN: usize = 8;

/// A shared secret: 32 random bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

/// A key's public name: the first bytes of SHA-256("farcall key id" || key).
pub type KeyId = [u8; KEY_ID_LEN];

/// A fresh random nonce.
pub type Nonce = [u8; KEY_LEN];

/// Which side a proof comes from (part of what is signed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The server proves first, over the client's nonce.
    Server,
    /// The client answers, over the server's nonce.
    Client,
}

impl Key {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Key> {
        Ok(Key(random()?))
    }

    /// A key from its 32 bytes (e.g. received from a parent process).
    pub fn from_bytes(bytes: &[u8]) -> Result<Key> {
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
            Error::value_error(format!("a key is {KEY_LEN} bytes, not {}", bytes.len()))
        })?;
        Ok(Key(bytes))
    }

    /// The key's bytes (to hand to a child process; never log them).
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key's public name.
    pub fn id(&self) -> KeyId {
        let digest = Sha256::new()
            .chain_update(b"farcall key id")
            .chain_update(self.0)
            .finalize();
        digest[..KEY_ID_LEN].try_into().expect("8 bytes")
    }

    /// The proof `side` sends: over the peer's nonce, then its own.
    pub fn prove(&self, side: Side, their_nonce: &[u8], our_nonce: &[u8]) -> [u8; PROOF_LEN] {
        let mut mac = self.mac(side);
        mac.update(their_nonce);
        mac.update(our_nonce);
        mac.finalize().into_bytes().into()
    }

    /// Checks, in constant time, a proof that `side` sent.
    pub fn verify(&self, side: Side, proof: &[u8], our_nonce: &[u8], their_nonce: &[u8]) -> bool {
        let mut mac = self.mac(side);
        mac.update(our_nonce);
        mac.update(their_nonce);
        mac.verify_slice(proof).is_ok()
    }

    fn mac(&self, side: Side) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(match side {
            Side::Server => b"farcall/1 server proof",
            Side::Client => b"farcall/1 client proof",
        });
        mac
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        write!(f, "Key(id {:02x?})", self.id())
    }
}

/// Random bytes from the operating system.
pub fn random<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Io(std::io::Error::other(format!("no randomness: {e}"))))?;
    Ok(bytes)
}

// ---- which key --------------------------------------------------------

static PROCESS_KEY: Mutex<Option<Key>> = Mutex::new(None);

/// The key this process uses when none is given: the one set with
/// [`set_process_key`] (a spawned child gets its parent's), else the
/// per-user key ([`user_key`]).
pub fn process_key() -> Result<Key> {
    let mut key = PROCESS_KEY.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = &*key {
        return Ok(k.clone());
    }
    // A key file that exists but cannot be used (others can read it, it
    // holds no key) is an error to fix, never silently replaced.
    let file_exists = user_key_path().is_ok_and(|p| p.exists());
    let k = user_key().or_else(|e| {
        if file_exists {
            return Err(e);
        }
        // Without a key file (no HOME, a read-only config directory), the
        // process and its children still share a key; other processes
        // cannot find it.
        log::warn!("no per-user key file ({e}); using a key for this process tree only");
        Key::generate()
    })?;
    *key = Some(k.clone());
    Ok(k)
}

/// Sets the key this process uses by default (a spawned child calls it
/// with the key its parent sent).
pub fn set_process_key(key: Key) {
    *PROCESS_KEY.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
}

/// Where the per-user key lives: `$FARCALL_KEY_FILE`, else
/// `$XDG_CONFIG_HOME/farcall/key`, else `~/.config/farcall/key`.
pub fn user_key_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("FARCALL_KEY_FILE") {
        return Ok(PathBuf::from(p));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| Error::exception("RuntimeError", "no HOME to keep the farcall key in"))?;
    Ok(config.join("farcall").join("key"))
}

/// The per-user key once read (the file is created once and never
/// rewritten, so connecting need not read it again).
static USER_KEY: Mutex<Option<Key>> = Mutex::new(None);

/// The per-user key, read from [`user_key_path`] or created there (mode
/// 0600, directory 0700). A file that others can read is refused.
pub fn user_key() -> Result<Key> {
    if let Some(key) = existing_user_key() {
        return Ok(key);
    }
    let path = user_key_path()?;
    let key = match read_key_file(&path) {
        Ok(key) => key,
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => create_key_file(&path)?,
        Err(e) => return Err(e),
    };
    *USER_KEY.lock().unwrap_or_else(|p| p.into_inner()) = Some(key.clone());
    Ok(key)
}

/// The per-user key if the file exists (never creates it).
fn existing_user_key() -> Option<Key> {
    let mut cached = USER_KEY.lock().unwrap_or_else(|p| p.into_inner());
    if cached.is_none() {
        *cached = user_key_path().and_then(|p| read_key_file(&p)).ok();
    }
    cached.clone()
}

/// Reads a key file, refusing one that others than its owner can read.
pub fn read_key_file(path: &Path) -> Result<Key> {
    let meta = fs::metadata(path)?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::exception(
            "PermissionError",
            format!(
                "the key file {} can be read by others (mode {:o}); run chmod 600 on it",
                path.display(),
                meta.permissions().mode() & 0o777
            ),
        ));
    }
    let bytes = fs::read(path)?;
    let text = std::str::from_utf8(&bytes).unwrap_or("").trim();
    let raw = decode_hex(text).ok_or_else(|| {
        Error::value_error(format!(
            "the key file {} does not hold 64 hex digits",
            path.display()
        ))
    })?;
    Key::from_bytes(&raw)
}

fn create_key_file(path: &Path) -> Result<Key> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    }
    let key = Key::generate()?;
    let created = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(mut file) => {
            file.write_all(encode_hex(key.as_bytes()).as_bytes())?;
            file.write_all(b"\n")?;
            Ok(key)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key_file(path),
        Err(e) => Err(e.into()),
    }
}

/// Lowercase hex of `bytes`.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from hex digits; `None` unless exactly 32 bytes' worth.
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 2 * KEY_LEN || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Keys known to work for addresses: the keys of servers in this process,
/// and keys that clients of this process authenticated with. A proxy's
/// client then finds the key without being told again.
static KNOWN: Mutex<Vec<(String, Key)>> = Mutex::new(Vec::new());

/// Records that `key` is the key of the server at `address`.
pub fn remember(address: &str, key: &Key) {
    let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    known.retain(|(a, _)| a != address);
    known.push((address.to_string(), key.clone()));
}

/// The candidate keys a client tries for `address`: the key known for it,
/// then the process key, then the per-user key file's. The server's
/// [`KeyId`] picks among them.
pub fn candidates(address: &str) -> Vec<Key> {
    let mut keys: Vec<Key> = KNOWN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(a, _)| a == address)
        .map(|(_, k)| k.clone())
        .collect();
    match process_key() {
        Ok(k) => keys.push(k),
        Err(e) => log::debug!("no process key: {e}"),
    }
    keys.extend(existing_user_key());
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_only_with_the_same_key_side_and_nonces() {
        let key = Key::generate().unwrap();
        let other = Key::generate().unwrap();
        let (client_nonce, server_nonce) = (random::<32>().unwrap(), random::<32>().unwrap());
        let proof = key.prove(Side::Server, &client_nonce, &server_nonce);
        // The client checks the server's proof with its own nonce first.
        assert!(key.verify(Side::Server, &proof, &client_nonce, &server_nonce));
        assert!(!other.verify(Side::Server, &proof, &client_nonce, &server_nonce));
        assert!(!key.verify(Side::Client, &proof, &client_nonce, &server_nonce));
        assert!(!key.verify(Side::Server, &proof, &server_nonce, &client_nonce));
        assert!(!key.verify(Side::Server, &proof[..31], &client_nonce, &server_nonce));
        assert_ne!(key.id(), other.id());
    }

    #[test]
    fn key_files_are_created_private_and_refused_when_readable() {
        let dir = std::env::temp_dir().join(format!("farcall-key-test-{}", std::process::id()));
        let path = dir.join("sub").join("key");
        let _ = fs::remove_dir_all(&dir);
        let created = create_key_file(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_key_file(&path).unwrap(), created);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let refused = read_key_file(&path).unwrap_err().to_string();
        assert!(refused.contains("can be read by others"), "{refused}");
        fs::write(&path, "not hex").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_key_file(&path).is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn hex_round_trips() {
        let key = Key::generate().unwrap();
        let hex = encode_hex(key.as_bytes());
        assert_eq!(decode_hex(&hex).unwrap(), key.as_bytes());
        assert!(decode_hex("abc").is_none());
        assert!(format!("{key:?}").starts_with("Key(id"));
    }
}
