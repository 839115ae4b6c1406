//! Signed approvals for people who are not on this machine: an SSH signature
//! (SSHSIG, namespace `agent-guard`) over the digest of one exact request,
//! checked against an `allowed_signers` file in the format of ssh-keygen(1)
//! and git. A token names its expiry; it is useless for any other request.
use std::path::Path;

use base64ct::{Base64UrlUnpadded, Encoding as _};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

use crate::protocol::HoldView;

/// The SSHSIG namespace: a signature made for git or ssh cannot approve here.
pub const NAMESPACE: &str = "agent-guard";
const TOKEN_PREFIX: &str = "agtok1";

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("expired token (expired {0} s ago)")]
    Expired(u64),
    #[error("token valid for {0} s, longer than the {1} s this guard accepts")]
    TooLong(u64, u64),
    #[error("key {0} is not in allowed_signers for namespace agent-guard")]
    UnknownKey(String),
    #[error("bad signature: the token does not sign this request")]
    BadSignature,
    #[error("no allowed_signers file is configured ([approvals] allowed_signers)")]
    NoSigners,
    #[error("allowed_signers {path}: {message}")]
    Signers { path: String, message: String },
    #[error("signing: {0}")]
    Sign(String),
}

/// What a token decides: an approval token cannot deny, nor the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Deny,
}

/// What a signature covers: the decision and everything that identifies the held command.
#[derive(Debug, Clone, Serialize)]
pub struct SignedRequest<'a> {
    pub version: u32,
    pub decision: Decision,
    pub id: &'a str,
    /// The host holding it: a token for one host's request is no use on another.
    pub host: &'a str,
    pub exe: &'a str,
    /// Arguments as guardd shows them (escaped), so both sides agree byte for byte.
    pub argv: &'a [String],
    pub cwd: &'a str,
    pub session: u32,
    pub uid: u32,
    pub expires: u64,
}

impl<'a> SignedRequest<'a> {
    pub fn of(hold: &'a HoldView, decision: Decision, expires: u64) -> Self {
        Self {
            version: 3,
            decision,
            id: &hold.id,
            host: &hold.host,
            exe: &hold.exe,
            argv: &hold.argv,
            cwd: &hold.cwd,
            session: hold.session,
            uid: hold.uid,
            expires,
        }
    }

    /// Hex SHA-256 of the canonical JSON (fields in declaration order); this is the signed message.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("a signed request serializes");
        Sha256::digest(json)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// `agtok1.EXPIRES.SIGNATURE` (the armored SSHSIG, base64url).
pub fn sign(key: &PrivateKey, request: &SignedRequest) -> Result<String, ApprovalError> {
    let signature = key
        .sign(NAMESPACE, HashAlg::Sha512, request.digest().as_bytes())
        .map_err(|err| ApprovalError::Sign(err.to_string()))?;
    let pem = signature
        .to_pem(LineEnding::LF)
        .map_err(|err| ApprovalError::Sign(err.to_string()))?;
    Ok(token_of(request.expires, &pem))
}

/// The token for an armored SSHSIG of `request.digest()` made elsewhere
/// (`ssh-keygen -Y sign`, for encrypted keys and keys in ssh-agent).
pub fn token_of(expires: u64, armored_signature: &str) -> String {
    format!(
        "{TOKEN_PREFIX}.{expires}.{}",
        Base64UrlUnpadded::encode_string(armored_signature.as_bytes())
    )
}

pub struct Token {
    pub expires: u64,
    pub signature: SshSig,
}

impl Token {
    pub fn parse(token: &str) -> Result<Self, ApprovalError> {
        let malformed = |why: &str| ApprovalError::Malformed(why.to_string());
        let mut parts = token.trim().split('.');
        if parts.next() != Some(TOKEN_PREFIX) {
            return Err(malformed("it does not start with agtok1."));
        }
        let expires = parts
            .next()
            .and_then(|e| e.parse().ok())
            .ok_or_else(|| malformed("no expiry"))?;
        let pem = parts
            .next()
            .and_then(|s| Base64UrlUnpadded::decode_vec(s).ok())
            .ok_or_else(|| malformed("the signature is not base64url"))?;
        if parts.next().is_some() {
            return Err(malformed("too many parts"));
        }
        let signature = SshSig::from_pem(pem).map_err(|err| malformed(&err.to_string()))?;
        Ok(Self { expires, signature })
    }

