//! TLS to an `https://` backend (docs/deployment.md, "HTTPS backends"): the roots its
//! certificate may chain to, the protocols offered, and what a failed
//! verification is called in the 502 and the log.
//!
//! The connection itself is hyper-rustls's: it takes the server name (SNI
//! and the name the certificate must hold) from the URL's host, offers ALPN
//! `h2` and `http/1.1`, and tells hyper-util's pooled client which one the
//! backend chose, so an HTTP/2 backend is spoken to in HTTP/2.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};

use crate::config::UpstreamConfig;

/// The rustls client configuration for the backend: the platform's roots
/// and `ca_file`'s, with ring (the crate's one provider) and no ALPN yet
/// (the connector adds it). For an `http://` backend no roots are read.
pub fn client_config(cfg: &UpstreamConfig) -> ClientConfig {
    let https = cfg.url.scheme() == Some(&http::uri::Scheme::HTTPS);
    let mut roots = RootCertStore::empty();
    if https {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "a system root certificate could not be read");
        }
        roots.add_parsable_certificates(found.certs);
    }
    if let Some(pem) = &cfg.ca_pem {
        // Checked when the config was loaded: every entry parses and adds.
        for cert in CertificateDer::pem_slice_iter(pem).flatten() {
            let _ = roots.add(cert);
        }
    }
    if https && roots.is_empty() {
        tracing::warn!(
            "no trusted root certificates for the https backend (no system roots, no [upstream] ca_file): every connection to it will fail"
        );
    }
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The name the backend's certificate must hold: the URL's host (brackets
/// of an IPv6 literal removed), as the connector sends it in SNI.
pub fn server_name(uri: &http::Uri) -> Option<ServerName<'static>> {
    let host = uri.host()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_owned()).ok()
}

/// The TLS failure somewhere in `e`'s chain of causes. rustls's error
/// reaches the client wrapped in `io::Error`s, whose `source()` skips the
/// error they wrap, so each one is opened by hand.
pub fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            && let Some(tls) = tls_error(inner)
        {
            return Some(tls);
        }
        next = err.source();
    }
    None
}

/// What went wrong with the backend's certificate, for the 502's detail
/// and the log; `None` when the TLS failure was not about the certificate.
pub fn certificate_failure(e: &rustls::Error, host: &str) -> Option<String> {
    let what = match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "the backend's certificate for {host} is signed by an unknown authority (trusted: the system roots and [upstream] ca_file)"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!("the backend's certificate does not name {host}: {e}"),
        rustls::Error::InvalidCertificate(_) => {
            format!("the backend's certificate for {host} did not verify: {e}")
        }
        rustls::Error::NoCertificatesPresented => {
            format!("the backend at {host} presented no certificate")
        }
        _ => return None,
    };
    Some(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_error_is_found_inside_io_errors() {
        let tls = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let wrapped =
            std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, tls));
        let found = tls_error(&wrapped).expect("found");
        let detail = certificate_failure(found, "backend.test").expect("a certificate failure");
        assert!(detail.contains("certificate"), "{detail}");
        assert!(detail.contains("unknown authority"), "{detail}");
        assert!(detail.contains("backend.test"), "{detail}");
    }

    #[test]
    fn other_failures_are_not_certificate_failures() {
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(tls_error(&plain).is_none());
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
        assert!(certificate_failure(&alert, "h").is_none());
    }

    #[test]
    fn the_server_name_is_the_urls_host() {
        let name = |u: &'static str| server_name(&http::Uri::from_static(u));
        assert_eq!(
            name("https://search.example:8443"),
            Some(ServerName::try_from("search.example").unwrap())
        );
        assert_eq!(
            name("https://[::1]:8443"),
            Some(ServerName::try_from("::1").unwrap())
        );
    }
}
