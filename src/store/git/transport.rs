//! Talking to the remote: credentials, server identity, proxies, fetch and push.
//!
//! Everything libgit2 needs to reach a repository is set up here, once per
//! connection: the credential callback offers each kind of credential once and
//! remembers what it tried (after cargo's `with_authentication`), the
//! certificate callback checks SSH host keys against `known_hosts` and honours
//! `skip_ssl_verification`, and every libgit2 error is classified into the
//! library's [`Error`] so that only network faults are retried.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once, PoisonError};
use std::time::Duration;

use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, ErrorClass, ErrorCode,
    FetchOptions, Oid, ProxyOptions, PushOptions, RemoteCallbacks, Repository,
};

use super::known_hosts::{self, Verdict};
use super::sign::{GitSigner, GIT_ENDPOINT_ENV};
use super::tunnel::{LocalTunnel, TunnelError};
use crate::config::uri::Scheme;
use crate::config::Source;
use crate::error::{Cause, Error, Result};
use crate::process::log::Log;
use crate::process::signal::Interrupt;
use crate::store::codecommit;
use crate::store::seam::CommitOutcome;

/// Connect and read timeouts for every remote operation, so a stalled server
/// fails (and is retried) instead of hanging the step. libgit2 applies them
/// to its sockets (git://, http(s)://) and hands the I/O timeout to libssh2.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// The environment variable that shortens both timeouts, in milliseconds, so
/// that tests of a stalled server do not wait a minute per stall.
pub const TIMEOUT_ENV: &str = "POOL_RESOURCE_GIT_TIMEOUT_MS";

/// The connect and I/O timeouts: the defaults, or [`TIMEOUT_ENV`] (which can
/// only shorten them; 0 or garbage is ignored).
fn timeouts() -> (Duration, Duration) {
    let custom = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis);
    match custom {
        Some(t) => (t.min(CONNECT_TIMEOUT), t.min(IO_TIMEOUT)),
        None => (CONNECT_TIMEOUT, IO_TIMEOUT),
    }
}

/// A timeout as libgit2 wants it: milliseconds in a C int.
fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// Marker in a callback error that tells the classifier we aborted on purpose.
const RACE_MARKER: &str = "pool-resource: remote branch moved";

/// Sets libgit2's process-wide options, which every connection of this
/// process shares (libgit2 has no per-connection ones): the timeouts and
/// owner validation, the same for every source, once; and the CA
/// locations `source` trusts for HTTPS, each location once.
///
/// CA bundle: `git_config http.sslCAInfo`, else `GIT_SSL_CAINFO`, else
/// `SSL_CERT_FILE`, else the system bundle; CA directory: `http.sslCAPath`,
/// else `GIT_SSL_CAPATH`, else `SSL_CERT_DIR`, else `/etc/ssl/certs` (where
/// Concourse workers mount their certificates).
///
/// libgit2 adds CA locations to the one OpenSSL trust store of the process
/// and never takes one away. So when one process opens sources with
/// different CAs (`pool serve`, `pool status` of several sources, a store
/// opened again after a failure), each source keeps finding its own CA;
/// but a source also trusts the CAs of the sources opened before it in
/// this process, besides the system's (which OpenSSL trusts from the
/// start). A per-source check is not possible here: libgit2 hands the
/// certificate callback the server's leaf certificate only, not the chain.
pub fn configure_process(source: &Source) -> Result<()> {
    static PROCESS_WIDE: Once = Once::new();
    PROCESS_WIDE.call_once(|| {
        let (connect, io) = timeouts();
        // SAFETY: libgit2's option setters write globals that connections
        // read without a lock. These run once per process, from the first
        // store opened, before any connection: every connection is made by
        // a store, and `call_once` makes a second caller wait until they
        // are set. Their values (the timeout environment variable, a
        // constant) are the same for every source.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(millis(connect));
            let _ = git2::opts::set_server_timeout_in_milliseconds(millis(io));
            // We only open repositories the user named or we created.
            let _ = git2::opts::set_verify_owner_validation(false);
        }
    });
    // Parsing a CA bundle costs tens of milliseconds of CPU (OpenSSL 3
    // decodes every certificate up front): only HTTPS needs one, and a
    // location already added is in the store for good.
    if !matches!(source.uri.scheme, Scheme::Https) {
        return Ok(());
    }
    let env_path = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let file = source
        .git
        .ssl_ca_info
        .clone()
        .or_else(|| env_path("GIT_SSL_CAINFO"))
        .or_else(|| env_path("SSL_CERT_FILE"))
        .or_else(|| {
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/ssl/cert.pem",
                "/etc/pki/tls/certs/ca-bundle.crt",
            ]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
        });
    let dir = source
        .git
        .ssl_ca_path
        .clone()
        .or_else(|| env_path("GIT_SSL_CAPATH"))
        .or_else(|| env_path("SSL_CERT_DIR"))
        .or_else(|| Some(PathBuf::from("/etc/ssl/certs")).filter(|p| p.is_dir()));
    static CA_ADDED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let mut added = CA_ADDED.lock().unwrap_or_else(PoisonError::into_inner);
    // SAFETY: as above, libgit2 does not lock its options against
    // connections. These setters run under CA_ADDED's lock, so never two at
    // once; the executables use libgit2 from one thread at a time (`pool
    // serve` opens and reads every source on its one refresh thread), so no
    // connection is being made meanwhile; and OpenSSL adds the certificates
    // to its store under the store's own lock.
    unsafe {
        if let Some(file) = file.filter(|f| !added.contains(f)) {
            if let Err(e) = git2::opts::set_ssl_cert_file(&file) {
                return Err(Error::Git {
                    what: format!("could not use CA bundle {}", file.display()),
                    source: e,
                });
            }
            added.push(file);
        }
        if let Some(dir) = dir.filter(|d| !added.contains(d)) {
            // A missing directory is not worth failing over: the bundle may suffice.
            if git2::opts::set_ssl_cert_dir(&dir).is_ok() {
                added.push(dir);
            }
        }
    }
    Ok(())
}