    /// A stable name for replay detection.
    pub fn fingerprint(&self) -> String {
        Sha256::digest(self.signature.signature_bytes())
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// One line of an allowed_signers file.
#[derive(Debug, Clone)]
pub struct Signer {
    pub principals: Vec<String>,
    /// `namespaces="..."`; None: any namespace.
    pub namespaces: Option<Vec<String>>,
    pub key: PublicKey,
}

/// Parses the allowed_signers format: `PRINCIPALS [OPTIONS] KEYTYPE BASE64 [COMMENT]`.
pub fn parse_allowed_signers(text: &str) -> Result<Vec<Signer>, String> {
    let mut signers = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = split_unquoted(line, char::is_whitespace);
        let at = |why: &str| format!("line {}: {why}", number + 1);
        let principals: Vec<String> = fields
            .first()
            .ok_or_else(|| at("empty"))?
            .split(',')
            .map(str::to_string)
            .collect();
        let (options, key_at) = match fields.get(1) {
            Some(f) if looks_like_key_type(f) => (None, 1),
            Some(options) => (Some(options.as_str()), 2),
            None => return Err(at("no key")),
        };
        let key_text = fields
            .get(key_at..(key_at + 2).min(fields.len()))
            .filter(|f| f.len() == 2)
            .ok_or_else(|| at("no key"))?
            .join(" ");
        let key = PublicKey::from_openssh(&key_text).map_err(|err| at(&err.to_string()))?;
        let namespaces = options.and_then(|options| {
            split_unquoted(options, |c| c == ',')
                .into_iter()
                .find_map(|o| {
                    o.strip_prefix("namespaces=")
                        .map(|v| v.trim_matches('"').split(',').map(str::to_string).collect())
                })
        });
        signers.push(Signer {
            principals,
            namespaces,
            key,
        });
    }
    Ok(signers)
}

pub fn load_allowed_signers(path: &Path) -> Result<Vec<Signer>, ApprovalError> {
    let error = |message: String| ApprovalError::Signers {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|err| error(err.to_string()))?;
    parse_allowed_signers(&text).map_err(error)
}

/// Checks `token` against `hold`; returns the principal and the key's fingerprint.
pub fn verify(
    token: &Token,
    hold: &HoldView,
    decision: Decision,
    signers: &[Signer],
    now: u64,
    max_ttl_secs: u64,
) -> Result<(String, String), ApprovalError> {
    if token.expires <= now {
        return Err(ApprovalError::Expired(now - token.expires));
    }
    if token.expires - now > max_ttl_secs {
        return Err(ApprovalError::TooLong(token.expires - now, max_ttl_secs));
    }
    let fingerprint = token.signature.public_key().fingerprint(HashAlg::Sha256);
    let signer = signer_of(&token.signature, NAMESPACE, signers)
        .ok_or_else(|| ApprovalError::UnknownKey(fingerprint.to_string()))?;
    let request = SignedRequest::of(hold, decision, token.expires);
    signer
        .key
        .verify(NAMESPACE, request.digest().as_bytes(), &token.signature)
        .map_err(|_| ApprovalError::BadSignature)?;
    Ok((signer.principals[0].clone(), fingerprint.to_string()))
}

/// The line of `signers` whose key made `signature` and may sign in `namespace`.
pub fn signer_of<'a>(
    signature: &SshSig,
    namespace: &str,
    signers: &'a [Signer],
) -> Option<&'a Signer> {
    signers.iter().find(|s| {
        s.key.key_data() == signature.public_key()
            && s.namespaces
                .as_ref()
                .is_none_or(|ns| ns.iter().any(|n| n == namespace))
    })
}

fn looks_like_key_type(field: &str) -> bool {
    ["ssh-", "ecdsa-", "sk-"]
        .iter()
        .any(|p| field.starts_with(p))
}

/// Splits `text` at characters for which `separator` holds, outside double
/// quotes; empty pieces are dropped.
fn split_unquoted(text: &str, separator: impl Fn(char) -> bool) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if separator(c) && !quoted {
            if !current.is_empty() {
                pieces.push(std::mem::take(&mut current));
            }
        } else {
            current.push(c);
        }
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKdHm0JEM5Y8T1+iG2w3yQ3FZ2y1j6m8f6Qh2yF8Yp5m";

    #[test]
    fn allowed_signers_lines_are_read_like_ssh_keygen_does() {
        let text = format!(
            "# comment\n\nalice@x,al@x namespaces=\"git,agent-guard\" {ED25519} laptop\nbob@x {ED25519}\n"
        );
        let signers = parse_allowed_signers(&text).unwrap();
        assert_eq!(signers.len(), 2);
        assert_eq!(signers[0].principals, ["alice@x", "al@x"]);
        assert_eq!(
            signers[0].namespaces.as_deref(),
            Some(&["git".to_string(), "agent-guard".to_string()][..])
        );
        assert_eq!(signers[1].namespaces, None);
        let err = parse_allowed_signers("carol@x ssh-ed25519 notbase64").unwrap_err();
        assert!(err.starts_with("line 1:"), "{err}");
        assert!(parse_allowed_signers("lonely@x").is_err());
    }

    #[test]
    fn the_signed_request_names_the_host() {
        let hold = |host: &str| HoldView {
            id: "ab12-1".into(),
            host: host.into(),
            pid: 1,
            session: 1,
            agent: None,
            uid: 1000,
            program: "terraform".into(),
            argv: vec!["terraform".into(), "destroy".into()],
            cwd: "/home/dev".into(),
            exe: "/usr/bin/terraform".into(),
            rule: "tf".into(),
            state: crate::protocol::HoldState::Held,
            approvals_needed: 1,
            protection: String::new(),
            approved_by: Vec::new(),
            approvers: Vec::new(),
            also_approvers: Vec::new(),
            self_approval: true,
            operation: None,
            ancestry: Vec::new(),
            context: Vec::new(),
            why: Vec::new(),
            held_secs: 0,
            expires_in_secs: 600,
        };
        let (a, b) = (hold("host-a"), hold("host-b"));
        let digest = |h: &HoldView| SignedRequest::of(h, Decision::Approve, 99).digest();
        assert_ne!(digest(&a), digest(&b));
        assert_eq!(digest(&a), digest(&hold("host-a")));
    }

    #[test]
    fn tokens_that_are_not_tokens_are_refused() {
        for bad in [
            "",
            "agtok1",
            "agtok1.x.y",
            "agtok2.1.AAAA",
            "agtok1.1.!!!",
            "agtok1.1.QUFB.z",
        ] {
            assert!(
                matches!(Token::parse(bad), Err(ApprovalError::Malformed(_))),
                "{bad}"
            );
        }
    }
}
