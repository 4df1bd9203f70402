//! Hostile input. A table of bad requests for `check`, `in` and `out`: each
//! must exit 1 with an `error:` line that names the problem, never panic,
//! end within [`DEADLINE`], print nothing on stdout, and never run what a
//! value smuggles in (a marker file that shell metacharacters would create
//! must never appear). Then the inputs that are odd but valid: binary lock
//! metadata, and credentials embedded in the URI.

use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::run::spawn_raw;
use crate::support::{Bg, HttpGitServer, HttpOptions, LockRepo, Run};
use crate::{lock_name, source, version, Inputs};

/// The code the fuzz targets run (see fuzz/README.md), compiled here too so
/// that it keeps compiling, and run over the checked-in seeds.
#[path = "../fuzz/src/lib.rs"]
mod fuzz_targets;

/// Longer than any of these runs should take: one still going is a hang.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

const POOL: &str = "p";

/// The most a failed step may write to the build log: a value of megabytes
/// must not be quoted whole.
const MAX_STDERR: usize = 64 * 1024;

/// Runs executable `name` like [`spawn_raw`]; kills it and fails if it is
/// still running after [`DEADLINE`].
pub(crate) fn run_bounded(name: &str, args: &[&Path], stdin: &[u8], env: &[(&str, &str)]) -> Run {
    let (child, command) = spawn_raw(name, args, stdin, env);
    Bg::new(child, command, DEADLINE).finish()
}

/// At most 300 characters of `text`, for messages.
fn shorten(text: &str) -> String {
    let count = text.chars().count();
    if count <= 300 {
        return text.to_owned();
    }
    let head: String = text.chars().take(300).collect();
    format!("{head}... ({count} characters)")
}

/// `text` without ANSI colour sequences.
pub(crate) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // ESC [ parameters final-letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The report from the first line starting `error:` to the end of stderr.
pub(crate) fn error_report(stderr: &str) -> Option<String> {
    let plain = strip_ansi(stderr);
    let start = plain.lines().position(|l| l.starts_with("error: "))?;
    Some(plain.lines().skip(start).collect::<Vec<_>>().join("\n"))
}

/// What the command line of a row looks like.
#[derive(Clone, Copy)]
enum Args {
    /// `check`, `in DEST`, `out SRC`.
    Usual,
    /// No argument at all.
    Missing,
    /// One argument too many.
    Extra,
}

/// One bad request and the words its error must contain.
struct Row {
    what: String,
    bin: &'static str,
    args: Args,
    stdin: Vec<u8>,
    expect: String,
    /// The most this row may write to stderr.
    max_stderr: usize,
}

impl Row {
    /// Exempts the row from [`MAX_STDERR`]: its error quotes the whole value
    /// (see `huge_values_are_never_quoted_whole`).
    fn floods(mut self) -> Row {
        self.max_stderr = usize::MAX;
        self
    }
}

fn raw(what: &str, bin: &'static str, stdin: impl Into<Vec<u8>>, expect: &str) -> Row {
    Row {
        what: what.into(),
        bin,
        args: Args::Usual,
        stdin: stdin.into(),
        expect: expect.into(),
        max_stderr: MAX_STDERR,
    }
}

fn req(what: &str, bin: &'static str, request: Value, expect: &str) -> Row {
    raw(what, bin, request.to_string(), expect)
}

