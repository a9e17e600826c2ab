//! TLS for [`PgStore`](super::PgStore): libpq's `sslmode` and `sslrootcert`, read from the
//! connection string, and [`PgTls`], the connector that does what they ask (feature `tls`).
//!
//! tokio-postgres parses only `sslmode=disable`, `prefer` and `require`, and no `sslrootcert`:
//! [`PgTls::from_url`] takes both out of the string, hands the rest to tokio-postgres with the
//! `sslmode` it knows (`require` for the `verify-*` modes), and keeps in the connector how the
//! server's certificate is checked.

use crate::config::ConfigError;

/// libpq's `sslmode`, without `allow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, ConfigError> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            "allow" => {
                return Err(ConfigError::new(
                    "sslmode",
                    "\"allow\" is not supported (use disable, prefer, require, verify-ca or verify-full)",
                ));
            }
            other => {
                return Err(ConfigError::new(
                    "sslmode",
                    format!(
                        "{other:?} is not an sslmode (disable, prefer, require, verify-ca or verify-full)"
                    ),
                ));
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// The mode tokio-postgres is given: whether to ask the server for TLS, and whether to
    /// refuse a server that does not offer it.
    fn negotiation(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require | Self::VerifyCa | Self::VerifyFull => "require",
        }
    }
}

/// What the connector checks of the server's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// Nothing: encrypted, the server not authenticated (`prefer`, `require`).
    Nothing,
    /// That a trusted root issued it, whatever host it names (`verify-ca`, and `require` or
    /// `prefer` with an `sslrootcert` file).
    Chain,
    /// The chain, and that it names the host connected to (`verify-full`).
    Full,
}

/// Where the trusted roots come from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Roots {
    /// The operating system's store.
    System,
    /// A PEM file.
    File(String),
}

/// A connection string split in two: the TLS parameters this module reads, and the rest,
/// rewritten with the `sslmode` tokio-postgres understands.
#[derive(Debug, PartialEq, Eq)]
struct Split {
    /// The connection string without `sslmode` and `sslrootcert`, with
    /// `sslmode=<disable|prefer|require>` added.
    rest: String,
    mode: SslMode,
    check: Check,
    roots: Option<Roots>,
}

/// Reads `sslmode` and `sslrootcert` out of `url` (a `postgres://` URL or key-value pairs) and
/// decides, with libpq's rules, what the connection does:
///
/// - no `sslmode`: `prefer`, or `verify-full` with `sslrootcert=system` (libpq 16);
/// - `prefer` and `require` encrypt without checking the certificate, unless an `sslrootcert`
///   file is named: then the chain is checked, as libpq does when it finds a root certificate;
/// - `verify-ca` checks the chain, `verify-full` the chain and the host name, against the
///   `sslrootcert` file or else the system's roots;
/// - `sslrootcert=system` needs `verify-full`.
fn split(url: &str) -> Result<Split, ConfigError> {
    let (rest, sslmode, sslrootcert) = if is_uri(url) {
        split_uri(url)?
    } else {
        split_pairs(url)
    };
    let roots = sslrootcert.map(|value| match value.as_str() {
        "system" => Roots::System,
        _ => Roots::File(value),
    });
    let mode = match sslmode.as_deref() {
        Some(value) => SslMode::parse(value)?,
        None if roots == Some(Roots::System) => SslMode::VerifyFull,
        None => SslMode::Prefer,
    };
    if roots == Some(Roots::System) && mode != SslMode::VerifyFull {
        return Err(ConfigError::new(
            "sslrootcert",
            format!(
                "sslrootcert=system needs sslmode=verify-full, not {:?} (as in libpq)",
                mode.name()
            ),
        ));
    }
    let check = match mode {
        SslMode::Disable => Check::Nothing,
        SslMode::Prefer | SslMode::Require if roots.is_some() => Check::Chain,
        SslMode::Prefer | SslMode::Require => Check::Nothing,
        SslMode::VerifyCa => Check::Chain,
        SslMode::VerifyFull => Check::Full,
    };
    let roots = match (check, roots) {
        (Check::Nothing, _) => None,
        (_, None) => Some(Roots::System),
        (_, roots) => roots,
    };
    let negotiation = mode.negotiation();
    let rest = if is_uri(url) {
        let separator = if query_start(&rest).is_some() {
            '&'
        } else {
            '?'
        };
        format!("{rest}{separator}sslmode={negotiation}")
    } else {
        format!("{} sslmode={negotiation}", rest.trim())
            .trim_start()
            .to_owned()
    };
    Ok(Split {
        rest,
        mode,
        check,
        roots,
    })
}

