//! A throwaway certificate authority generated at runtime, so HTTPS tests can
//! trust exactly one CA (via the resource's CA-certificate setting) and prove
//! that an unrelated CA is rejected.

use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslMethod};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509NameBuilder, X509};
use tempfile::TempDir;

/// A CA plus a server certificate it signed for `localhost` and `127.0.0.1`.
/// Create a second `TestCa` for an "untrusted" CA.
pub struct TestCa {
    _dir: TempDir,
    ca_pem_path: PathBuf,
    ca_cert: X509,
    server_cert: X509,
    server_key: PKey<Private>,
}

impl TestCa {
    /// Generates the CA and the server certificate (P-256 keys, valid from
    /// yesterday for 30 days) and writes the CA certificate to `ca.pem`.
    pub fn new() -> TestCa {
        let (ca_key, ca_cert) = ca();
        let (server_key, server_cert) = server(&ca_key, &ca_cert);
        let dir = TempDir::new().expect("creating the CA temp dir");
        let ca_pem_path = dir.path().join("ca.pem");
        std::fs::write(&ca_pem_path, ca_cert.to_pem().expect("encoding the CA"))
            .expect("writing ca.pem");
        TestCa {
            _dir: dir,
            ca_pem_path,
            ca_cert,
            server_cert,
            server_key,
        }
    }

    /// Path of the PEM-encoded CA certificate.
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem_path
    }

    /// The PEM-encoded CA certificate, as a resource `source` would carry it.
    pub fn ca_pem(&self) -> String {
        String::from_utf8(self.ca_cert.to_pem().expect("encoding the CA")).expect("PEM is ASCII")
    }

    /// The PEM-encoded server certificate (leaf only).
    pub fn server_cert_pem(&self) -> String {
        String::from_utf8(self.server_cert.to_pem().expect("encoding the cert"))
            .expect("PEM is ASCII")
    }

    /// A TLS acceptor presenting the server certificate.
    pub fn acceptor(&self) -> SslAcceptor {
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
            .expect("creating an SslAcceptor");
        builder
            .set_private_key(&self.server_key)
            .expect("setting the server key");
        builder
            .set_certificate(&self.server_cert)
            .expect("setting the server certificate");
        builder
            .add_extra_chain_cert(self.ca_cert.clone())
            .expect("adding the CA to the chain");
        builder
            .check_private_key()
            .expect("key matches certificate");
        builder.build()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256 group");
    PKey::from_ec_key(EcKey::generate(&group).expect("generating an EC key"))
        .expect("wrapping the EC key")
}

fn name(common_name: &str) -> openssl::x509::X509Name {
    let mut name = X509NameBuilder::new().expect("X509 name builder");
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)
        .expect("setting CN");
    name.build()
}

/// A builder with serial, validity, subject and public key filled in.
fn cert_builder(subject: &str, key: &PKey<Private>) -> openssl::x509::X509Builder {
    let mut builder = X509::builder().expect("X509 builder");
    builder.set_version(2).expect("X509 v3");
    let mut serial = BigNum::new().expect("bignum");
    serial
        .rand(64, MsbOption::MAYBE_ZERO, false)
        .expect("random serial");
    builder
        .set_serial_number(&serial.to_asn1_integer().expect("serial"))
        .expect("setting serial");
    let not_before = Asn1Time::from_unix(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs() as i64
            - 86_400,
    )
    .expect("not before");
    builder
        .set_not_before(&not_before)
        .expect("setting not before");
    builder
        .set_not_after(&Asn1Time::days_from_now(30).expect("not after"))
        .expect("setting not after");
    builder
        .set_subject_name(&name(subject))
        .expect("setting subject");
    builder.set_pubkey(key).expect("setting public key");
    builder
}

fn ca() -> (PKey<Private>, X509) {
    let key = key();
    let mut builder = cert_builder("pool-resource test CA", &key);
    builder
        .set_issuer_name(&name("pool-resource test CA"))
        .expect("setting issuer");
    builder
        .append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
        .expect("adding basicConstraints");
    builder
        .append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .expect("ku"),
        )
        .expect("adding keyUsage");
    let ski = SubjectKeyIdentifier::new()
        .build(&builder.x509v3_context(None, None))
        .expect("ski");
    builder.append_extension(ski).expect("adding SKI");
    builder
        .sign(&key, MessageDigest::sha256())
        .expect("self-signing the CA");
    (key, builder.build())
}

fn server(ca_key: &PKey<Private>, ca_cert: &X509) -> (PKey<Private>, X509) {
    let key = key();
    let mut builder = cert_builder("localhost", &key);
    builder
        .set_issuer_name(ca_cert.subject_name())
        .expect("setting issuer");
    builder
        .append_extension(BasicConstraints::new().build().expect("bc"))
        .expect("adding basicConstraints");
    builder
        .append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_agreement()
                .build()
                .expect("ku"),
        )
        .expect("adding keyUsage");
    builder
        .append_extension(ExtendedKeyUsage::new().server_auth().build().expect("eku"))
        .expect("adding extendedKeyUsage");
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .ip("127.0.0.1")
        .build(&builder.x509v3_context(Some(ca_cert), None))
        .expect("san");
    builder.append_extension(san).expect("adding SAN");
    let aki = AuthorityKeyIdentifier::new()
        .keyid(false)
        .build(&builder.x509v3_context(Some(ca_cert), None))
        .expect("aki");
    builder.append_extension(aki).expect("adding AKI");
    builder
        .sign(ca_key, MessageDigest::sha256())
        .expect("signing the server certificate");
    (key, builder.build())
}