/// A lock repository (pool `p`: `a` unclaimed, `b` claimed), the build's
/// inputs with one directory per kind of bad put input, and private HOME,
/// TMPDIR and marker directories.
struct Fixture {
    repo: LockRepo,
    http: HttpGitServer,
    inputs: Inputs,
    dest: TempDir,
    home: TempDir,
    marker: TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let repo = LockRepo::new("main");
        repo.add_lock(POOL, "a", false, b"a-meta\n");
        repo.add_lock(POOL, "b", true, b"b-meta\n");
        let http = HttpGitServer::start(repo.root(), HttpOptions::default());
        let inputs = Inputs::new();
        inputs.lock("ok", "new-lock", b"meta");
        inputs.lock("exists", "a", b"meta");
        let write = |dir: &str, file: &str, bytes: &[u8]| {
            let d = inputs.path().join(dir);
            std::fs::create_dir_all(&d).expect("creating an input dir");
            std::fs::write(d.join(file), bytes).expect("writing an input file");
        };
        write("no-name", "metadata", b"meta");
        write("no-meta", "name", b"new-lock\n");
        std::fs::write(inputs.path().join("is-a-file"), b"name\n").expect("writing a file");
        std::fs::create_dir_all(inputs.path().join("name-is-dir/name")).expect("mkdir");
        write("bad-utf8", "name", b"\xff\xfe\n");
        for (dir, name) in [
            ("slash", "a/b"),
            ("dotdot", ".."),
            ("dot", ".hidden"),
            ("nul", "a\0b"),
            ("newline", "a\nb"),
            ("ctrl", "a\x1b[31mb"),
            ("empty", ""),
            ("blank", "  \t "),
        ] {
            inputs.lock(dir, name, b"meta");
        }
        inputs.lock("long", &"x".repeat(5 << 20), b"meta");
        let home = TempDir::new().expect("creating HOME");
        Fixture {
            repo,
            http,
            inputs,
            dest: TempDir::new().expect("creating DEST"),
            home,
            marker: TempDir::new().expect("creating the marker dir"),
        }
    }

    /// A valid source for the local repository.
    fn src(&self) -> Value {
        source(&self.repo.path().display().to_string(), "main", POOL)
    }

    /// [`Fixture::src`] with `field` set to `value`.
    fn src_with(&self, field: &str, value: Value) -> Value {
        let mut s = self.src();
        s[field] = value;
        s
    }

    /// `{"source": src_with(field, value)}`.
    fn source_row(&self, bin: &'static str, field: &str, value: Value, expect: &str) -> Row {
        req(
            &format!("{bin}: source.{field} = {}", shorten(&value.to_string())),
            bin,
            json!({"source": self.src_with(field, value), "version": {"ref": self.repo.tip()}}),
            expect,
        )
    }

    /// An `out` with `params`.
    fn out_row(&self, params: Value, expect: &str) -> Row {
        req(
            &format!("out: params {}", shorten(&params.to_string())),
            "out",
            json!({"source": self.src(), "params": params}),
            expect,
        )
    }

    /// An `in` of the tip with `params`.
    fn in_row(&self, params: Value, expect: &str) -> Row {
        req(
            &format!("in: params {}", shorten(&params.to_string())),
            "in",
            json!({"source": self.src(), "params": params, "version": {"ref": self.repo.tip()}}),
            expect,
        )
    }

    /// A `check` or `in` with `version`.
    fn version_row(&self, bin: &'static str, version: Value, expect: &str) -> Row {
        req(
            &format!("{bin}: version {}", shorten(&version.to_string())),
            bin,
            json!({"source": self.src(), "version": version}),
            expect,
        )
    }

    /// A shell command that would leave a trace if anything ran it.
    fn touch(&self, name: &str) -> String {
        format!("touch {}", self.marker.path().join(name).display())
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let home = self.home.path().display().to_string();
        let missing = |name: &str| self.home.path().join(name).display().to_string();
        vec![
            ("HOME", home.clone()),
            ("TMPDIR", home),
            ("POOL_RESOURCE_BACKOFF_BASE_MS", "5".into()),
            // A CodeCommit URI without a region asks the AWS region chain:
            // never the machine's profile or instance metadata.
            ("AWS_CONFIG_FILE", missing("no-aws-config")),
            ("AWS_SHARED_CREDENTIALS_FILE", missing("no-aws-credentials")),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Runs one row and says what is wrong with the outcome, if anything.
    fn check_row(&self, row: &Row) -> Result<(), String> {
        let dir = match row.bin {
            "in" => self.dest.path(),
            _ => self.inputs.path(),
        };
        let args: Vec<&Path> = match (row.args, row.bin) {
            (Args::Usual, "check") | (Args::Missing, _) => vec![],
            (Args::Usual, _) => vec![dir],
            (Args::Extra, _) => vec![dir, dir],
        };
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let run = run_bounded(row.bin, &args, &row.stdin, &env);
        let shown = || {
            format!(
                "\n    command: {}\n    status: {}\n    stdout: {}\n    stderr: {}",
                shorten(&run.command),
                run.status,
                shorten(&run.stdout),
                shorten(&run.stderr)
            )
        };
        let markers: Vec<_> = std::fs::read_dir(self.marker.path())
            .expect("reading the marker dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        if !markers.is_empty() {
            return Err(format!("a value was executed: {markers:?}{}", shown()));
        }
        if run.stderr.contains("panicked") {
            return Err(format!("panicked{}", shown()));
        }
        if run.status.code() != Some(1) {
            return Err(format!("expected exit 1{}", shown()));
        }
        if run.stderr.len() > row.max_stderr {
            return Err(format!("{} bytes on stderr{}", run.stderr.len(), shown()));
        }
        if !run.stdout.is_empty() {
            return Err(format!("printed on stdout{}", shown()));
        }
        let Some(report) = error_report(&run.stderr) else {
            return Err(format!("no line starts with `error: `{}", shown()));
        };
        if !report.contains(&row.expect) {
            return Err(format!(
                "the error does not say {:?}{}",
                row.expect,
                shown()
            ));
        }
        Ok(())
    }

    /// Runs every row, then fails listing each row that went wrong.
    fn run_table(&self, rows: Vec<Row>) {
        let start = Instant::now();
        let failures: Vec<String> = rows
            .iter()
            .filter_map(|row| {
                self.check_row(row)
                    .err()
                    .map(|e| format!("{}: {e}", row.what))
            })
            .collect();
        eprintln!("{} rows in {:?}", rows.len(), start.elapsed());
        assert!(
            failures.is_empty(),
            "{} of {} rows failed:\n\n{}",
            failures.len(),
            rows.len(),
            failures.join("\n\n")
        );
    }
}

/// `depth` arrays nested in one another: `[[[...]]]`.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn requests_that_are_not_one_json_object_are_refused() {
    let fx = Fixture::new();
    let valid = json!({"source": fx.src()}).to_string();
    let huge = format!(
        r#"{{"source": {}, "params": {{"padding": "{}"}}}}"#,
        fx.src(),
        "x".repeat(17 << 20)
    );
    fx.run_table(vec![
        raw("empty stdin", "check", "", "malformed JSON"),
        raw("an open brace", "in", "{", "malformed JSON"),
        raw(
            "truncated in a key",
            "out",
            r#"{"source": {"uri": "/x", "bra"#,
            "malformed JSON",
        ),
        raw(
            "truncated after a value",
            "check",
            &valid[..valid.len() - 1],
            "malformed JSON",
        ),
        raw(
            "trailing garbage",
            "check",
            format!("{valid} garbage"),
            "malformed JSON",
        ),
        raw(
            "two documents on two lines",
            "in",
            format!("{valid}\n{valid}"),
            "malformed JSON",
        ),
        raw(
            "two documents back to back",
            "out",
            format!("{valid}{valid}"),
            "malformed JSON",
        ),
        raw("a list", "check", "[]", "the request must be a JSON object"),
        raw("null", "in", "null", "the request must be a JSON object"),
        raw(
            "a string",
            "out",
            r#""acquire""#,
            "the request must be a JSON object",
        ),
        raw(
            "a number",
            "check",
            "42",
            "the request must be a JSON object",
        ),
        raw(
            "a boolean",
            "check",
            "true",
            "the request must be a JSON object",
        ),
        raw(
            "bytes that are not UTF-8",
            "check",
            &b"\xff\xfe"[..],
            "malformed JSON",
        ),
        raw(
            "a string that is not UTF-8",
            "in",
            &b"{\"source\": {\"uri\": \"\xff\xc0\"}}"[..],
            "malformed JSON",
        ),
        raw(
            "a NUL between tokens",
            "out",
            &b"{\"source\":\0{}}"[..],
            "malformed JSON",
        ),
        raw(
            "a byte-order mark",
            "check",
            format!("\u{feff}{valid}"),
            "malformed JSON",
        ),
        raw(
            "a lone surrogate escape",
            "check",
            r#"{"source": {"uri": "\ud800"}}"#,
            "malformed JSON",
        ),
        raw(
            "NaN",
            "check",
            r#"{"source": {"retry_delay": NaN}}"#,
            "malformed JSON",
        ),
        raw(
            "a number out of range",
            "check",
            r#"{"source": {"retry_delay": 1e400}}"#,
            "malformed JSON",
        ),
        raw(
            "a million nested lists",
            "check",
            nested(1_000_000),
            "malformed JSON",
        ),
        raw(
            "100 000 nested lists in a param",
            "out",
            format!(
                r#"{{"source": {}, "params": {{"acquire": {}}}}}"#,
                fx.src(),
                nested(100_000)
            ),
            "malformed JSON",
        ),
        raw(
            "100 000 nested objects in the version",
            "in",
            format!(
                r#"{{"source": {}, "version": {}{}}}"#,
                fx.src(),
                r#"{"a":"#.repeat(100_000),
                "}".repeat(100_000)
            ),
            "malformed JSON",
        ),
        raw("a 17 MiB request", "in", huge, "bytes (at most 16777216)"),
        req(
            "source is a string",
            "check",
            json!({"source": "uri"}),
            "source must be an object",
        ),
        req(
            "params is a list",
            "out",
            json!({"source": fx.src(), "params": [1]}),
            "params must be an object",
        ),
        req(
            "version is a string",
            "in",
            json!({"source": fx.src(), "version": "abc"}),
            "version must be an object",
        ),
        req(
            "version is a list",
            "check",
            json!({"source": fx.src(), "version": []}),
            "version must be an object",
        ),
    ]);
}