fn is_uri(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Where the query of a URL (its part after the prefix) starts: at the first `?` after the
/// credentials, which end at the first `@`, as tokio-postgres reads it.
fn query_start(url: &str) -> Option<usize> {
    let after_prefix = url.find("://").map_or(0, |at| at + 3);
    let host = url[after_prefix..]
        .find('@')
        .map_or(after_prefix, |at| after_prefix + at + 1);
    url[host..].find('?').map(|at| host + at)
}

/// [`split`] of a URL (`postgres://` or `postgresql://`), whose query's parameters are
/// `&`-separated `key=value`s, percent-encoded.
fn split_uri(url: &str) -> Result<(String, Option<String>, Option<String>), ConfigError> {
    let Some(start) = query_start(url) else {
        return Ok((url.to_owned(), None, None));
    };
    let (mut sslmode, mut sslrootcert) = (None, None);
    let mut kept = Vec::new();
    for parameter in url[start + 1..].split('&') {
        let taken = match parameter.split_once('=') {
            Some((key, value)) => match percent_decode(key)?.as_str() {
                "sslmode" => Some((&mut sslmode, value)),
                "sslrootcert" => Some((&mut sslrootcert, value)),
                _ => None,
            },
            None => None,
        };
        match taken {
            Some((slot, value)) => *slot = Some(percent_decode(value)?),
            None => kept.push(parameter),
        }
    }
    let mut rest = url[..start].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((rest, sslmode, sslrootcert))
}

/// Decodes `%XX` escapes, as tokio-postgres does (a `+` stays a `+`).
fn percent_decode(text: &str) -> Result<String, ConfigError> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[at], bytes.get(at + 1), bytes.get(at + 2)) {
            (b'%', Some(&high), Some(&low)) if hex(high).is_some() && hex(low).is_some() => {
                decoded.push((hex(high).unwrap_or(0) * 16 + hex(low).unwrap_or(0)) as u8);
                at += 3;
            }
            (byte, _, _) => {
                decoded.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8(decoded)
        .map_err(|_| ConfigError::new("url", "a parameter is not UTF-8 once percent-decoded"))
}

/// [`split`] of key-value pairs (`host=db sslmode=verify-full …`; a value may be quoted with
/// `'`, and `\` escapes a character), read as tokio-postgres reads them. Malformed text is
/// returned whole, for tokio-postgres to report.
fn split_pairs(text: &str) -> (String, Option<String>, Option<String>) {
    let Some(pairs) = pairs(text) else {
        return (text.to_owned(), None, None);
    };
    let (mut sslmode, mut sslrootcert) = (None, None);
    let mut rest = String::new();
    let mut copied = 0;
    for (key, value, span) in pairs {
        let slot = match key {
            "sslmode" => &mut sslmode,
            "sslrootcert" => &mut sslrootcert,
            _ => continue,
        };
        *slot = Some(value);
        rest.push_str(&text[copied..span.start]);
        copied = span.end;
    }
    rest.push_str(&text[copied..]);
    (rest, sslmode, sslrootcert)
}

/// The key-value pairs of `text` with the byte range each takes, or `None` if `text` is not
/// well formed.
fn pairs(text: &str) -> Option<Vec<(&str, String, std::ops::Range<usize>)>> {
    let mut pairs = Vec::new();
    let mut it = text.char_indices().peekable();
    let skip_ws = |it: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while it.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_ws(&mut it);
        let Some(&(start, _)) = it.peek() else {
            return Some(pairs);
        };
        while it
            .next_if(|&(_, c)| !c.is_whitespace() && c != '=')
            .is_some()
        {}
        let key_end = it.peek().map_or(text.len(), |&(at, _)| at);
        let key = &text[start..key_end];
        if key.is_empty() {
            return None;
        }
        skip_ws(&mut it);
        it.next_if(|&(_, c)| c == '=')?;
        skip_ws(&mut it);
        let mut value = String::new();
        if it.next_if(|&(_, c)| c == '\'').is_some() {
            loop {
                match it.next()? {
                    (_, '\'') => break,
                    (_, '\\') => value.push(it.next()?.1),
                    (_, c) => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = it.next_if(|&(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some((_, escaped)) = it.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
            if value.is_empty() {
                return None;
            }
        }
        let end = it.peek().map_or(text.len(), |&(at, _)| at);
        pairs.push((key, value, start..end));
    }
}

/// The connector of a [`PgStore`](super::PgStore)'s connections: its pool's, its `LISTEN`
/// connection's ([`PgStore::spawn_session_listener`](super::PgStore::spawn_session_listener))
/// and the cancel requests of its timed-out statements. It does what the connection string's
/// `sslmode` and `sslrootcert` ask, as libpq does; [`from_url`](Self::from_url) builds it.
///
/// With the `tls` feature (on by default) it is rustls (with the *ring* provider). Without it,
/// connections are never encrypted, and [`from_url`](Self::from_url) refuses a connection
/// string that asks for TLS (`sslmode=require`, `verify-ca`, `verify-full`, or an
/// `sslrootcert`), never quietly connecting without it.
///
/// [`Default`]: encryption without checking the server's certificate when a connection's
/// `tokio_postgres::Config` asks for it (`sslmode=prefer`, the default, or `require`), as
/// libpq without a root certificate; without the `tls` feature, none.
///
/// Use it to build a pool by hand with the same TLS as [`PgStore::connect`](super::PgStore::connect),
/// and give it to the store with [`PgStore::tls`](super::PgStore::tls):
///
/// ```no_run
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_session_auth::{PgStore, store::PgTls};
///
/// let url = "postgres://app:secret@db.example.com/app?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem";
/// let (config, tls) = PgTls::from_url(url)?;
/// let manager = deadpool_postgres::Manager::new(config, tls.clone());
/// let pool = deadpool_postgres::Pool::builder(manager).max_size(8).build()?;
/// let store = PgStore::new(pool).tls(tls);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgTls {
    connector: Connector,
    check: Check,
}

#[cfg(feature = "tls")]
type Connector = tokio_postgres_rustls::MakeRustlsConnect;
#[cfg(not(feature = "tls"))]
type Connector = tokio_postgres::NoTls;

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let checks = match (cfg!(feature = "tls"), self.check) {
            (false, _) => "no TLS",
            (true, Check::Nothing) => "nothing",
            (true, Check::Chain) => "chain",
            (true, Check::Full) => "chain and host name",
        };
        f.debug_struct("PgTls").field("checks", &checks).finish()
    }
}

impl Default for PgTls {
    fn default() -> Self {
        Self {
            #[cfg(feature = "tls")]
            connector: rustls::client_config(std::sync::Arc::new(rustls::Unverified::new())),
            #[cfg(not(feature = "tls"))]
            connector: tokio_postgres::NoTls,
            check: Check::Nothing,
        }
    }
}

impl PgTls {
    /// Parses a connection string as [`PgStore::connect`](super::PgStore::connect) does: the
    /// `tokio_postgres::Config` of its connections and the connector of its `sslmode` and
    /// `sslrootcert`. The config's `sslmode` is the one tokio-postgres knows (`require` for
    /// the `verify-*` modes, whose checks the connector makes).
    ///
    /// The `sslrootcert` file is read now (PEM, one or more certificates); the system's roots
    /// are those of the operating system's store (`rustls-native-certs`, which honours
    /// `SSL_CERT_FILE` and `SSL_CERT_DIR`).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `sslmode`, `sslrootcert` or `url`: an unknown or unsupported
    /// `sslmode` (`allow`), `sslrootcert=system` with a mode weaker than `verify-full`, a root
    /// certificate file that cannot be read or holds no certificate, no system roots for a
    /// `verify-*` mode, a connection string tokio-postgres does not accept, or, without the
    /// `tls` feature, a connection string that asks for TLS.
    ///
    /// ```
    /// use tower_session_auth::store::PgTls;
    ///
    /// let (config, _tls) = PgTls::from_url("host=db user=app sslmode=require").unwrap();
    /// assert_eq!(config.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
    /// let error = PgTls::from_url("postgres://app@db/app?sslmode=verify-everything").unwrap_err();
    /// assert_eq!(error.field, "sslmode");
    /// ```
    pub fn from_url(url: &str) -> Result<(tokio_postgres::Config, Self), ConfigError> {
        let (rest, tls) = Self::split(url)?;
        let config = rest
            .parse()
            .map_err(|error| ConfigError::new("url", format!("{error}")))?;
        Ok((config, tls))
    }

    /// [`from_url`](Self::from_url), the config as a connection string (`url` without
    /// `sslrootcert`, its `sslmode` the one tokio-postgres knows).
    pub(crate) fn split(url: &str) -> Result<(String, Self), ConfigError> {
        let split = split(url)?;
        let tls = Self::build(&split)?;
        Ok((split.rest, tls))
    }

    #[cfg(feature = "tls")]
    fn build(split: &Split) -> Result<Self, ConfigError> {
        use std::sync::Arc;
        let verifier: Arc<dyn ::rustls::client::danger::ServerCertVerifier> =
            match (split.check, &split.roots) {
                (Check::Nothing, _) | (_, None) => Arc::new(rustls::Unverified::new()),
                (Check::Chain, Some(roots)) => {
                    Arc::new(rustls::ChainOnly::new(rustls::load_roots(roots)?))
                }
                (Check::Full, Some(roots)) => rustls::full(rustls::load_roots(roots)?)?,
            };
        Ok(Self {
            connector: rustls::client_config(verifier),
            check: split.check,
        })
    }

    #[cfg(not(feature = "tls"))]
    fn build(split: &Split) -> Result<Self, ConfigError> {
        let refused = match split.mode {
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                Some(("sslmode", format!("sslmode={}", split.mode.name())))
            }
            SslMode::Prefer if split.roots.is_some() => Some(("sslrootcert", "sslrootcert".into())),
            SslMode::Disable | SslMode::Prefer => None,
        };
        if let Some((field, asked)) = refused {
            return Err(ConfigError::new(
                field,
                format!(
                    "{asked} asks for TLS, and this build of tower-session-auth has none \
                     (its `tls` feature is off)"
                ),
            ));
        }
        Ok(Self::default())
    }
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for PgTls
where
    Connector: tokio_postgres::tls::MakeTlsConnect<S>,
{
    type Stream = <Connector as tokio_postgres::tls::MakeTlsConnect<S>>::Stream;
    type TlsConnect = <Connector as tokio_postgres::tls::MakeTlsConnect<S>>::TlsConnect;
    type Error = <Connector as tokio_postgres::tls::MakeTlsConnect<S>>::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        self.connector.make_tls_connect(domain)
    }
}