#[derive(Default)]
struct CallState {
    tried: Vec<&'static str>,
    auth_failure: Option<String>,
    identity_failure: Option<String>,
    raced: bool,
    rejected: Option<String>,
    interrupted: bool,
}

/// How to reach the remote repository.
pub struct Remote {
    url: String,
    display: String,
    source: Source,
    ssh_user: String,
    tunnel: Option<LocalTunnel>,
    log: Log,
    interrupt: Interrupt,
    warned_unverified: AtomicBool,
    signer: Option<GitSigner>,
}

impl Remote {
    /// Prepares a connection to `source.uri` (starting the tunnel if configured).
    pub fn new(source: &Source, log: Log, interrupt: Interrupt) -> Result<Remote> {
        let signer = match source.codecommit() {
            Some(cc) if cc.iam_auth => {
                let aws = codecommit::creds::Aws::load(Some(&cc.region), cc.profile.as_deref())?;
                Some(GitSigner::new(
                    aws,
                    &cc.region,
                    &source.uri.host,
                    &cc.name,
                    &source.uri.to_string(),
                ))
            }
            _ => None,
        };
        let uri = &source.uri;
        let ssh_user = source
            .private_key_user
            .clone()
            .or_else(|| uri.user.clone())
            .unwrap_or_else(|| "git".to_string());
        // libgit2 refuses credentials for another user than the URL's, so
        // private_key_user goes into the URL itself.
        let mut url = match (&uri.scheme, &source.private_key_user) {
            (Scheme::Ssh, Some(user)) => {
                let mut as_user = uri.clone();
                as_user.user = Some(user.clone());
                as_user.git_url()
            }
            _ => uri.git_url(),
        };
        let mut tunnel = None;
        if let (Some(proxy), Scheme::Ssh) = (&source.https_tunnel, &uri.scheme) {
            let t = LocalTunnel::start(proxy, &uri.host, uri.port.unwrap_or(22))?;
            url = uri.via_local_port(t.port(), &ssh_user);
            log.line(format_args!(
                "tunnelling ssh to {} through proxy {}:{}",
                uri.host, proxy.host, proxy.port
            ));
            tunnel = Some(t);
        }
        if let (Some(cc), Some(endpoint)) = (
            source.codecommit(),
            std::env::var(GIT_ENDPOINT_ENV)
                .ok()
                .filter(|e| !e.is_empty()),
        ) {
            url = format!("{}/v1/repos/{}", endpoint.trim_end_matches('/'), cc.name);
        }
        Ok(Remote {
            url,
            display: uri.to_string(),
            source: source.clone(),
            ssh_user,
            tunnel,
            log,
            interrupt,
            warned_unverified: AtomicBool::new(false),
            signer,
        })
    }