#[test]
fn wrong_arguments_are_usage_errors() {
    let fx = Fixture::new();
    let request = json!({"source": fx.src(), "params": {"acquire": true}}).to_string();
    let row = |bin, args, expect: &str| Row {
        what: format!("{bin} with the wrong arguments"),
        bin,
        args,
        stdin: request.clone().into_bytes(),
        expect: expect.into(),
        max_stderr: MAX_STDERR,
    };
    fx.run_table(vec![
        row("check", Args::Extra, "usage: check takes no arguments"),
        row("in", Args::Missing, "usage: in <DESTINATION directory>"),
        row("out", Args::Missing, "usage: out <SOURCES directory>"),
        row("out", Args::Extra, "usage: out <SOURCES directory>"),
    ]);
}

#[test]
fn missing_and_unknown_fields_are_named() {
    let fx = Fixture::new();
    let mut no_branch = fx.src();
    no_branch.as_object_mut().unwrap().remove("branch");
    let mut no_pool = fx.src();
    no_pool.as_object_mut().unwrap().remove("pool");
    fx.run_table(vec![
        req(
            "an empty request",
            "check",
            json!({}),
            "invalid payload (missing uri)\ninvalid payload (missing branch)\ninvalid payload (missing pool)",
        ),
        req(
            "no branch",
            "in",
            json!({"source": no_branch, "version": {"ref": fx.repo.tip()}}),
            "invalid payload (missing branch)",
        ),
        req(
            "no pool",
            "out",
            json!({"source": no_pool, "params": {"acquire": true}}),
            "invalid payload (missing pool)",
        ),
        fx.source_row("check", "uri", json!(""), "invalid payload (missing uri)"),
        fx.source_row("check", "uri", json!(null), "invalid payload (missing uri)"),
        fx.out_row(
            json!({}),
            "invalid payload (missing acquire, release, remove, claim, add, add_claimed, update, check, or check_unclaimed)",
        ),
        fx.out_row(json!({"acquire": false}), "invalid payload (missing acquire,"),
        fx.out_row(
            json!({"aquire": true}),
            "unknown field params.aquire (did you mean acquire?)",
        ),
        fx.out_row(
            json!({"relase": "ok"}),
            "unknown field params.relase (did you mean release?)",
        ),
        fx.out_row(
            json!({"add_clamed": "ok"}),
            "unknown field params.add_clamed (did you mean add_claimed?)",
        ),
        fx.out_row(
            json!({"acquire": true, "colour": "blue"}),
            "unknown field params.colour (known: acquire, release,",
        ),
        fx.out_row(
            json!({"acquire": true, "claim": "a"}),
            "a put takes exactly one action, but params has acquire and claim",
        ),
        fx.out_row(
            json!({"add": "ok", "remove": "ok", "update": "ok"}),
            "params has remove and add and update",
        ),
        fx.in_row(
            json!({"dept": 1}),
            "unknown field params.dept (did you mean depth?)",
        ),
        req(
            "check with params",
            "check",
            json!({"source": fx.src(), "params": {"depth": 1}}),
            "unknown field params.depth (this step takes no params)",
        ),
        req(
            "in without a version",
            "in",
            json!({"source": fx.src()}),
            "version.ref is required for in",
        ),
        fx.version_row("in", json!({"sha": fx.repo.tip()}), "version.ref is required for in"),
        fx.version_row("in", json!({"ref": ""}), "version.ref is required for in"),
    ]);
}