/// The rustls side: the client configuration and the certificate checks of each mode.
#[cfg(feature = "tls")]
mod rustls {
    use std::sync::Arc;

    use ::rustls::client::WebPkiServerVerifier;
    use ::rustls::client::danger::{
        HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
    };
    use ::rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
    use ::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use ::rustls::{ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
    use rustls_pki_types::pem::PemObject;

    use super::Roots;
    use crate::config::ConfigError;

    /// The crypto provider: *ring*, named here rather than taken from the process default, so
    /// that another crate's choice of provider changes nothing.
    fn provider() -> Arc<CryptoProvider> {
        Arc::new(::rustls::crypto::ring::default_provider())
    }

    /// A connector that checks the server's certificate with `verifier`.
    pub(super) fn client_config(
        verifier: Arc<dyn ServerCertVerifier>,
    ) -> tokio_postgres_rustls::MakeRustlsConnect {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        tokio_postgres_rustls::MakeRustlsConnect::new(config)
    }

    /// The roots `roots` names.
    pub(super) fn load_roots(roots: &Roots) -> Result<RootCertStore, ConfigError> {
        let mut store = RootCertStore::empty();
        match roots {
            Roots::File(path) => {
                let pem = std::fs::read(path).map_err(|error| {
                    ConfigError::new("sslrootcert", format!("cannot read {path:?}: {error}"))
                })?;
                let certificates = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|error| {
                        ConfigError::new("sslrootcert", format!("{path:?} is not PEM: {error}"))
                    })?;
                if certificates.is_empty() {
                    return Err(ConfigError::new(
                        "sslrootcert",
                        format!("{path:?} holds no PEM certificate"),
                    ));
                }
                for certificate in certificates {
                    store.add(certificate).map_err(|error| {
                        ConfigError::new(
                            "sslrootcert",
                            format!("{path:?} holds a certificate unfit for a root: {error}"),
                        )
                    })?;
                }
            }
            Roots::System => {
                let found = rustls_native_certs::load_native_certs();
                store.add_parsable_certificates(found.certs);
                if store.is_empty() {
                    let errors: Vec<String> =
                        found.errors.iter().map(ToString::to_string).collect();
                    return Err(ConfigError::new(
                        "sslrootcert",
                        format!(
                            "no root certificate found in the system's store ({}); name a PEM \
                             file with sslrootcert",
                            if errors.is_empty() {
                                "it is empty".to_owned()
                            } else {
                                errors.join("; ")
                            }
                        ),
                    ));
                }
            }
        }
        Ok(store)
    }