    fn callbacks<'a>(&'a self, state: &'a RefCell<CallState>) -> RemoteCallbacks<'a> {
        let mut cb = RemoteCallbacks::new();
        cb.credentials(move |_url, _user_from_url, allowed| self.credentials(state, allowed));
        cb.certificate_check(move |cert, _host| {
            let Some(hostkey) = cert.as_hostkey() else {
                // TLS: libgit2 has checked the chain against our CA locations.
                return Ok(if self.source.skip_ssl_verification {
                    CertificateCheckStatus::CertificateOk
                } else {
                    CertificateCheckStatus::CertificatePassthrough
                });
            };
            let (Some(key), Some(kind)) = (hostkey.hostkey(), hostkey.hostkey_type()) else {
                state.borrow_mut().identity_failure =
                    Some("the SSH server's host key could not be read".into());
                return Err(git2::Error::from_str("unreadable host key"));
            };
            let (host, port) = (&self.source.uri.host, self.source.uri.port);
            let Some(known) = &self.source.known_hosts else {
                if !self.warned_unverified.swap(true, Ordering::SeqCst) {
                    self.log.warn(format_args!(
                        "SSH host key of {host} not verified ({} {}); set source.known_hosts to verify it",
                        kind.name(),
                        known_hosts::fingerprint(key)
                    ));
                }
                return Ok(CertificateCheckStatus::CertificateOk);
            };
            let detail = match known_hosts::verify(known, host, port, key) {
                Verdict::Trusted => return Ok(CertificateCheckStatus::CertificateOk),
                Verdict::Mismatch => format!(
                    "the SSH host key of {host} ({} {}) does not match source.known_hosts (or is revoked)",
                    kind.name(),
                    known_hosts::fingerprint(key)
                ),
                Verdict::Unknown => format!(
                    "{host} is not in source.known_hosts; if you trust it, add: {}",
                    known_hosts::line_for(host, port, kind.name(), key)
                ),
            };
            state.borrow_mut().identity_failure = Some(detail);
            Err(git2::Error::from_str("host key verification failed"))
        });
        cb.transfer_progress(move |_| {
            if self.interrupt.stops_transfers() {
                state.borrow_mut().interrupted = true;
                return false;
            }
            true
        });
        cb.sideband_progress(move |_| !self.interrupt.stops_transfers());
        cb
    }

