//! An EC2 instance metadata service (IMDSv2) stand-in that hands out
//! rotating instance-profile credentials.
//!
//! It speaks the real protocol the AWS SDK's IMDS client uses: `PUT
//! /latest/api/token` with `x-aws-ec2-metadata-token-ttl-seconds` returns a
//! session token, and every `GET` must carry it in
//! `x-aws-ec2-metadata-token` (else 401). Credentials come from
//! `/latest/meta-data/iam/security-credentials/ROLE` as the JSON document
//! EC2 serves. Every key pair handed out is recorded in a [`Keyring`], which
//! the CodeCommit stand-ins consult to accept any issued, unexpired key,
//! the way IAM would. Point the resource at it with
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT=`[`Imds::endpoint`].

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::net::{read_head, Head, Server};

/// One key pair as IAM knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedKey {
    /// `ASIA...` for session credentials.
    pub access_key_id: String,
    /// The real secret: what signatures must be made with.
    pub secret_access_key: String,
    /// The session token; `None` for a long-term (static) key.
    pub token: Option<String>,
    /// After this the key is refused.
    pub expires: SystemTime,
    /// Which rotation of the instance profile issued it (0 for static keys).
    pub generation: usize,
}

/// Every key IAM would accept: what an [`Imds`] issued plus static test keys.
/// Cloning shares the same set.
#[derive(Clone, Default)]
pub struct Keyring(Arc<Mutex<Vec<IssuedKey>>>);

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// Records `key`.
    pub fn add(&self, key: IssuedKey) {
        self.0.lock().expect("keyring lock").push(key);
    }

    /// Adds a long-term key valid for a day, as `AWS_ACCESS_KEY_ID` would name.
    pub fn add_static(&self, access_key_id: &str, secret: &str) {
        self.add(IssuedKey {
            access_key_id: access_key_id.into(),
            secret_access_key: secret.into(),
            token: None,
            expires: SystemTime::now() + Duration::from_secs(86_400),
            generation: 0,
        });
    }

    /// The key with this access key id, expired or not.
    pub fn find(&self, access_key_id: &str) -> Option<IssuedKey> {
        self.0
            .lock()
            .expect("keyring lock")
            .iter()
            .find(|k| k.access_key_id == access_key_id)
            .cloned()
    }

    /// Every key, in the order issued.
    pub fn all(&self) -> Vec<IssuedKey> {
        self.0.lock().expect("keyring lock").clone()
    }
}

/// How an [`Imds`] behaves.
#[derive(Clone, Debug)]
pub struct ImdsOptions {
    /// How long each key pair is valid; a new pair is handed out once half
    /// of this is gone. The default, 4 minutes, is shorter than the
    /// resource's 5-minute refresh margin, so the resource must fetch
    /// credentials again for every connection.
    pub lifetime: Duration,
    /// A new key pair every this many credential fetches; 0 rotates only on
    /// [`Imds::rotate`].
    pub rotate_every: usize,
    /// Serve a `SecretAccessKey` that differs from the one recorded in the
    /// keyring, as if the role's keys had been revoked: every signature the
    /// client makes is then wrong.
    pub wrong_secret: bool,
    /// The instance profile's role name.
    pub role: String,
    /// What `/latest/meta-data/placement/region` says.
    pub region: String,
}

impl Default for ImdsOptions {
    fn default() -> Self {
        ImdsOptions {
            lifetime: Duration::from_secs(240),
            rotate_every: 1,
            wrong_secret: false,
            role: "pool-resource-ci".into(),
            region: "eu-west-2".into(),
        }
    }
}

/// A running IMDSv2 stand-in on 127.0.0.1; dropping it stops it.
pub struct Imds {
    server: Server,
    state: Arc<State>,
}

struct State {
    opts: ImdsOptions,
    keyring: Keyring,
    /// Session tokens handed out by `PUT /latest/api/token`.
    tokens: Mutex<Vec<String>>,
    /// The key pair currently served, and how many fetches it has served.
    current: Mutex<Option<(Served, usize)>>,
    generation: Mutex<usize>,
    force_rotation: AtomicBool,
    /// `METHOD path -> status`, in order.
    requests: Mutex<Vec<(String, String, u16)>>,
    /// Everything secret that went over the wire, for leak checks.
    secrets: Mutex<Vec<String>>,
}

/// What the credentials document says (the secret may be wrong on purpose).
#[derive(Clone)]
struct Served {
    access_key_id: String,
    secret_access_key: String,
    token: String,
    expires: SystemTime,
}

impl Imds {
    /// Starts serving on a free port of 127.0.0.1; issued keys go into `keyring`.
    pub fn start(opts: ImdsOptions, keyring: Keyring) -> Imds {
        let state = Arc::new(State {
            opts,
            keyring,
            tokens: Mutex::default(),
            current: Mutex::default(),
            generation: Mutex::new(0),
            force_rotation: AtomicBool::new(false),
            requests: Mutex::default(),
            secrets: Mutex::default(),
        });
        let server = {
            let state = Arc::clone(&state);
            Server::start(move |stream, _| {
                let _ = serve(stream, &state);
            })
        };
        Imds { server, state }
    }

    /// `http://127.0.0.1:PORT`, for `AWS_EC2_METADATA_SERVICE_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port())
    }

    /// The keyring issued keys are recorded in.
    pub fn keyring(&self) -> Keyring {
        self.state.keyring.clone()
    }

    /// Makes the next credentials fetch hand out a new key pair.
    pub fn rotate(&self) {
        self.state.force_rotation.store(true, Ordering::SeqCst);
    }

    /// How many key pairs have been issued.
    pub fn generations(&self) -> usize {
        *self.state.generation.lock().expect("generation lock")
    }

    /// Every request, as `(method, path, status)`, in order.
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        self.state.requests.lock().expect("requests lock").clone()
    }

    /// How many requests for `path` were answered with 200.
    pub fn served(&self, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|(_, p, status)| p == path && *status == 200)
            .count()
    }

    /// How many credentials documents were served.
    pub fn credential_fetches(&self) -> usize {
        let path = format!(
            "/latest/meta-data/iam/security-credentials/{}",
            self.state.opts.role
        );
        self.served(&path)
    }

    /// Every secret this server handed out: session tokens of IMDS itself,
    /// access key ids, secret keys (real and served) and session tokens.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = self.state.secrets.lock().expect("secrets lock").clone();
        out.extend(self.state.tokens.lock().expect("tokens lock").clone());
        out
    }
}

