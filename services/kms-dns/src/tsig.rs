//! TSIG: the algorithms this build can sign with, secret decoding (bare base64 or a BIND
//! `key` file, given inline or as a file) and [`TsigKey`], which builds hickory's signer.
//!
//! The algorithm set is what hickory-proto 0.26 with `dnssec-ring` signs with
//! (`TsigAlgorithm::supported`): hmac-sha256, hmac-sha384 and hmac-sha512. hmac-md5,
//! hmac-sha1, hmac-sha224 and the truncated variants are refused with a clear message,
//! by `kmsd` and `kmsctl` alike.

use crate::{name::normalize_name, DnsError};
use base64::Engine as _;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm as HickoryAlgorithm;
use hickory_proto::rr::TSigner;
use std::io::Read as _;
use std::path::Path;

/// Allowed clock difference between signer and server, seconds (BIND's and RFC 8945's 300).
pub const FUDGE: u16 = 300;
/// Largest secret file read (a BIND key file is about 100 bytes).
pub const MAX_KEY_FILE: u64 = 64 * 1024;

/// A TSIG algorithm this build signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TsigAlgorithm {
    /// `hmac-sha256` (the default, `tsig-keygen`'s too).
    HmacSha256,
    /// `hmac-sha384`.
    HmacSha384,
    /// `hmac-sha512`.
    HmacSha512,
}

/// Algorithm names BIND knows that this build cannot sign with (lower case).
const REFUSED: &[&str] = &[
    "hmac-md5",
    "hmac-md5.sig-alg.reg.int",
    "hmac-sha1",
    "hmac-sha224",
    "hmac-sha256-128",
    "hmac-sha384-192",
    "hmac-sha512-256",
    "gss-tsig",
];

impl TsigAlgorithm {
    /// Every accepted algorithm.
    pub const ALL: [TsigAlgorithm; 3] = [Self::HmacSha256, Self::HmacSha384, Self::HmacSha512];

    /// BIND's (and `nsupdate`'s) name.
    pub fn name(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::HmacSha384 => "hmac-sha384",
            Self::HmacSha512 => "hmac-sha512",
        }
    }

    /// The accepted names, comma separated (for messages and help).
    pub fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }

    /// Parses a name (any case, surrounding blanks ignored).
    pub fn parse(setting: &'static str, value: &str) -> Result<Self, DnsError> {
        let v = value.trim().to_ascii_lowercase();
        if let Some(a) = Self::ALL.into_iter().find(|a| a.name() == v) {
            return Ok(a);
        }
        let value = value.to_string();
        let supported = Self::names();
        if REFUSED.contains(&v.as_str()) {
            Err(DnsError::AlgorithmRefused {
                setting,
                value,
                supported,
            })
        } else {
            Err(DnsError::AlgorithmUnknown {
                setting,
                value,
                supported,
            })
        }
    }

    /// hickory's value.
    pub fn to_hickory(self) -> HickoryAlgorithm {
        match self {
            Self::HmacSha256 => HickoryAlgorithm::HmacSha256,
            Self::HmacSha384 => HickoryAlgorithm::HmacSha384,
            Self::HmacSha512 => HickoryAlgorithm::HmacSha512,
        }
    }
}