#[test]
fn wrong_types_name_the_field() {
    let fx = Fixture::new();
    let tunnel = |extra: Value| {
        let mut t = json!({"proxy_host": "127.0.0.1", "proxy_port": 3128});
        t.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        t
    };
    let s = |field, value, expect| fx.source_row("check", field, value, expect);
    fx.run_table(vec![
        s(
            "uri",
            json!(42),
            "source.uri must be a string, not a number",
        ),
        s(
            "branch",
            json!(["main"]),
            "source.branch must be a string, not a list",
        ),
        s(
            "pool",
            json!({"name": "p"}),
            "source.pool must be a string, not an object",
        ),
        s(
            "private_key",
            json!(1),
            "source.private_key must be a string",
        ),
        s(
            "private_key_user",
            json!(true),
            "source.private_key_user must be a string, not a boolean",
        ),
        s(
            "private_key_passphrase",
            json!([]),
            "source.private_key_passphrase must be a string",
        ),
        s(
            "forward_agent",
            json!("yes"),
            "source.forward_agent must be true or false, not a string",
        ),
        s("username", json!(7), "source.username must be a string"),
        s("password", json!(1234), "source.password must be a string"),
        s(
            "known_hosts",
            json!(1),
            "source.known_hosts must be a string",
        ),
        s(
            "skip_ssl_verification",
            json!("true"),
            "source.skip_ssl_verification must be true or false",
        ),
        s("aws_region", json!(1), "source.aws_region must be a string"),
        s("backend", json!(2), "source.backend must be a string"),
        s(
            "backend",
            json!("svn"),
            "source.backend \"svn\" is not a backend",
        ),
        s(
            "backend",
            json!("codecommit-api"),
            "source.backend codecommit-api needs a CodeCommit source.uri",
        ),
        s(
            "git_config",
            json!("user.name=x"),
            "source.git_config must be a list of {name, value}",
        ),
        s(
            "git_config",
            json!({"name": "user.name"}),
            "source.git_config must be a list",
        ),
        s(
            "git_config",
            json!([1]),
            "source.git_config[0] must be an object with name and value",
        ),
        s(
            "git_config",
            json!([{"value": "x"}]),
            "source.git_config[0].name is missing",
        ),
        s(
            "git_config",
            json!([{"name": 3, "value": "x"}]),
            "source.git_config[].name must be a string",
        ),
        s(
            "git_config",
            json!([{"name": "user.name", "value": ["x"]}]),
            "source.git_config[].value must be a string",
        ),
        s(
            "git_config",
            json!([{"name": "user.name", "value": "a\nb"}]),
            "source.git_config user.name contains a newline or NUL",
        ),
        s(
            "git_config",
            json!([{"name": "user.email", "value": "a\u{0}b"}]),
            "source.git_config user.email contains a newline or NUL",
        ),
        s(
            "git_config",
            json!([{"name": "http.sslVerify", "value": "maybe"}]),
            "source.git_config http.sslVerify must be true or false",
        ),
        s(
            "retry_delay",
            json!(true),
            "source.retry_delay must be a duration",
        ),
        s(
            "retry_delay",
            json!([]),
            "source.retry_delay must be a duration",
        ),
        s(
            "retry_delay",
            json!("soon"),
            "source.retry_delay: invalid duration",
        ),
        s(
            "retry_delay",
            json!("-1s"),
            "source.retry_delay: negative duration",
        ),
        s(
            "retry_delay",
            json!("10"),
            "source.retry_delay: invalid duration \"10\": missing unit",
        ),
        s("retry_delay", json!("1e3s"), "unknown unit"),
        s(
            "retry_delay",
            json!("1..5s"),
            "source.retry_delay: invalid duration",
        ),
        s(
            "retry_delay",
            json!("9999999999h"),
            "source.retry_delay: duration \"9999999999h\" is too large",
        ),
        s(
            "retry_delay",
            json!(-5),
            "source.retry_delay -5 is not a whole, non-negative number",
        ),
        s(
            "retry_delay",
            json!(1.5),
            "source.retry_delay 1.5 is not a whole, non-negative number",
        ),
        s(
            "https_tunnel",
            json!("proxy:3128"),
            "source.https_tunnel must be an object",
        ),
        s(
            "https_tunnel",
            json!({}),
            "source.https_tunnel.proxy_host is required",
        ),
        s(
            "https_tunnel",
            json!({"proxy_host": "h"}),
            "source.https_tunnel.proxy_port is required",
        ),
        s(
            "https_tunnel",
            json!({"proxy_host": 1, "proxy_port": 1}),
            "source.https_tunnel.proxy_host must be a string",
        ),
        s(
            "https_tunnel",
            tunnel(json!({"proxy_port": "abc"})),
            "source.https_tunnel.proxy_port \"abc\" is not a port number",
        ),
        s(
            "https_tunnel",
            tunnel(json!({"proxy_port": 70000})),
            "proxy_port \"70000\" is not a port number",
        ),
        s(
            "https_tunnel",
            tunnel(json!({"proxy_port": 0})),
            "proxy_port \"0\" is not a port number",
        ),
        s(
            "https_tunnel",
            tunnel(json!({"proxy_port": {}})),
            "source.https_tunnel.proxy_port must be a string",
        ),
        s(
            "https_tunnel",
            tunnel(json!({"proxy_user": 5})),
            "source.https_tunnel.proxy_user must be a string",
        ),
        s(
            "https_tunnel",
            tunnel(json!({"proxy_password": "pw"})),
            "source.https_tunnel.proxy_password needs proxy_user",
        ),
        fx.out_row(
            json!({"acquire": "yes"}),
            "params.acquire must be true or a number of locks, not a string",
        ),
        fx.out_row(
            json!({"acquire": 0}),
            "params.acquire must be true or a number of locks (1 or more), not 0",
        ),
        fx.out_row(
            json!({"acquire": 1.5}),
            "params.acquire must be true or a number of locks (1 or more), not 1.5",
        ),
        fx.out_row(
            json!({"claim": true}),
            "params.claim must be a string, not a boolean",
        ),
        fx.out_row(
            json!({"release": 1}),
            "params.release must be a string, not a number",
        ),
        fx.out_row(
            json!({"add": []}),
            "params.add must be a string, not a list",
        ),
        fx.out_row(
            json!({"add_claimed": {}}),
            "params.add_claimed must be a string, not an object",
        ),
        fx.out_row(
            json!({"update": 1.5}),
            "params.update must be a string, not a number",
        ),
        fx.out_row(
            json!({"remove": false}),
            "params.remove must be a string, not a boolean",
        ),
        fx.out_row(
            json!({"check": []}),
            "params.check must be a string, not a list",
        ),
        fx.out_row(
            json!({"check_unclaimed": 0}),
            "params.check_unclaimed must be a string",
        ),
        fx.in_row(
            json!({"depth": "3"}),
            "params.depth must be a whole number, not a string",
        ),
        fx.in_row(
            json!({"depth": -1}),
            "params.depth must be a whole number, not a number",
        ),
        fx.in_row(json!({"depth": 1.5}), "params.depth must be a whole number"),
        fx.in_row(
            json!({"depth": [1]}),
            "params.depth must be a whole number, not a list",
        ),
    ]);
}