fn serve(stream: TcpStream, state: &State) -> io::Result<()> {
    let mut conn = BufReader::new(stream);
    while let Some(head) = read_head(&mut conn)? {
        skip_body(&mut conn, &head)?;
        let (status, body, extra) = answer(&head, state);
        let path = head.target.split('?').next().unwrap_or("").to_string();
        state
            .requests
            .lock()
            .expect("requests lock")
            .push((head.method.clone(), path, status));
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            _ => "Method Not Allowed",
        };
        let keep_alive = head.keep_alive();
        let mut response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nServer: EC2ws\r\n",
            body.len()
        );
        for (name, value) in extra {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        if !keep_alive {
            response.push_str("Connection: close\r\n");
        }
        response.push_str("\r\n");
        response.push_str(&body);
        conn.get_mut().write_all(response.as_bytes())?;
        conn.get_mut().flush()?;
        if !keep_alive {
            break;
        }
    }
    Ok(())
}

fn skip_body(conn: &mut impl BufRead, head: &Head) -> io::Result<()> {
    let length: u64 = head
        .header("content-length")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    io::copy(&mut conn.take(length), &mut io::sink())?;
    Ok(())
}

/// Status, body and extra headers for one request.
fn answer(head: &Head, state: &State) -> (u16, String, Vec<(&'static str, String)>) {
    let path = head.target.split('?').next().unwrap_or("");
    if head.method == "PUT" {
        if path != "/latest/api/token" {
            return (405, String::new(), vec![]);
        }
        let Some(ttl) = head
            .header("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|t| t.trim().parse::<u64>().ok())
            .filter(|t| (1..=21_600).contains(t))
        else {
            return (400, String::new(), vec![]);
        };
        let token = format!("AQAEA{}==", random_string(48, ALNUM));
        state
            .tokens
            .lock()
            .expect("tokens lock")
            .push(token.clone());
        return (
            200,
            token,
            vec![("x-aws-ec2-metadata-token-ttl-seconds", ttl.to_string())],
        );
    }
    if head.method != "GET" {
        return (405, String::new(), vec![]);
    }
    let valid_token = head.header("x-aws-ec2-metadata-token").is_some_and(|t| {
        state
            .tokens
            .lock()
            .expect("tokens lock")
            .iter()
            .any(|k| k == t)
    });
    if !valid_token {
        return (401, String::new(), vec![]);
    }
    let role_path = format!(
        "/latest/meta-data/iam/security-credentials/{}",
        state.opts.role
    );
    match path {
        "/latest/meta-data/iam/security-credentials/"
        | "/latest/meta-data/iam/security-credentials" => (200, state.opts.role.clone(), vec![]),
        "/latest/meta-data/placement/region" => (200, state.opts.region.clone(), vec![]),
        p if p == role_path => (200, credentials_document(state), vec![]),
        _ => (404, String::new(), vec![]),
    }
}

/// The credentials JSON, rotating the key pair as configured.
fn credentials_document(state: &State) -> String {
    let now = SystemTime::now();
    let mut current = state.current.lock().expect("current lock");
    let forced = state.force_rotation.swap(false, Ordering::SeqCst);
    let stale = match &*current {
        None => true,
        Some((served, uses)) => {
            // Like EC2, hand out a new pair well before the old one expires
            // (here: once half its lifetime is gone), so a client that
            // signs right after fetching never holds a key about to die.
            forced
                || served.expires <= now + state.opts.lifetime / 2
                || (state.opts.rotate_every > 0 && *uses >= state.opts.rotate_every)
        }
    };
    if stale {
        let mut generation = state.generation.lock().expect("generation lock");
        *generation += 1;
        let key = IssuedKey {
            access_key_id: format!("ASIA{}", random_string(16, UPPER_DIGITS)),
            secret_access_key: random_string(40, BASE64ISH),
            token: Some(format!(
                "IQoJb3JpZ2luX2VjE{}",
                random_string(120, BASE64ISH)
            )),
            expires: now + state.opts.lifetime,
            generation: *generation,
        };
        let served_secret = if state.opts.wrong_secret {
            random_string(40, BASE64ISH)
        } else {
            key.secret_access_key.clone()
        };
        state.secrets.lock().expect("secrets lock").extend([
            key.access_key_id.clone(),
            key.secret_access_key.clone(),
            served_secret.clone(),
            key.token.clone().unwrap_or_default(),
        ]);
        *current = Some((
            Served {
                access_key_id: key.access_key_id.clone(),
                secret_access_key: served_secret,
                token: key.token.clone().unwrap_or_default(),
                expires: key.expires,
            },
            0,
        ));
        state.keyring.add(key);
    }
    let (served, uses) = current.as_mut().expect("a key pair is current");
    *uses += 1;
    serde_json::json!({
        "Code": "Success",
        "LastUpdated": rfc3339(now),
        "Type": "AWS-HMAC",
        "AccessKeyId": served.access_key_id,
        "SecretAccessKey": served.secret_access_key,
        "Token": served.token,
        "Expiration": rfc3339(served.expires),
    })
    .to_string()
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Real secret keys and session tokens contain `+` and `/`.
const BASE64ISH: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `len` random characters from `alphabet`.
pub(crate) fn random_string(len: usize, alphabet: &[u8]) -> String {
    (0..len)
        .map(|_| char::from(alphabet[fastrand::usize(..alphabet.len())]))
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SSZ`: the library's own formatter.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    pool_resource::model::duration::utc(secs as i64)
}

/// Request counts by path, for messages.
pub fn summarize(requests: &[(String, String, u16)]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for (method, path, status) in requests {
        *out.entry(format!("{method} {path} {status}")).or_default() += 1;
    }
    out
}

/// Sends one HTTP/1.1 request to 127.0.0.1:`port` on a new connection and
/// returns the status, the headers (names lowercased) and the body; for the
/// stand-ins' own tests.
#[cfg(test)]
pub(crate) fn raw_http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("sending");
    stream.write_all(body).expect("sending the body");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("reading the reply");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, response[split + 4..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imds_requires_a_session_token_and_serves_rotating_credentials() {
        let imds = Imds::start(ImdsOptions::default(), Keyring::new());
        let port = imds.server.port();
        let creds_path = "/latest/meta-data/iam/security-credentials/pool-resource-ci";
        assert_eq!(raw_http(port, "PUT", "/latest/api/token", &[], b"").0, 400);
        assert_eq!(raw_http(port, "GET", creds_path, &[], b"").0, 401);
        let (status, headers, token) = raw_http(
            port,
            "PUT",
            "/latest/api/token",
            &[("x-aws-ec2-metadata-token-ttl-seconds", "60")],
            b"",
        );
        assert_eq!(status, 200);
        assert!(headers
            .iter()
            .any(|(n, v)| n == "x-aws-ec2-metadata-token-ttl-seconds" && v == "60"));
        let token = String::from_utf8(token).unwrap();
        let get = |path: &str| {
            let (status, _, body) = raw_http(
                port,
                "GET",
                path,
                &[("x-aws-ec2-metadata-token", &token)],
                b"",
            );
            (status, String::from_utf8(body).unwrap())
        };
        assert_eq!(
            get("/latest/meta-data/iam/security-credentials/"),
            (200, "pool-resource-ci".to_string())
        );
        assert_eq!(
            get("/latest/meta-data/placement/region"),
            (200, "eu-west-2".to_string())
        );
        let first: serde_json::Value = serde_json::from_str(&get(creds_path).1).unwrap();
        let second: serde_json::Value = serde_json::from_str(&get(creds_path).1).unwrap();
        assert_eq!(first["Code"], "Success");
        assert_eq!(first["Type"], "AWS-HMAC");
        assert_ne!(first["AccessKeyId"], second["AccessKeyId"], "rotated");
        let keys = imds.keyring().all();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].access_key_id, first["AccessKeyId"]);
        assert_eq!(keys[0].secret_access_key, first["SecretAccessKey"]);
        assert_eq!(keys[0].token.as_deref(), first["Token"].as_str());
        assert_eq!(
            first["Expiration"].as_str().unwrap(),
            rfc3339(keys[0].expires)
        );
        assert_eq!(imds.credential_fetches(), 2);
        assert_eq!(get("/latest/meta-data/nothing-here").0, 404);
    }

    #[test]
    fn expirations_are_rfc3339() {
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_514_116_400)),
            "2017-12-24T11:53:20Z"
        );
    }
}