impl std::fmt::Display for TsigAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a secret comes from.
#[derive(Debug, Clone, Copy)]
pub enum Secret<'a> {
    /// The setting's value itself.
    Inline(&'a str),
    /// A file holding it (read at most [`MAX_KEY_FILE`] bytes).
    File(&'a Path),
}

/// The caller's names of its TSIG settings, so that messages name what the operator set.
#[derive(Debug, Clone, Copy)]
pub struct TsigSettings {
    /// Key name (`dns_tsig_key_name`, `--key-name`).
    pub key_name: &'static str,
    /// Inline secret (`dns_tsig_secret`, `--key-secret`).
    pub secret: &'static str,
    /// Secret file (`dns_tsig_secret_file`, `--key-file`).
    pub secret_file: &'static str,
    /// Algorithm (`dns_tsig_algorithm`, `--key-algorithm`).
    pub algorithm: &'static str,
}

/// A decoded secret, with the key name and algorithm when it came from a BIND key file.
#[derive(Clone, PartialEq, Eq)]
pub struct DecodedSecret {
    /// The key bytes.
    pub secret: Vec<u8>,
    /// `key "NAME"` of a BIND key file, normalized.
    pub key_name: Option<String>,
    /// `algorithm ALG;` of a BIND key file, lower case.
    pub algorithm: Option<String>,
}

impl std::fmt::Debug for DecodedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedSecret")
            .field("secret", &"<redacted>")
            .field("key_name", &self.key_name)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

/// Decodes a secret: bare base64 (standard alphabet, padded), or a BIND key file
/// `key "NAME" { algorithm ALG; secret "BASE64"; };` as `tsig-keygen` writes it
/// (`#`, `//` and `/* */` comments allowed, one key).
pub fn decode_secret(setting: &'static str, text: &str) -> Result<DecodedSecret, DnsError> {
    let text = strip_comments(text);
    let t = text.trim();
    let is_key_file = t
        .strip_prefix("key")
        .is_some_and(|r| r.starts_with(|c: char| c.is_whitespace() || c == '"'));
    if is_key_file {
        return parse_key_file(setting, t);
    }
    Ok(DecodedSecret {
        secret: decode_base64(setting, t)?,
        key_name: None,
        algorithm: None,
    })
}

/// A BIND key file (`tsig-keygen`'s layout) for a key: what [`decode_secret`] reads and
/// what `named` takes in an `include`.
pub fn bind_key_file(name: &str, algorithm: TsigAlgorithm, secret_base64: &str) -> String {
    format!("key \"{name}\" {{\n\talgorithm {algorithm};\n\tsecret \"{secret_base64}\";\n}};\n")
}

fn decode_base64(setting: &'static str, b64: &str) -> Result<Vec<u8>, DnsError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| DnsError::SecretBase64 {
            setting,
            reason: e.to_string(),
        })?;
    if bytes.is_empty() {
        return Err(DnsError::SecretEmpty { setting });
    }
    Ok(bytes)
}

/// Blanks out `#` and `//` line comments and `/* */` block comments outside quotes.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            quoted = c != '"';
            out.push(c);
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                quoted = true;
                out.push(c);
            }
            ('#', _) | ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    Quoted(&'a str),
    Punct(char),
}

fn tokens<'a>(setting: &'static str, text: &'a str) -> Result<Vec<Token<'a>>, DnsError> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        let Some(c) = rest.chars().next() else {
            return Ok(out);
        };
        if c == '{' || c == '}' || c == ';' {
            out.push(Token::Punct(c));
            rest = &rest[1..];
        } else if c == '"' {
            let end = rest[1..].find('"').ok_or_else(|| DnsError::KeyFile {
                setting,
                reason: "unterminated quote".into(),
            })?;
            out.push(Token::Quoted(&rest[1..1 + end]));
            rest = &rest[end + 2..];
        } else {
            let end = rest
                .find(|c: char| c.is_whitespace() || "{};\"".contains(c))
                .unwrap_or(rest.len());
            out.push(Token::Word(&rest[..end]));
            rest = &rest[end..];
        }
    }
}