#[test]
fn bad_uris_branches_and_pools_are_refused() {
    let fx = Fixture::new();
    let s = |field, value: &str, expect| fx.source_row("check", field, json!(value), expect);
    fx.run_table(vec![
        s(
            "uri",
            "ftp://h/x",
            "source.uri has an unsupported scheme \"ftp\"",
        ),
        s(
            "uri",
            "https://h:99999/x",
            "source.uri has an invalid port \"99999\"",
        ),
        s("uri", "https://:80/x", "source.uri has no host"),
        s("uri", "ssh://@/x", "source.uri has no host"),
        s("uri", "file://", "source.uri file:// has no path"),
        s("uri", "/x\n/y", "source.uri contains a control character"),
        s("uri", "codecommit://locks", "does not say which AWS region"),
        s(
            "uri",
            "codecommit::eu-west-1://bad/name",
            "is not a CodeCommit repository name",
        ),
        s(
            "branch",
            "a..b",
            "source.branch \"a..b\" is not a valid branch name",
        ),
        s("branch", "main\n", "is not a valid branch name"),
        s("branch", "with space", "is not a valid branch name"),
        s("branch", "x.lock", "is not a valid branch name"),
        s("pool", "/abs", "source.pool \"/abs\" is an absolute path"),
        s(
            "pool",
            "a/../b",
            "source.pool \"a/../b\" has an empty, '.' or '..' path component",
        ),
        s("pool", "..", "has an empty, '.' or '..' path component"),
        s("pool", "a//b", "has an empty, '.' or '..' path component"),
        s(
            "pool",
            "a\nb",
            "source.pool \"a\\nb\" contains a control character",
        ),
        s("pool", "/", "source.pool is empty"),
    ]);
}

#[test]
fn bad_lock_names_are_refused_before_any_change() {
    let fx = Fixture::new();
    let tip = fx.repo.tip();
    let claim = |name: &str, expect| fx.out_row(json!({ "claim": name }), expect);
    let dir = |action: &str, dir: &str, expect| fx.out_row(json!({ action: dir }), expect);
    let long = "x".repeat(256);
    fx.run_table(vec![
        claim(
            "a/b",
            "params.claim: lock name \"a/b\" contains a path separator",
        ),
        claim("../etc/passwd", "contains a path separator"),
        claim("a\\b", "contains a path separator"),
        claim("..", "lock name \"..\" starts with '.'"),
        claim(".gitkeep", "starts with '.' (dotfiles are never locks)"),
        claim(".pending-triggers", "starts with '.'"),
        claim("a\0b", "lock name \"a\\0b\" contains a control character"),
        claim("a\nb", "contains a control character"),
        claim("\x1b[31mred", "contains a control character"),
        claim("del\x7f", "contains a control character"),
        claim("\u{85}next-line", "contains a control character"),
        claim(" a", "starts or ends with white space"),
        claim(&long, "lock name is 256 bytes long (at most 255)"),
        dir(
            "add",
            "slash",
            "slash/name (params.add): lock name \"a/b\" contains a path separator",
        ),
        dir(
            "add_claimed",
            "dotdot",
            "dotdot/name (params.add_claimed): lock name \"..\" starts with '.'",
        ),
        dir("update", "dot", "lock name \".hidden\" starts with '.'"),
        dir(
            "release",
            "nul",
            "nul/name (params.release): lock name \"a\\0b\" contains a control character",
        ),
        dir("check", "newline", "contains a control character"),
        dir("check_unclaimed", "ctrl", "contains a control character"),
        dir(
            "add",
            "empty",
            "empty/name (params.add): lock name is empty",
        ),
        dir("remove", "blank", "lock name is empty"),
        dir(
            "add",
            "long",
            "lock name is 5242880 bytes long (at most 255)",
        ),
        dir(
            "add",
            "bad-utf8",
            "bad-utf8/name (params.add) is not UTF-8 text",
        ),
    ]);
    assert_eq!(fx.repo.tip(), tip, "nothing was committed");
}

#[test]
fn bad_put_inputs_and_missing_pools_fail_at_once() {
    let fx = Fixture::new();
    let tip = fx.repo.tip();
    let dir = |action: &str, dir: &str, expect| fx.out_row(json!({ action: dir }), expect);
    let on = |field: &str, value: &str, params: Value, expect| {
        req(
            &format!("out: source.{field} = {value:?}, params {params}"),
            "out",
            json!({"source": fx.src_with(field, json!(value)), "params": params}),
            expect,
        )
    };
    fx.run_table(vec![
        dir("add", "no-name", "could not read name for params.add"),
        dir("add", "no-meta", "could not read metadata for params.add"),
        dir(
            "update",
            "no-meta",
            "could not read metadata for params.update",
        ),
        dir(
            "release",
            "is-a-file",
            "could not read name for params.release",
        ),
        dir(
            "release",
            "no-such-dir",
            "could not read name for params.release",
        ),
        dir(
            "remove",
            "name-is-dir",
            "could not read name for params.remove",
        ),
        dir(
            "add",
            "exists",
            "lock \"a\" already exists in pool \"p\" (it is unclaimed)",
        ),
        dir(
            "release",
            "exists",
            "lock \"a\" in pool \"p\" is not claimed",
        ),
        fx.out_row(
            json!({"claim": "zz"}),
            "lock \"zz\" does not exist in pool \"p\"",
        ),
        on(
            "pool",
            "nope",
            json!({"acquire": true}),
            "pool \"nope\" does not exist on branch \"main\"",
        ),
        on(
            "pool",
            "nope",
            json!({"add": "ok"}),
            "pool \"nope\" does not exist on branch \"main\"",
        ),
        on(
            "pool",
            "nope",
            json!({"claim": "a"}),
            "pool \"nope\" does not exist",
        ),
        on(
            "branch",
            "nope",
            json!({"acquire": true}),
            "branch \"nope\" does not exist in",
        ),
        on(
            "uri",
            "/no/such/repo",
            json!({"acquire": true}),
            "/no/such/repo",
        ),
    ]);
    assert_eq!(fx.repo.tip(), tip, "nothing was committed");
}

/// Five megabytes of `c`.
fn mb(c: &str) -> String {
    c.repeat(5 << 20)
}

