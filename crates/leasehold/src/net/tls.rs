//! TLS for `rediss://` connections: the settings a caller gives ([`TlsConfig`]), their
//! loaded form applied to every connection a client makes (one server, the sentinels and
//! the masters they name, Cluster nodes, RedLock nodes), the process's rustls crypto
//! provider (ring, installed once unless the application installed one), and the
//! classification of handshake failures into [`TlsProblem`]s.
//!
//! Invariants: certificates are trusted from the platform's store unless a CA is given;
//! insecure mode is only ever what the caller asked for, and every connection made in it
//! logs a warning; a handshake failure is reported as the TLS problem it is, never as an
//! unreachable server.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Once};

use redis::{ConnectionAddr, ConnectionInfo};

/// TLS settings for a client's connections (see
/// [`ClientBuilder::tls`](crate::ClientBuilder::tls)). Without any, a `rediss://` URL
/// trusts the platform's certificate store and presents no client certificate.
///
/// ```no_run
/// # fn demo() -> leasehold::Result<()> {
/// use leasehold::TlsConfig;
/// let client = leasehold::Client::builder("rediss://127.0.0.1:6380/")
///     .tls(
///         TlsConfig::new()
///             .ca_file("/etc/redis/tls/ca.crt")                     // a private CA
///             .client_cert_files("/etc/redis/tls/app.crt", "/etc/redis/tls/app.key"), // mTLS
///     )
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct TlsConfig {
    ca: Option<Source>,
    identity: Option<(Source, Source)>,
    insecure: bool,
}

#[derive(Clone)]
enum Source {
    File(PathBuf),
    Pem(Arc<[u8]>),
}

impl Source {
    fn read(&self, what: &str) -> Result<Vec<u8>, String> {
        match self {
            Source::Pem(pem) => Ok(pem.to_vec()),
            Source::File(path) => std::fs::read(path)
                .map_err(|e| format!("TLS: cannot read the {what} {}: {e}", path.display())),
        }
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |s: &Source| match s {
            Source::File(p) => p.display().to_string(),
            Source::Pem(_) => "(PEM)".to_string(),
        };
        f.debug_struct("TlsConfig")
            .field("ca", &self.ca.as_ref().map(shown))
            .field(
                "client_cert",
                &self.identity.as_ref().map(|(c, _)| shown(c)),
            )
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl TlsConfig {
    /// TLS that trusts the platform's certificate store, without a client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust the CA certificates (PEM) in `path` instead of the platform's store.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(Source::File(path.into()));
        self
    }

    /// Trust these CA certificates (PEM) instead of the platform's store.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(Source::Pem(pem.into().into()));
        self
    }

    /// Present this client certificate and private key (PEM files) for mutual TLS.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn client_cert_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some((Source::File(cert.into()), Source::File(key.into())));
        self
    }

    /// Present this client certificate and private key (PEM) for mutual TLS.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn client_cert_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((
            Source::Pem(cert.into().into()),
            Source::Pem(key.into().into()),
        ));
        self
    }

    /// **For development only:** accept any server certificate (unknown CA, other host
    /// name, expired). The traffic is encrypted but anyone on the path can read it by
    /// posing as the server. Every connection made this way logs a warning.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }

    /// Read the files and check the certificates, once per client; the error says what
    /// to fix (the caller reports it as invalid input).
    pub(crate) fn load(&self) -> Result<Loaded, String> {
        let root_cert = match &self.ca {
            Some(ca) => {
                let pem = ca.read("CA file")?;
                check_pem(&pem, "CA certificate", "CERTIFICATE")?;
                Some(pem)
            }
            None => None,
        };
        let client_tls = match &self.identity {
            Some((cert, key)) => {
                let client_cert = cert.read("client certificate")?;
                check_pem(&client_cert, "client certificate", "CERTIFICATE")?;
                let client_key = key.read("client key")?;
                check_pem(&client_key, "client key", "PRIVATE KEY")?;
                Some(redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                })
            }
            None => None,
        };
        Ok(Loaded {
            certs: redis::TlsCertificates {
                client_tls,
                root_cert,
            },
            insecure: self.insecure,
        })
    }
}

/// A PEM text must hold at least one block of the expected kind.
fn check_pem(pem: &[u8], what: &str, label: &str) -> Result<(), String> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("-----BEGIN ") && text.contains(label) {
        Ok(())
    } else {
        Err(format!(
            "TLS: the {what} is not PEM (expected a \"-----BEGIN ...{label}-----\" block)"
        ))
    }
}

/// TLS settings read and checked, applied to each connection's settings.
#[derive(Clone)]
pub(crate) struct Loaded {
    certs: redis::TlsCertificates,
    insecure: bool,
}