fn parse_key_file(setting: &'static str, text: &str) -> Result<DecodedSecret, DnsError> {
    let bad = |reason: &str| DnsError::KeyFile {
        setting,
        reason: reason.to_string(),
    };
    let toks = tokens(setting, text)?;
    let mut it = toks.iter();
    if it.next() != Some(&Token::Word("key")) {
        return Err(bad("it must start with `key`"));
    }
    let name = match it.next() {
        Some(Token::Quoted(n) | Token::Word(n)) => normalize_name(setting, n)?,
        _ => return Err(bad("`key` must be followed by the key name")),
    };
    if it.next() != Some(&Token::Punct('{')) {
        return Err(bad("expected `{` after the key name"));
    }
    let (mut algorithm, mut secret): (Option<&str>, Option<&str>) = (None, None);
    loop {
        let field = match it.next() {
            Some(Token::Punct('}')) => break,
            Some(Token::Word(w)) => *w,
            _ => return Err(bad("expected `algorithm`, `secret` or `}`")),
        };
        let value = match it.next() {
            Some(Token::Word(v) | Token::Quoted(v)) => *v,
            _ => return Err(bad("a statement needs a value")),
        };
        if it.next() != Some(&Token::Punct(';')) {
            return Err(bad("a statement ends with `;`"));
        }
        let slot = match field {
            "algorithm" => &mut algorithm,
            "secret" => &mut secret,
            _ => return Err(bad("only `algorithm` and `secret` are allowed in a key")),
        };
        if slot.replace(value).is_some() {
            return Err(bad("a statement is given twice"));
        }
    }
    match it.next() {
        None | Some(Token::Punct(';')) => {}
        _ => return Err(bad("expected `;` after `}`")),
    }
    if it.next().is_some() {
        return Err(bad("one key per file"));
    }
    let secret = secret.ok_or_else(|| bad("no `secret`"))?;
    Ok(DecodedSecret {
        secret: decode_base64(setting, secret)?,
        key_name: Some(name),
        algorithm: algorithm.map(|a| a.trim().to_ascii_lowercase()),
    })
}

fn read_secret_file(setting: &'static str, path: &Path) -> Result<String, DnsError> {
    let read_err = |source| DnsError::ReadFile {
        setting,
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read_err)?
        .take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(DnsError::KeyFile {
            setting,
            reason: format!("{} is larger than {MAX_KEY_FILE} bytes", path.display()),
        });
    }
    Ok(text)
}