    /// `verify-full`: rustls' own verifier, the chain and the host name.
    pub(super) fn full(roots: RootCertStore) -> Result<Arc<dyn ServerCertVerifier>, ConfigError> {
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|error| ConfigError::new("sslrootcert", error.to_string()))?;
        Ok(verifier)
    }

    /// `sslmode=prefer` or `require` without a root certificate: any certificate is accepted
    /// (the connection is encrypted, the server not authenticated), but the handshake's
    /// signatures are checked, so the server holds the key of the certificate it shows.
    #[derive(Debug)]
    pub(super) struct Unverified(Arc<CryptoProvider>);

    impl Unverified {
        pub(super) fn new() -> Self {
            Self(provider())
        }
    }

    impl ServerCertVerifier for Unverified {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// `verify-ca` (and `prefer` or `require` with a root certificate file): the certificate
    /// must chain to a trusted root, whatever host name it carries.
    #[derive(Debug)]
    pub(super) struct ChainOnly {
        roots: RootCertStore,
        signatures: Unverified,
    }

    impl ChainOnly {
        pub(super) fn new(roots: RootCertStore) -> Self {
            Self {
                roots,
                signatures: Unverified::new(),
            }
        }
    }

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            let certificate = ::rustls::server::ParsedCertificate::try_from(end_entity)?;
            ::rustls::client::verify_server_cert_signed_by_trust_anchor(
                &certificate,
                &self.roots,
                intermediates,
                now,
                self.signatures.0.signature_verification_algorithms.all,
            )?;
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.signatures.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.signatures.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.signatures.supported_verify_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> (String, SslMode, Check, Option<Roots>) {
        let split = split(url).unwrap();
        (split.rest, split.mode, split.check, split.roots)
    }

    fn file(path: &str) -> Option<Roots> {
        Some(Roots::File(path.to_owned()))
    }

    #[test]
    fn a_url_without_sslmode_prefers_tls_without_checks() {
        assert_eq!(
            parts("postgres://app:secret@db/app"),
            (
                "postgres://app:secret@db/app?sslmode=prefer".to_owned(),
                SslMode::Prefer,
                Check::Nothing,
                None
            )
        );
        assert_eq!(
            parts("host=db user=app").0,
            "host=db user=app sslmode=prefer"
        );
    }

    #[test]
    fn url_parameters_are_taken_out_and_the_rest_kept() {
        assert_eq!(
            parts(
                "postgresql://app:p%40ss@db1:5432,db2/app?target_session_attrs=read-write\
                 &sslmode=verify-full&sslrootcert=%2Fetc%2Fssl%2Fca%20root.pem&connect_timeout=2"
            ),
            (
                "postgresql://app:p%40ss@db1:5432,db2/app?target_session_attrs=read-write\
                 &connect_timeout=2&sslmode=require"
                    .to_owned(),
                SslMode::VerifyFull,
                Check::Full,
                file("/etc/ssl/ca root.pem")
            )
        );
        assert_eq!(
            parts("postgres://app@db/app?sslmode=verify-ca"),
            (
                "postgres://app@db/app?sslmode=require".to_owned(),
                SslMode::VerifyCa,
                Check::Chain,
                Some(Roots::System)
            )
        );
        // The last of a repeated parameter counts, as in tokio-postgres.
        assert_eq!(
            parts("postgres://db/app?sslmode=require&sslmode=disable").1,
            SslMode::Disable
        );
    }

    #[test]
    fn a_question_mark_in_the_credentials_is_not_the_query() {
        assert_eq!(
            parts("postgres://app:what?now@db/app?sslmode=require").0,
            "postgres://app:what?now@db/app?sslmode=require"
        );
        assert_eq!(
            parts("postgres://app:what?now@db/app").0,
            "postgres://app:what?now@db/app?sslmode=prefer"
        );
    }

    #[test]
    fn key_value_pairs_are_taken_out_and_the_rest_kept() {
        assert_eq!(
            parts(
                r"host=db password='it\'s sslmode=disable' sslmode = verify-full sslrootcert='/etc/ssl/my ca.pem' dbname=app"
            ),
            (
                r"host=db password='it\'s sslmode=disable'   dbname=app sslmode=require".to_owned(),
                SslMode::VerifyFull,
                Check::Full,
                file("/etc/ssl/my ca.pem")
            )
        );
        assert_eq!(
            parts(r"sslrootcert=/ca\ dir/ca.pem sslmode=require host=db"),
            (
                "host=db sslmode=require".to_owned(),
                SslMode::Require,
                Check::Chain,
                file("/ca dir/ca.pem")
            )
        );
        // Malformed text goes to tokio-postgres as it is, which reports it.
        assert_eq!(parts("host=db sslmode").0, "host=db sslmode sslmode=prefer");
    }

    #[test]
    fn libpq_rules_for_root_certificates() {
        // require (and prefer) with a root file check the chain, as libpq; without, nothing.
        assert_eq!(parts("host=db sslmode=require").2, Check::Nothing);
        assert_eq!(
            parts("host=db sslmode=require sslrootcert=/ca.pem").2,
            Check::Chain
        );
        assert_eq!(
            parts("host=db sslmode=prefer sslrootcert=/ca.pem").2,
            Check::Chain
        );
        // disable ignores a root file.
        assert_eq!(
            parts("host=db sslmode=disable sslrootcert=/ca.pem"),
            (
                "host=db sslmode=disable".to_owned(),
                SslMode::Disable,
                Check::Nothing,
                None
            )
        );
        // sslrootcert=system means verify-full, and refuses weaker modes (libpq 16).
        assert_eq!(
            parts("host=db sslrootcert=system"),
            (
                "host=db sslmode=require".to_owned(),
                SslMode::VerifyFull,
                Check::Full,
                Some(Roots::System)
            )
        );
        for mode in ["disable", "prefer", "require", "verify-ca"] {
            let error = split(&format!("host=db sslmode={mode} sslrootcert=system")).unwrap_err();
            assert_eq!(error.field, "sslrootcert");
            assert_eq!(
                error.problem,
                format!(
                    "sslrootcert=system needs sslmode=verify-full, not \"{mode}\" (as in libpq)"
                )
            );
        }
    }

    #[test]
    fn unknown_and_unsupported_modes_are_refused() {
        let error = split("postgres://db/app?sslmode=verify_full").unwrap_err();
        assert_eq!(error.field, "sslmode");
        assert_eq!(
            error.problem,
            "\"verify_full\" is not an sslmode (disable, prefer, require, verify-ca or verify-full)"
        );
        let error = split("host=db sslmode=allow").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid session configuration: sslmode: \"allow\" is not supported \
             (use disable, prefer, require, verify-ca or verify-full)"
        );
    }

    #[test]
    fn the_config_carries_the_mode_tokio_postgres_knows() {
        use tokio_postgres::config::SslMode as Negotiation;
        for (mode, negotiation) in [
            ("disable", Negotiation::Disable),
            ("prefer", Negotiation::Prefer),
        ] {
            let (config, _) = PgTls::from_url(&format!("host=db user=app sslmode={mode}")).unwrap();
            assert_eq!(config.get_ssl_mode(), negotiation);
        }
        let (config, _) = PgTls::from_url("postgres://app@db:6432/app?connect_timeout=2").unwrap();
        assert_eq!(config.get_ssl_mode(), Negotiation::Prefer);
        assert_eq!(config.get_ports(), [6432]);
        assert_eq!(
            config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(2))
        );
        let error = PgTls::from_url("host=db port=none").unwrap_err();
        assert_eq!(error.field, "url");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_modes_are_built_with_the_feature() {
        use tokio_postgres::config::SslMode as Negotiation;
        let (config, tls) = PgTls::from_url("host=db user=app sslmode=require").unwrap();
        assert_eq!(config.get_ssl_mode(), Negotiation::Require);
        assert_eq!(format!("{tls:?}"), "PgTls { checks: \"nothing\" }");
        assert_eq!(
            format!("{:?}", PgTls::default()),
            "PgTls { checks: \"nothing\" }"
        );
    }

    #[cfg(feature = "tls")]
    #[test]
    fn an_unusable_root_file_is_refused() {
        let missing = "/nonexistent/tower-session-auth/ca.pem";
        let error = crate::PgStore::connect(&format!(
            "host=db sslmode=verify-full sslrootcert={missing}"
        ))
        .unwrap_err();
        assert_eq!(error.field, "sslrootcert");
        assert!(
            error
                .problem
                .starts_with(&format!("cannot read {missing:?}: ")),
            "{error}"
        );
        let empty = std::env::temp_dir().join(format!("tsa-no-pem-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = PgTls::from_url(&format!(
            "host=db sslmode=verify-ca sslrootcert={}",
            empty.display()
        ))
        .unwrap_err();
        std::fs::remove_file(&empty).unwrap();
        assert_eq!(
            error.problem,
            format!("{:?} holds no PEM certificate", empty.display().to_string())
        );
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_the_feature_a_request_for_tls_is_refused() {
        for (url, field) in [
            ("host=db sslmode=require", "sslmode"),
            ("postgres://db/app?sslmode=verify-ca", "sslmode"),
            ("host=db sslmode=verify-full sslrootcert=/ca.pem", "sslmode"),
            ("host=db sslrootcert=/ca.pem", "sslrootcert"),
            ("host=db sslrootcert=system", "sslmode"),
        ] {
            let error = PgTls::from_url(url).unwrap_err();
            assert_eq!(error.field, field, "{url}");
            assert!(
                error.problem.ends_with(
                    "asks for TLS, and this build of tower-session-auth has none \
                     (its `tls` feature is off)"
                ),
                "{error}"
            );
        }
        let error = PgTls::from_url("host=db sslmode=verify-full").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid session configuration: sslmode: sslmode=verify-full asks for TLS, and this \
             build of tower-session-auth has none (its `tls` feature is off)"
        );
        // PgStore::connect refuses it too, before any connection.
        let error = crate::PgStore::connect("postgres://app@db/app?sslmode=require").unwrap_err();
        assert_eq!(error.field, "sslmode");
        assert!(
            error.problem.starts_with("sslmode=require asks for TLS"),
            "{error}"
        );
        // disable and prefer (the default) connect in plain text, as before.
        for url in [
            "host=db sslmode=disable",
            "host=db",
            "host=db sslmode=prefer",
        ] {
            let (_, tls) = PgTls::from_url(url).unwrap();
            assert_eq!(format!("{tls:?}"), "PgTls { checks: \"no TLS\" }");
        }
    }
}