impl Loaded {
    /// These settings on one server's connection settings; a `redis://` address becomes
    /// a TLS one (as redis-cli's `--tls` does).
    pub(crate) fn apply(&self, info: ConnectionInfo) -> Result<ConnectionInfo, String> {
        let addr = match info.addr().clone() {
            ConnectionAddr::Tcp(host, port) => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: self.insecure,
                tls_params: None,
            },
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: insecure || self.insecure,
                tls_params: None,
            },
            _ => return Err("TLS settings apply to TCP addresses, not to a Unix socket".into()),
        };
        let info = info.set_addr(addr);
        let client = redis::Client::build_with_tls(info, self.certs.clone()).map_err(|e| {
            format!(
                "TLS: the certificates cannot be used: {}",
                e.detail().unwrap_or("invalid PEM")
            )
        })?;
        Ok(client.get_connection_info().clone())
    }

    /// These settings on a Cluster client.
    pub(crate) fn cluster(
        &self,
        builder: redis::cluster::ClusterClientBuilder,
    ) -> redis::cluster::ClusterClientBuilder {
        let builder = builder.certs(self.certs.clone());
        if self.insecure {
            builder.tls(redis::TlsMode::Insecure)
        } else {
            builder.tls(redis::TlsMode::Secure)
        }
    }
}

/// Make sure rustls has a process-level crypto provider (ring), unless the application
/// installed its own first.
pub(crate) fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Losing a race with the application's own installation is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    });
}

/// Whether a connection's settings accept any certificate.
pub(crate) fn is_insecure(info: &ConnectionInfo) -> bool {
    matches!(info.addr(), ConnectionAddr::TcpTls { insecure: true, .. })
}

/// What went wrong in a TLS handshake (see
/// [`ErrorKind::Tls`](crate::ErrorKind::Tls)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsProblem {
    /// The server's certificate is not signed by a trusted CA: give its CA
    /// ([`TlsConfig::ca_file`]).
    UnknownAuthority,
    /// The server's certificate is not valid for the host name (or IP address) in the URL.
    NameMismatch,
    /// The server's certificate has expired (or is not valid yet).
    Expired,
    /// The server requires a client certificate and none (or one it does not trust) was
    /// given ([`TlsConfig::client_cert_files`]).
    ClientCertificateRequired,
    /// The server does not speak TLS on that port (use `redis://`, or its TLS port).
    NotTls,
    /// Another handshake failure; the message says which.
    Handshake,
}

impl fmt::Display for TlsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsProblem::UnknownAuthority => {
                "the server's certificate is not signed by a trusted CA (give its CA with a CA file)"
            }
            TlsProblem::NameMismatch => {
                "the server's certificate is not valid for this host name"
            }
            TlsProblem::Expired => "the server's certificate has expired or is not valid yet",
            TlsProblem::ClientCertificateRequired => {
                "the server requires a client certificate it trusts (give a certificate and key)"
            }
            TlsProblem::NotTls => {
                "the server does not speak TLS on this port (no TLS answer to the handshake)"
            }
            TlsProblem::Handshake => "the TLS handshake failed",
        })
    }
}

/// The TLS problem behind a connection error, if it is one.
pub(crate) fn classify(err: &(dyn std::error::Error + 'static)) -> Option<TlsProblem> {
    let mut text = String::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        text.push_str(&e.to_string());
        text.push(' ');
        cur = e.source();
    }
    let flat: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    let has = |s: &str| flat.contains(s);
    Some(if has("unknownissuer") || has("unknownca") {
        TlsProblem::UnknownAuthority
    } else if has("notvalidforname") || has("certificatenotvalidforname") {
        TlsProblem::NameMismatch
    } else if has("certificateexpired") || has("expired") || has("notvalidyet") {
        TlsProblem::Expired
    } else if has("certificaterequired") || has("peersentnocertificates") {
        TlsProblem::ClientCertificateRequired
    } else if has("corruptmessage")
        || has("invalidcontenttype")
        || has("wrongversionnumber")
        || has("isthatatlsport")
    {
        TlsProblem::NotTls
    } else if has("invalidpeercertificate")
        || has("handshakefailure")
        || has("receivedfatalalert")
        || has("badcertificate")
    {
        TlsProblem::Handshake
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str) -> Option<TlsProblem> {
        classify(&std::io::Error::other(text.to_string()))
    }

    #[test]
    fn rustls_failures_are_named_by_what_to_fix() {
        assert_eq!(
            problem("invalid peer certificate: UnknownIssuer"),
            Some(TlsProblem::UnknownAuthority)
        );
        assert_eq!(
            problem("invalid peer certificate: certificate not valid for name \"127.0.0.1\""),
            Some(TlsProblem::NameMismatch)
        );
        assert_eq!(
            problem("invalid peer certificate: certificate expired: verification time 1, but certificate is not valid after 0"),
            Some(TlsProblem::Expired)
        );
        assert_eq!(
            problem("received fatal alert: CertificateRequired"),
            Some(TlsProblem::ClientCertificateRequired)
        );
        assert_eq!(
            problem("received corrupt message of type InvalidContentType"),
            Some(TlsProblem::NotTls)
        );
        assert_eq!(problem("Connection refused (os error 111)"), None);
    }
}