/// A checked TSIG key: name, algorithm and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    name: String,
    algorithm: TsigAlgorithm,
    secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl TsigKey {
    /// Checks the key name and the algorithm, reads and decodes the secret; a BIND key
    /// file must name the same key and algorithm as the settings (a server would answer
    /// BADKEY otherwise).
    pub fn new(
        settings: &TsigSettings,
        name: &str,
        algorithm: &str,
        secret: Secret<'_>,
    ) -> Result<Self, DnsError> {
        let name = normalize_name(settings.key_name, name)?;
        let algorithm = TsigAlgorithm::parse(settings.algorithm, algorithm)?;
        let (setting, decoded) = match secret {
            Secret::Inline(text) => (settings.secret, decode_secret(settings.secret, text)?),
            Secret::File(path) => {
                let text = read_secret_file(settings.secret_file, path)?;
                (
                    settings.secret_file,
                    decode_secret(settings.secret_file, &text)?,
                )
            }
        };
        if let Some(n) = decoded.key_name.filter(|n| *n != name) {
            return Err(DnsError::KeyMismatch {
                setting,
                field: "key",
                in_file: n,
                other_setting: settings.key_name,
                configured: name,
            });
        }
        if let Some(a) = decoded.algorithm.filter(|a| a != algorithm.name()) {
            return Err(DnsError::KeyMismatch {
                setting,
                field: "algorithm",
                in_file: a,
                other_setting: settings.algorithm,
                configured: algorithm.name().to_string(),
            });
        }
        Ok(Self {
            name,
            algorithm,
            secret: decoded.secret,
        })
    }

    /// Key name, normalized.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Algorithm.
    pub fn algorithm(&self) -> TsigAlgorithm {
        self.algorithm
    }

    /// The secret in canonical base64 (for an `nsupdate` `key` line).
    pub fn secret_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.secret)
    }

    /// hickory's signer for this key ([`FUDGE`] seconds of allowed clock skew).
    pub fn signer(&self, settings: &TsigSettings) -> Result<TSigner, DnsError> {
        let name = crate::name::dns_name(settings.key_name, &self.name)?;
        TSigner::new(
            self.secret.clone(),
            self.algorithm.to_hickory(),
            name,
            FUDGE,
        )
        .map_err(|e| DnsError::Hickory {
            setting: settings.algorithm,
            value: self.algorithm.name().to_string(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: TsigSettings = TsigSettings {
        key_name: "--key-name",
        secret: "--key-secret",
        secret_file: "--key-file",
        algorithm: "--key-algorithm",
    };
    /// base64 of "secret".
    const B64: &str = "c2VjcmV0";

    #[test]
    fn every_accepted_algorithm_signs() {
        for a in TsigAlgorithm::ALL {
            assert_eq!(TsigAlgorithm::parse("x", a.name()).unwrap(), a);
            assert_eq!(
                TsigAlgorithm::parse("x", &format!(" {} ", a.name().to_uppercase())).unwrap(),
                a
            );
            assert!(a.to_hickory().supported(), "{a}");
            let mac = a.to_hickory().mac_data(b"key", b"message").unwrap();
            assert!(!mac.is_empty());
            let key = TsigKey::new(&S, "kms-key", a.name(), Secret::Inline(B64)).unwrap();
            let signer = key.signer(&S).unwrap();
            assert_eq!(signer.algorithm(), &a.to_hickory());
            assert_eq!(signer.signer_name().to_string(), "kms-key.");
        }
        assert_eq!(
            TsigAlgorithm::names(),
            "hmac-sha256, hmac-sha384, hmac-sha512"
        );
    }

    #[test]
    fn hickory_signs_nothing_else() {
        // If a hickory upgrade adds an algorithm, this fails and ALL gets extended.
        for h in [
            HickoryAlgorithm::HmacMd5,
            HickoryAlgorithm::Gss,
            HickoryAlgorithm::HmacSha1,
            HickoryAlgorithm::HmacSha224,
            HickoryAlgorithm::HmacSha256_128,
            HickoryAlgorithm::HmacSha384_192,
            HickoryAlgorithm::HmacSha512_256,
        ] {
            assert!(!h.supported(), "{h:?}");
            assert!(h.mac_data(b"key", b"message").is_err(), "{h:?}");
            let name = h.to_name().to_ascii().to_ascii_lowercase();
            assert!(REFUSED.contains(&name.as_str()), "{name}");
        }
    }

    #[test]
    fn md5_sha1_and_others_are_refused() {
        for v in [
            "hmac-md5",
            "HMAC-MD5.SIG-ALG.REG.INT",
            "hmac-sha1",
            "hmac-sha224",
            "hmac-sha512-256",
        ] {
            let e = TsigAlgorithm::parse("dns_tsig_algorithm", v).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, DnsError::AlgorithmRefused { .. }), "{msg}");
            assert!(
                msg.starts_with(&format!("dns_tsig_algorithm {v:?}: refused"))
                    && msg.contains("hmac-sha256, hmac-sha384, hmac-sha512"),
                "{msg}"
            );
        }
        for v in ["", "sha256", "hmac-foo"] {
            let e = TsigAlgorithm::parse("--key-algorithm", v).unwrap_err();
            assert!(matches!(e, DnsError::AlgorithmUnknown { .. }), "{e}");
            assert!(e.to_string().starts_with("--key-algorithm "), "{e}");
        }
        assert!(TsigKey::new(&S, "k", "hmac-md5", Secret::Inline(B64)).is_err());
    }

    #[test]
    fn base64_secrets() {
        assert_eq!(decode_secret("s", B64).unwrap().secret, b"secret");
        assert_eq!(decode_secret("s", " c2VjcmV0\n").unwrap().secret, b"secret");
        assert_eq!(
            decode_secret("s", "c2VjcmV0cw==").unwrap().secret,
            b"secrets"
        );
        // Not base64, missing padding, wrong padding, a blank inside.
        for bad in ["!!", "c2VjcmV0c", "c2VjcmV0cw", "c2VjcmV0cw=", "c2Vj cmV0"] {
            let e = decode_secret("dns_tsig_secret", bad).unwrap_err();
            assert!(matches!(e, DnsError::SecretBase64 { .. }), "{bad:?}: {e}");
            let msg = e.to_string();
            assert!(msg.starts_with("dns_tsig_secret: "), "{msg}");
            assert!(!msg.contains(bad), "the secret is echoed: {msg}");
        }
        assert!(matches!(
            decode_secret("s", "  ").unwrap_err(),
            DnsError::SecretEmpty { .. }
        ));
        // The secret never shows in Debug.
        let key = TsigKey::new(&S, "k", "hmac-sha256", Secret::Inline(B64)).unwrap();
        assert!(!format!("{key:?}").contains(B64));
        assert_eq!(key.secret_base64(), B64);
    }

    #[test]
    fn bind_key_files() {
        let text = "key \"kms-key\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n};\n";
        let d = decode_secret("f", text).unwrap();
        assert_eq!(d.secret, b"secret");
        assert_eq!(d.key_name.as_deref(), Some("kms-key"));
        assert_eq!(d.algorithm.as_deref(), Some("hmac-sha256"));
        // Comments, another layout, a key named "secret", HMAC in upper case.
        let text = "# made by tsig-keygen\nkey secret { // the key\n algorithm HMAC-SHA512; /* x; */ secret \"c2VjcmV0\"; }";
        let d = decode_secret("f", text).unwrap();
        assert_eq!(d.key_name.as_deref(), Some("secret"));
        assert_eq!(d.algorithm.as_deref(), Some("hmac-sha512"));
        for bad in [
            "key \"k\" { algorithm hmac-sha256; };",
            "key \"k\" { secret \"c2VjcmV0\" };",
            "key \"k\" { secret \"c2VjcmV0\"; secret \"c2VjcmV0\"; };",
            "key \"k\" { secret \"c2VjcmV0\"; owner x; };",
            "key \"k\" { secret \"c2VjcmV0;",
            "key \"k\" { secret \"c2VjcmV0\"; }; key \"l\" { secret \"c2VjcmV0\"; };",
            "key { secret \"c2VjcmV0\"; };",
        ] {
            let e = decode_secret("dns_tsig_secret_file", bad).unwrap_err();
            assert!(matches!(e, DnsError::KeyFile { .. }), "{bad:?}: {e}");
            assert!(e.to_string().starts_with("dns_tsig_secret_file: "), "{e}");
        }
        assert!(matches!(
            decode_secret("f", "key \"k\" { secret \"!!\"; };").unwrap_err(),
            DnsError::SecretBase64 { .. }
        ));
    }

    #[test]
    fn key_file_must_match_the_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms-key.conf");
        let text = bind_key_file("kms-key", TsigAlgorithm::HmacSha512, B64);
        assert_eq!(decode_secret("f", &text).unwrap().secret, b"secret");
        std::fs::write(&path, text).unwrap();
        let key = TsigKey::new(&S, "KMS-key.", "hmac-sha512", Secret::File(&path)).unwrap();
        assert_eq!(key.name(), "kms-key");
        assert_eq!(key.algorithm(), TsigAlgorithm::HmacSha512);
        let e = TsigKey::new(&S, "kms-key", "hmac-sha256", Secret::File(&path)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--key-file: the key file says algorithm \"hmac-sha512\", but --key-algorithm is \"hmac-sha256\""
        );
        let e = TsigKey::new(&S, "other", "hmac-sha512", Secret::File(&path)).unwrap_err();
        assert!(
            matches!(e, DnsError::KeyMismatch { field: "key", .. }),
            "{e}"
        );
        // A bare secret in a file.
        std::fs::write(&path, "c2VjcmV0\n").unwrap();
        let key = TsigKey::new(&S, "any", "hmac-sha256", Secret::File(&path)).unwrap();
        assert_eq!(key.secret_base64(), B64);
        // Missing and oversized files.
        let e =
            TsigKey::new(&S, "k", "hmac-sha256", Secret::File(&dir.path().join("no"))).unwrap_err();
        assert!(
            matches!(
                e,
                DnsError::ReadFile {
                    setting: "--key-file",
                    ..
                }
            ),
            "{e}"
        );
        std::fs::write(&path, "A".repeat(MAX_KEY_FILE as usize + 4)).unwrap();
        let e = TsigKey::new(&S, "k", "hmac-sha256", Secret::File(&path)).unwrap_err();
        assert!(matches!(e, DnsError::KeyFile { .. }), "{e}");
    }
}