/// Rows whose error once quoted a multi-megabyte value whole (config.rs,
/// codecommit/url.rs, git/mod.rs); now they quote its start and length.
fn flooding_rows(fx: &Fixture) -> Vec<Row> {
    let s = |field, value: String, expect| fx.source_row("check", field, json!(value), expect);
    vec![
        s(
            "uri",
            format!("/{}", mb("x")),
            "source.uri is 5242881 bytes long (at most 4096)",
        ),
        s(
            "uri",
            format!("https://git-codecommit.eu-west-1.amazonaws.com/{}", mb("x")),
            "source.uri is 5242927 bytes long (at most 4096)",
        ),
        s(
            "branch",
            format!("a..{}", mb("b")),
            "is not a valid branch name",
        ),
        fx.source_row(
            "check",
            "git_config",
            json!([{"name": mb("n"), "value": "a\nb"}]),
            "contains a newline or NUL",
        ),
        fx.out_row(
            json!({ "release": mb("d") }),
            "params.release is 5242880 bytes long (at most 4096)",
        ),
    ]
}

#[test]
fn huge_values_fail_quickly() {
    let fx = Fixture::new();
    let s = |field, value: String, expect| fx.source_row("check", field, json!(value), expect);
    let big_pool = fx.src_with("pool", json!(mb("p")));
    let mut rows = vec![
        s(
            "uri",
            format!("ftp://{}", mb("h")),
            "source.uri is 5242886 bytes long (at most 4096)",
        ),
        s(
            "uri",
            format!("https://{}:99999/", mb("h")),
            "source.uri is 5242895 bytes long (at most 4096)",
        ),
        s(
            "pool",
            format!("{}\n", mb("p")),
            "source.pool is 5242881 bytes long (at most 4096)",
        ),
        req(
            "out: a 5 MiB pool",
            "out",
            json!({"source": big_pool, "params": {"acquire": true}}),
            "source.pool is 5242880 bytes long (at most 4096)",
        ),
        s(
            "retry_delay",
            mb("9"),
            "source.retry_delay: invalid duration \"99999",
        ),
        s(
            "retry_delay",
            format!("1{}", mb("y")),
            "unknown unit \"yyyy",
        ),
        fx.out_row(
            json!({ "claim": mb("c") }),
            "lock name is 5242880 bytes long (at most 255)",
        ),
        fx.version_row("in", json!({ "ref": mb("z") }), "version.ref \"zzzz"),
        fx.version_row("in", json!({ "ref": mb("0") }), "is not a commit id"),
    ];
    rows.extend(flooding_rows(&fx).into_iter().map(Row::floods));
    fx.run_table(rows);
}

#[test]
fn huge_values_are_never_quoted_whole() {
    let fx = Fixture::new();
    let mut rows = flooding_rows(&fx);
    rows.push(fx.out_row(json!({ mb("k"): true }), "unknown field params.kkkk"));
    fx.run_table(rows);
}

#[test]
fn bad_versions_are_refused() {
    let fx = Fixture::new();
    let v = |bin, version, expect| fx.version_row(bin, version, expect);
    let missing = "0123456789abcdef0123456789abcdef01234567";
    fx.run_table(vec![
        v(
            "check",
            json!({"ref": 123}),
            "version.ref must be a string, not a number",
        ),
        v(
            "in",
            json!({"ref": []}),
            "version.ref must be a string, not a list",
        ),
        v(
            "in",
            json!({"ref": {"sha": "x"}}),
            "version.ref must be a string, not an object",
        ),
        v(
            "in",
            json!({"ref": true}),
            "version.ref must be a string, not a boolean",
        ),
        v(
            "in",
            json!({"ref": "zzz"}),
            "version.ref \"zzz\" is not a commit id",
        ),
        v(
            "in",
            json!({"ref": "a\nb"}),
            "version.ref \"a\\nb\" is not a commit id",
        ),
        v(
            "in",
            json!({"ref": "bogus-ref"}),
            "version.ref \"bogus-ref\" is not a commit id",
        ),
        v(
            "in",
            json!({"ref": "not-hex!"}),
            "version.ref \"not-hex!\" is not a commit id",
        ),
        v(
            "in",
            json!({"ref": "\u{1b}[2J"}),
            "version.ref \"\\u{1b}[2J\" is not a commit id",
        ),
        v("in", json!({"ref": "a".repeat(65)}), "is not a commit id"),
        v(
            "in",
            json!({"ref": "x".repeat(3 << 20)}),
            "is not a commit id",
        ),
        v(
            "in",
            json!({"ref": missing}),
            &format!("version {missing} is not on branch \"main\""),
        ),
    ]);
}

/// `check` with a version that is not a commit of the branch, whatever the
/// string: just the latest version, exit 0, quickly, and the string never
/// quoted whole or raw.
#[test]
fn check_takes_any_string_version_it_cannot_find_as_unknown() {
    let fx = Fixture::new();
    let latest = json!([{"ref": fx.repo.tip()}]);
    let env = fx.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let start = Instant::now();
    for reference in [
        "bogus-ref".to_string(),
        "zzz".into(),
        "a\nb".into(),
        "\u{1b}[2J".into(),
        "abc1".into(),
        "0123456789abcdef0123456789abcdef01234567".into(),
        "0".repeat(41),
        mb("0"),
        "x".repeat(3 << 20),
    ] {
        let shown = shorten(&format!("{reference:?}"));
        let request = json!({"source": fx.src(), "version": {"ref": reference}});
        let run = run_bounded("check", &[], request.to_string().as_bytes(), &env);
        let out: Value = match serde_json::from_str(&run.stdout) {
            Ok(v) if run.status.success() => v,
            _ => panic!("check of {shown} failed:\n{}", run.stderr),
        };
        assert_eq!(out, latest, "check of {shown}");
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        assert!(
            run.stderr.len() <= MAX_STDERR,
            "check of {shown}: {} bytes on stderr",
            run.stderr.len()
        );
        assert!(
            !run.stderr.contains("\u{1b}[2J") && !run.stderr.contains("a\nb"),
            "check of {shown} echoed a control character:\n{}",
            run.stderr
        );
    }
    assert!(start.elapsed() < DEADLINE, "took {:?}", start.elapsed());
}

