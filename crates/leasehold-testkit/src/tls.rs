//! Certificates for TLS tests, generated per test into a temporary directory: a CA, a
//! server certificate for the loopback addresses signed by it, a client certificate for
//! mutual TLS, and the bad server certificates a client must refuse (signed by an unknown
//! CA, issued for another host name, expired).
//!
//! Invariant: every file is made fresh by [`TestPki::generate`]; nothing is read from or
//! written to the machine's certificate store.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::server::TlsListener;

/// Which server certificate a TLS listener presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerCert {
    /// Valid for 127.0.0.1, ::1 and localhost, signed by [`TestPki::ca`].
    Good,
    /// Valid for the loopback addresses, but signed by a CA no client trusts.
    UnknownCa,
    /// Signed by the CA but issued for `elsewhere.example` only.
    WrongName,
    /// Signed by the CA, for the loopback addresses, expired in 2001.
    Expired,
}

/// A throw-away PKI for one test.
pub struct TestPki {
    dir: tempfile::TempDir,
}

struct Issuer {
    cert: Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Issuer {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("CA certificate");
    Issuer { cert, key }
}

fn leaf(names: &[&str], issuer: &Issuer, expired: bool) -> (String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf parameters");
    for name in names {
        params.subject_alt_names.push(match name.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*name).try_into().expect("a DNS name")),
        });
    }
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("client"),
    );
    if expired {
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(2001, 1, 1);
    }
    let key = KeyPair::generate().expect("leaf key");
    let cert = params
        .signed_by(&key, &issuer.cert, &issuer.key)
        .expect("leaf certificate");
    (cert.pem(), key.serialize_pem())
}

const LOOPBACK: [&str; 3] = ["127.0.0.1", "::1", "localhost"];

impl TestPki {
    /// Make the CA, the server certificates and a client certificate.
    ///
    /// # Panics
    ///
    /// If the temporary directory cannot be written.
    pub fn generate() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("leasehold-pki-")
            .tempdir()
            .expect("a temporary directory for certificates");
        let trusted = ca("leasehold test CA");
        let stranger = ca("a CA nobody trusts");
        let write = |name: &str, text: &str| {
            fs::write(dir.path().join(name), text).expect("write a certificate file");
        };
        write("ca.crt", &trusted.cert.pem());
        write("other-ca.crt", &stranger.cert.pem());
        for (which, names, issuer, expired) in [
            ("good", &LOOPBACK[..], &trusted, false),
            ("unknown-ca", &LOOPBACK[..], &stranger, false),
            ("wrong-name", &["elsewhere.example"][..], &trusted, false),
            ("expired", &LOOPBACK[..], &trusted, true),
            ("client", &["leasehold-client"][..], &trusted, false),
        ] {
            let (cert, key) = leaf(names, issuer, expired);
            write(&format!("{which}.crt"), &cert);
            write(&format!("{which}.key"), &key);
        }
        TestPki { dir }
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The trusted CA's certificate (PEM file).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Another CA's certificate, which signed nothing the servers present.
    pub fn other_ca(&self) -> PathBuf {
        self.dir.path().join("other-ca.crt")
    }

    /// The client certificate and key, signed by [`ca`](Self::ca).
    pub fn client(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("client.crt"),
            self.dir.path().join("client.key"),
        )
    }

    /// A TLS listener presenting `cert`, that checks client certificates against
    /// [`ca`](Self::ca) and requires one if `require_client_cert`.
    pub fn listener(&self, cert: ServerCert, require_client_cert: bool) -> TlsListener {
        let stem = match cert {
            ServerCert::Good => "good",
            ServerCert::UnknownCa => "unknown-ca",
            ServerCert::WrongName => "wrong-name",
            ServerCert::Expired => "expired",
        };
        TlsListener {
            cert: self.dir.path().join(format!("{stem}.crt")),
            key: self.dir.path().join(format!("{stem}.key")),
            ca: self.ca(),
            require_client_cert,
        }
    }
}