    fn credentials(
        &self,
        state: &RefCell<CallState>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        let mut st = state.borrow_mut();
        let fail = |st: &mut CallState, why: String| {
            st.auth_failure = Some(why);
            Err(git2::Error::from_str("authentication failed"))
        };
        if let (Some(signer), true) = (
            &self.signer,
            allowed.contains(CredentialType::USER_PASS_PLAINTEXT),
        ) {
            if st.tried.contains(&"aws") {
                let cc = self.source.codecommit();
                return fail(
                    &mut st,
                    format!(
                        "CodeCommit rejected the signed request; the credentials need codecommit:GitPull (and codecommit:GitPush to change locks) on arn:aws:codecommit:{}:<account-id>:{}",
                        cc.map(|c| c.region.as_str()).unwrap_or(""),
                        cc.map(|c| c.name.as_str()).unwrap_or("")
                    ),
                );
            }
            st.tried.push("aws");
            return match signer.credentials() {
                Ok((user, password)) => Cred::userpass_plaintext(&user, &password),
                Err(e) => fail(&mut st, e.to_string()),
            };
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            let (Some(user), Some(pass)) = (&self.source.username, &self.source.password) else {
                return fail(
                    &mut st,
                    "the server asks for a username and password; set source.username and source.password".into(),
                );
            };
            if st.tried.contains(&"password") {
                return fail(
                    &mut st,
                    format!("the server rejected source.username {user:?} and source.password"),
                );
            }
            st.tried.push("password");
            return Cred::userpass_plaintext(user, pass.expose());
        }
        if allowed.contains(CredentialType::SSH_KEY) || allowed.contains(CredentialType::SSH_MEMORY)
        {
            let Some(key) = &self.source.private_key else {
                return fail(
                    &mut st,
                    format!(
                        "the SSH server wants a key for user {:?}; set source.private_key",
                        self.ssh_user
                    ),
                );
            };
            if st.tried.contains(&"key") {
                return fail(
                    &mut st,
                    format!(
                        "the SSH server rejected source.private_key for user {:?}",
                        self.ssh_user
                    ),
                );
            }
            st.tried.push("key");
            let passphrase = self
                .source
                .private_key_passphrase
                .as_ref()
                .map(|p| p.expose());
            // The key stays in memory: libssh2 reads it from this buffer.
            return match Cred::ssh_key_from_memory(&self.ssh_user, None, key.expose(), passphrase) {
                Ok(c) => Ok(c),
                Err(e) => fail(
                    &mut st,
                    format!(
                        "source.private_key could not be used ({}); is it a valid key, and is private_key_passphrase right?",
                        e.message()
                    ),
                ),
            };
        }
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(&self.ssh_user);
        }
        fail(
            &mut st,
            "the server asks for a kind of authentication pool-resource does not offer".into(),
        )
    }

    fn proxy_options(&self) -> ProxyOptions<'_> {
        let mut p = ProxyOptions::new();
        match &self.source.git.http_proxy {
            Some(url) => {
                p.url(url);
            }
            None => {
                p.auto();
            }
        }
        p
    }

    fn classify(&self, e: git2::Error, state: &CallState, what: &str) -> Error {
        let uri = self.display.clone();
        if let Some(TunnelError::ProxyAuth(detail)) =
            self.tunnel.as_ref().and_then(|t| t.last_error())
        {
            return Error::Auth { uri, detail };
        }
        if let Some(detail) = &state.auth_failure {
            return Error::Auth {
                uri,
                detail: detail.clone(),
            };
        }
        if let Some(detail) = &state.identity_failure {
            return Error::Identity {
                uri,
                detail: detail.clone(),
            };
        }
        if state.interrupted || self.interrupt.stops_transfers() {
            return Error::Interrupted {
                signal: self.interrupt.received().unwrap_or("a signal"),
                doing: what.to_string(),
            };
        }
        let msg = self.log.redact(e.message());
        let tunnel_note = match self.tunnel.as_ref().and_then(|t| t.last_error()) {
            Some(TunnelError::Other(d)) => format!(" ({d})"),
            _ => String::new(),
        };
        // The cause keeps libgit2's class and code, with the message
        // scrubbed of secrets and the tunnel's own complaint added.
        let cause = git2::Error::new(e.code(), e.class(), format!("{msg}{tunnel_note}"));
        match Kind::of(&e) {
            Kind::Identity => Error::Identity {
                uri,
                detail: format!("{msg} (set source.skip_ssl_verification, or provide the CA via git_config http.sslCAInfo)"),
            },
            // libssh2 reads the key only while authenticating.
            Kind::KeyUnusable => Error::Auth {
                uri,
                detail: format!(
                    "source.private_key could not be used ({msg}); is it a valid key, and is private_key_passphrase right?"
                ),
            },
            Kind::Auth => Error::Auth { uri, detail: msg },
            Kind::Spurious => Error::Network {
                what: what.to_string(),
                uri,
                source: Cause(Box::new(cause)),
            },
            Kind::Permanent => Error::Git {
                what: format!("{what} ({uri})"),
                source: cause,
            },
        }
    }

    /// Fetches `refspecs` into `repo` (`depth` 0 keeps the repository's
    /// current shallowness) and returns what the server advertised for
    /// `refs/heads/<branch>`.
    pub fn fetch(
        &self,
        repo: &Repository,
        refspecs: &[&str],
        depth: i32,
        what: &str,
    ) -> Result<Option<Oid>> {
        let state = RefCell::new(CallState::default());
        let result = (|| {
            let mut remote = repo.remote_anonymous(&self.url)?;
            let mut fo = FetchOptions::new();
            fo.remote_callbacks(self.callbacks(&state))
                .proxy_options(self.proxy_options())
                .download_tags(AutotagOption::None)
                .update_fetchhead(false);
            if depth > 0 {
                fo.depth(depth);
            }
            remote.fetch(refspecs, Some(&mut fo), None)?;
            Ok(self.advertised_tip(remote.list()?))
        })();
        result.map_err(|e: git2::Error| self.classify(e, &state.borrow(), what))
    }

    /// The branch's id among the refs a server advertised.
    fn advertised_tip(&self, heads: &[git2::RemoteHead<'_>]) -> Option<Oid> {
        let head = format!("refs/heads/{}", self.source.branch);
        heads.iter().find(|h| h.name() == head).map(|h| h.oid())
    }

    /// The branch tip the server advertises: connects and reads the ref
    /// list like `git ls-remote`, fetching nothing.
    pub fn list_tip(&self, repo: &Repository, what: &str) -> Result<Option<Oid>> {
        self.advertised(repo, what, |heads| self.advertised_tip(heads))
    }

    /// The branch names the server advertises (`refs/heads/*`), as
    /// `git ls-remote --heads` lists them: for the hint of a branch that
    /// does not exist.
    pub fn list_branches(&self, repo: &Repository, what: &str) -> Result<Vec<String>> {
        self.advertised(repo, what, |heads| {
            heads
                .iter()
                .filter_map(|h| h.name().strip_prefix("refs/heads/").map(String::from))
                .collect()
        })
    }

    /// Connects for a fetch and hands `read` the refs the server
    /// advertises, fetching nothing.
    fn advertised<T>(
        &self,
        repo: &Repository,
        what: &str,
        read: impl FnOnce(&[git2::RemoteHead<'_>]) -> T,
    ) -> Result<T> {
        let state = RefCell::new(CallState::default());
        let result = (|| {
            let mut remote = repo.remote_anonymous(&self.url)?;
            let conn = remote.connect_auth(
                git2::Direction::Fetch,
                Some(self.callbacks(&state)),
                Some(self.proxy_options()),
            )?;
            Ok(read(conn.list()?))
        })();
        result.map_err(|e: git2::Error| self.classify(e, &state.borrow(), what))
    }

    /// Pushes `local_ref` (commit `new`) to the branch, only if the remote branch is still at
    /// `expected_old` (checked in the push negotiation, and by the server's
    /// fast-forward rule).
    pub fn push(
        &self,
        repo: &Repository,
        local_ref: &str,
        new: Oid,
        expected_old: Oid,
    ) -> Result<CommitOutcome> {
        let state = RefCell::new(CallState::default());
        let dst = format!("refs/heads/{}", self.source.branch);
        let result = (|| {
            let mut remote = repo.remote_anonymous(&self.url)?;
            let mut cb = self.callbacks(&state);
            cb.push_negotiation(|updates| {
                for u in updates {
                    if u.dst_refname().ok() == Some(dst.as_str()) && u.src() != expected_old {
                        // Someone moved the branch (or it already holds a
                        // commit identical to ours): a lost race either way.
                        state.borrow_mut().raced = true;
                        return Err(git2::Error::from_str(RACE_MARKER));
                    }
                }
                Ok(())
            });
            cb.push_update_reference(|_refname, status| {
                if let Some(msg) = status {
                    state.borrow_mut().rejected = Some(msg.to_string());
                }
                Ok(())
            });
            let mut po = PushOptions::new();
            po.remote_callbacks(cb).proxy_options(self.proxy_options());
            remote.push(&[format!("{local_ref}:{dst}").as_str()], Some(&mut po))
        })();
        let st = state.borrow();
        if st.raced {
            return Ok(CommitOutcome::LostRace);
        }
        match result {
            Err(e) => Err(self.classify(e, &st, "pushing the lock change")),
            Ok(()) => Ok(match &st.rejected {
                Some(msg) => CommitOutcome::Rejected(msg.clone()),
                None => CommitOutcome::Committed(new.into()),
            }),
        }
    }
}

/// What a libgit2 failure of a network operation means for the put, read
/// from its class and code as cargo's `maybe_spurious` does. The message
/// is read only where libgit2 has no code for the case: the HTTP status
/// of a smart-HTTP reply, libssh2's words for a key it cannot decode or a
/// session it could not authenticate, and a server's "no such repository".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The server's identity could not be verified (TLS).
    Identity,
    /// `source.private_key` could not be read (bad key or passphrase).
    KeyUnusable,
    /// The server refused the credentials.
    Auth,
    /// The network or the server failed; worth retrying.
    Spurious,
    /// Anything else, such as a repository that does not exist.
    Permanent,
}

impl Kind {
    fn of(e: &git2::Error) -> Kind {
        let lower = e.message().to_ascii_lowercase();
        let http_status = |prefix: &str| {
            e.class() == ErrorClass::Http && lower.contains(&format!("status code: {prefix}"))
        };
        if e.code() == ErrorCode::Certificate || e.class() == ErrorClass::Ssl {
            return Kind::Identity;
        }
        if e.class() == ErrorClass::Ssh
            && (lower.contains("unable to extract public key")
                || lower.contains("unable to decrypt"))
        {
            return Kind::KeyUnusable;
        }
        if e.code() == ErrorCode::Auth
            || http_status("401")
            || http_status("403")
            || (e.class() == ErrorClass::Ssh && lower.contains("authenticat"))
        {
            return Kind::Auth;
        }
        let not_found = e.code() == ErrorCode::NotFound
            || http_status("404")
            || lower.contains("does not appear to be a git repository")
            || lower.contains("repository not exported")
            || lower.contains("no such file");
        // An SSH error that is not about the key or the credentials (both
        // handled above) is the connection failing: retry it.
        let spurious = matches!(
            e.class(),
            ErrorClass::Net
                | ErrorClass::Os
                | ErrorClass::Zlib
                | ErrorClass::Ssh
                | ErrorClass::Http
        ) || e.code() == ErrorCode::Eof;
        if (spurious && !not_found) || http_status("5") {
            Kind::Spurious
        } else {
            Kind::Permanent
        }
    }
}

#[cfg(test)]
mod kind_tests {
    use super::*;

    fn kind(code: ErrorCode, class: ErrorClass, msg: &str) -> Kind {
        Kind::of(&git2::Error::new(code, class, msg))
    }

    #[test]
    fn network_failures_are_spurious_and_missing_repositories_are_not() {
        use ErrorClass::*;
        use ErrorCode::GenericError as G;
        assert_eq!(
            kind(G, Net, "could not read from socket: timed out"),
            Kind::Spurious
        );
        assert_eq!(
            kind(G, Os, "failed to connect to 127.0.0.1: Connection refused"),
            Kind::Spurious
        );
        assert_eq!(kind(ErrorCode::Eof, Net, "early EOF"), Kind::Spurious);
        assert_eq!(kind(G, Ssh, "Failed getting banner"), Kind::Spurious);
        assert_eq!(
            kind(G, Http, "unexpected http status code: 502"),
            Kind::Spurious
        );
        assert_eq!(
            kind(G, Http, "unexpected http status code: 404"),
            Kind::Permanent
        );
        assert_eq!(
            kind(G, Net, "remote error: repository not exported: /x"),
            Kind::Permanent
        );
        assert_eq!(kind(G, Object, "object not found"), Kind::Permanent);
    }

    #[test]
    fn credentials_and_identity_are_never_retried() {
        use ErrorClass::*;
        use ErrorCode::GenericError as G;
        assert_eq!(
            kind(
                ErrorCode::Certificate,
                Net,
                "the SSL certificate is invalid"
            ),
            Kind::Identity
        );
        assert_eq!(kind(G, Ssl, "SSL error: handshake failed"), Kind::Identity);
        assert_eq!(
            kind(
                ErrorCode::Auth,
                Http,
                "too many redirects or authentication replays"
            ),
            Kind::Auth
        );
        assert_eq!(
            kind(G, Http, "unexpected http status code: 403"),
            Kind::Auth
        );
        assert_eq!(kind(G, Ssh, "Failed to authenticate SSH session: Unable to extract public key from private key file"), Kind::KeyUnusable);
        assert_eq!(
            kind(
                G,
                Ssh,
                "failed to authenticate SSH session: Callback returned error"
            ),
            Kind::Auth
        );
    }
}