#[test]
fn git_config_values_are_never_run_by_a_shell() {
    let fx = Fixture::new();
    let hostile = json!([
        {"name": "user.name", "value": format!("$({})", fx.touch("name"))},
        {"name": "user.email", "value": format!("`{}`", fx.touch("email"))},
        {"name": "core.sshCommand", "value": format!("{}; ssh", fx.touch("ssh"))},
        {"name": "credential.helper", "value": format!("!{}", fx.touch("helper"))},
        {"name": "core.pager", "value": format!("| {}", fx.touch("pager"))},
        {"name": "core.hooksPath", "value": format!("$({})", fx.touch("hooks"))},
        {"name": "core.fsmonitor", "value": fx.touch("fsmonitor")},
    ]);
    let mut missing_pool = fx.src_with("git_config", hostile.clone());
    missing_pool["pool"] = json!("nope");
    // Over HTTP, where libgit2 reads the proxy and CA settings.
    let mut http = fx.src_with(
        "git_config",
        json!([
            {"name": "http.proxy", "value": format!("http://$({}):1", fx.touch("proxy"))},
            {"name": "http.sslCAInfo", "value": format!("$({})", fx.touch("ca"))},
            {"name": "http.sslCAPath", "value": format!("`{}`", fx.touch("capath"))},
        ]),
    );
    http["uri"] = json!(fx.http.url("locks.git"));
    let mut http_no_branch = http.clone();
    http_no_branch["branch"] = json!("nope");
    fx.run_table(vec![
        req(
            "a put that fails on a missing pool",
            "out",
            json!({"source": missing_pool, "params": {"acquire": true}}),
            "pool \"nope\" does not exist",
        ),
        req(
            "a claim of a lock that does not exist",
            "out",
            json!({"source": fx.src_with("git_config", hostile.clone()), "params": {"claim": "zz"}}),
            "lock \"zz\" does not exist in pool \"p\"",
        ),
        req(
            "a check over HTTP of a branch that does not exist",
            "check",
            json!({ "source": http_no_branch }),
            "branch \"nope\" does not exist",
        ),
    ]);

    // And a put that succeeds with all of them: the identity is taken literally.
    let src = fx.src_with("git_config", hostile);
    let env = fx.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = run_bounded(
        "out",
        &[fx.inputs.path()],
        json!({"source": src, "params": {"claim": "a"}})
            .to_string()
            .as_bytes(),
        &env,
    );
    run.assert_success();
    let check = run_bounded(
        "check",
        &[],
        json!({ "source": http }).to_string().as_bytes(),
        &env,
    );
    check.assert_success();
    let author = crate::support::git_ok(fx.repo.path(), &["log", "-1", "--format=%an <%ae>"]);
    assert_eq!(
        author.trim(),
        format!("$({}) <`{}`>", fx.touch("name"), fx.touch("email"))
    );
    let markers: Vec<_> = std::fs::read_dir(fx.marker.path())
        .unwrap()
        .flatten()
        .collect();
    assert!(
        markers.is_empty(),
        "{markers:?}\n{}\n{}",
        run.stderr,
        check.stderr
    );
    for ignored in ["core.sshCommand", "credential.helper", "core.hooksPath"] {
        assert!(
            run.stderr.contains(ignored),
            "{ignored} is warned about: {}",
            run.stderr
        );
    }
}

#[test]
fn unknown_source_fields_are_warned_about_and_the_step_goes_on() {
    let fx = Fixture::new();
    let mut src = fx.src();
    src["privat_key"] = json!("x");
    src["retry_dealy"] = json!("1s");
    let env = fx.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = run_bounded(
        "check",
        &[],
        json!({ "source": src }).to_string().as_bytes(),
        &env,
    );
    run.assert_success();
    assert_eq!(run.json(), json!([{"ref": fx.repo.tip()}]));
    for field in ["privat_key", "retry_dealy"] {
        assert!(
            strip_ansi(&run.stderr)
                .contains(&format!("warning: unknown field source.{field} is ignored")),
            "{}",
            run.stderr
        );
    }
}

/// Lock metadata that is anything but text.
const BINARY: &[u8] = b"\0\xff\xfe\x00binary\r\n\x1b[31m\xc0\x80 \xed\xa0\x80end\0";

#[test]
fn binary_metadata_round_trips_byte_for_byte() {
    let repo = LockRepo::new("main");
    repo.add_empty_pool(POOL);
    let src = source(&repo.file_url(), "main", POOL);
    let inputs = Inputs::new();
    inputs.lock("new", "bin", BINARY);
    let added = crate::put(&src, json!({"add": "new"}), &inputs, &[]);
    assert_eq!(lock_name(&added), "bin");
    assert_eq!(
        repo.file_at(&repo.tip(), "p/unclaimed/bin").as_deref(),
        Some(BINARY)
    );
    let acquired = crate::put(&src, json!({"acquire": true}), &inputs, &[]);
    assert_eq!(lock_name(&acquired), "bin");
    assert_eq!(
        repo.file_at(&repo.tip(), "p/claimed/bin").as_deref(),
        Some(BINARY)
    );
    let dest = TempDir::new().unwrap();
    let run = run_bounded(
        "in",
        &[dest.path()],
        json!({"source": src, "version": {"ref": version(&acquired)}})
            .to_string()
            .as_bytes(),
        &[],
    );
    let got = run.assert_success().json();
    assert_eq!(lock_name(&got), "bin");
    assert_eq!(std::fs::read(dest.path().join("metadata")).unwrap(), BINARY);
    assert_eq!(std::fs::read(dest.path().join("name")).unwrap(), b"bin\n");
}

/// A lock repository behind smart HTTP that wants `USER`/`PASSWORD`.
struct AuthServer {
    repo: LockRepo,
    server: HttpGitServer,
}

const USER: &str = "bot";
/// Has a character that must be percent-encoded in a URL.
const PASSWORD: &str = "s3cr@t-Passw0rd-4711";

impl AuthServer {
    fn start() -> AuthServer {
        let repo = LockRepo::new("main");
        repo.add_lock(POOL, "a", false, b"a-meta\n");
        let server = HttpGitServer::start(
            repo.root(),
            HttpOptions {
                basic_auth: Some((USER.into(), PASSWORD.into())),
                ..HttpOptions::default()
            },
        );
        AuthServer { repo, server }
    }

    /// `http://USER:PASSWORD@127.0.0.1:PORT/locks.git`, the password encoded.
    fn uri_with(&self, password: &str) -> String {
        let plain = self.server.url("locks.git");
        let encoded = percent_encode(password);
        plain.replacen("http://", &format!("http://{USER}:{encoded}@"), 1)
    }
}

/// Percent-encodes everything but unreserved characters, as a URL's
/// user-info part needs: the library's own encoder.
fn percent_encode(text: &str) -> String {
    pool_resource::config::uri::percent_encode_userinfo(text)
}

/// Every way a password could show: as is, URL-encoded, and in a Basic header.
fn forms_of(password: &str) -> Vec<String> {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
    vec![password.to_string(), percent_encode(password), basic]
}

fn assert_never_shown(run: &Run, secrets: &[String]) {
    for secret in secrets {
        for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
            assert!(
                !text.contains(secret.as_str()),
                "{stream} of {} shows {secret:?}:\n{text}",
                run.command
            );
        }
    }
}

#[test]
fn credentials_in_the_uri_are_used_and_never_shown() {
    let side = AuthServer::start();
    let src = source(&side.uri_with(PASSWORD), "main", POOL);
    let inputs = Inputs::new();
    let request = |params: Value| json!({"source": src, "params": params}).to_string();
    let out = run_bounded(
        "out",
        &[inputs.path()],
        request(json!({"acquire": true})).as_bytes(),
        &[],
    );
    let claimed = out.assert_success().json();
    assert_eq!(side.repo.claimed(POOL), ["a"]);
    let check = run_bounded(
        "check",
        &[],
        json!({ "source": src }).to_string().as_bytes(),
        &[],
    );
    assert_eq!(
        check.assert_success().json(),
        json!([{"ref": side.repo.tip()}])
    );
    let dest = TempDir::new().unwrap();
    let get = run_bounded(
        "in",
        &[dest.path()],
        json!({"source": src, "version": {"ref": version(&claimed)}})
            .to_string()
            .as_bytes(),
        &[],
    );
    get.assert_success();
    assert_eq!(
        std::fs::read(dest.path().join("metadata")).unwrap(),
        b"a-meta\n"
    );
    let expected = format!("Basic {}", forms_of(PASSWORD)[2]);
    assert!(
        side.server.auth_headers().contains(&expected),
        "the server saw the credentials: {:?}",
        side.server.auth_headers()
    );
    for run in [&out, &check, &get] {
        assert_never_shown(run, &forms_of(PASSWORD));
    }
}

#[test]
fn a_wrong_password_in_the_uri_fails_naming_the_uri_without_it() {
    let side = AuthServer::start();
    let wrong = "Wr0ng-Passw0rd:%/@-0815";
    let src = source(&side.uri_with(wrong), "main", POOL);
    let inputs = Inputs::new();
    for (bin, args) in [("out", vec![inputs.path()]), ("check", vec![])] {
        let run = run_bounded(
            bin,
            &args,
            json!({"source": src, "params": if bin == "out" { json!({"acquire": true}) } else { json!({}) }})
                .to_string()
                .as_bytes(),
            &[("POOL_RESOURCE_BACKOFF_BASE_MS", "5")],
        );
        run.assert_failure();
        let report = error_report(&run.stderr).unwrap_or_else(|| panic!("{}", run.stderr));
        assert!(
            report.contains(&format!(
                "authentication failed for {}",
                side.server.url("locks.git")
            )),
            "{bin}: {report}"
        );
        assert!(!report.contains("panicked"), "{report}");
        let mut secrets = forms_of(wrong);
        secrets.push(format!("{USER}:"));
        assert_never_shown(&run, &secrets);
    }
    assert!(side.repo.claimed(POOL).is_empty());
}

#[test]
fn the_fuzz_seeds_go_through_the_fuzz_targets() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut ran = 0;
    for (target, run) in [
        ("request", fuzz_targets::request as fn(&[u8])),
        ("names", fuzz_targets::names),
        ("values", fuzz_targets::values),
    ] {
        let dir: PathBuf = seeds.join(target);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        assert!(!entries.is_empty(), "{} has seeds", dir.display());
        for path in entries {
            run(&std::fs::read(&path).unwrap());
            ran += 1;
        }
    }
    eprintln!("{ran} seeds");
}

#[test]
fn a_password_in_a_uri_that_fails_validation_is_not_shown() {
    let fx = Fixture::new();
    let host = "git-codecommit.eu-west-2.amazonaws.com";
    for (password, uri, expect) in [
        (
            "Hunter2-S3cret",
            format!("https://bot:Hunter2-S3cret@{host}/locks"),
            "a CodeCommit URL's path is /v1/repos/NAME",
        ),
        (
            "S3cr%40t-Passw0rd",
            format!("https://bot:S3cr%40t-Passw0rd@{host}/x"),
            "a CodeCommit URL's path is /v1/repos/NAME",
        ),
        (
            r#"Quote"Back\slash-S3cret"#,
            format!(r#"https://bot:Quote"Back\slash-S3cret@{host}/v1/repos/bad name"#),
            "is not a CodeCommit repository name",
        ),
        (
            "Hunter2-S3cret",
            "codecommit://me:Hunter2-S3cret@bad/name".to_string(),
            "is not a CodeCommit repository name",
        ),
    ] {
        let row = fx.source_row("check", "uri", json!(uri), expect);
        fx.check_row(&row)
            .unwrap_or_else(|e| panic!("{}: {e}", row.what));
        let env = fx.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let run = run_bounded("check", &[], &row.stdin, &env);
        let escaped = format!("{password:?}");
        let escaped = &escaped[1..escaped.len() - 1];
        for shown in [password, escaped, "S3cr@t-Passw0rd"] {
            assert!(
                !run.stderr.contains(shown),
                "{uri} shows {shown:?}: {}",
                run.stderr
            );
        }
        assert!(run.stderr.contains("***"), "{}", run.stderr);
    }
}
