//! The pipelines this repository ships, `ci/pipeline.yml` and every
//! `examples/*.yml`, checked the way `fly validate-pipeline` checks a pipeline
//! (known keys, every step names something that exists), and the examples
//! also for using this resource only with params and source fields it has.
//!
//! The checker reports every problem it finds as a line; the tests at the end
//! feed it broken pipelines to show that it does find them.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::support::run_bin;

/// The image a `resource_types` entry must name to be this resource.
const IMAGE_REPOSITORY: &str = "ghcr.io/pool-resource/pool-resource";

/// Resource types every Concourse installation has.
const CORE_TYPES: &[&str] = &[
    "bosh-io-release",
    "bosh-io-stemcell",
    "cf",
    "docker-image",
    "git",
    "github-release",
    "hg",
    "mock",
    "pool",
    "registry-image",
    "s3",
    "semver",
    "time",
    "tracker",
];

/// `source` fields of this resource (src/config/).
const SOURCE_FIELDS: &[&str] = &[
    "uri",
    "branch",
    "pool",
    "private_key",
    "private_key_user",
    "private_key_passphrase",
    "forward_agent",
    "username",
    "password",
    "git_config",
    "retry_delay",
    "https_tunnel",
    "skip_ssl_verification",
    "known_hosts",
    "aws_region",
    "backend",
    "queue",
    "waiter_lease",
];
const REQUIRED_SOURCE_FIELDS: &[&str] = &["uri", "branch", "pool"];
const BACKENDS: &[&str] = &["git", "codecommit-api"];

/// Put params of this resource; a put takes exactly one.
const PUT_ACTIONS: &[&str] = &[
    "acquire",
    "claim",
    "release",
    "add",
    "add_claimed",
    "remove",
    "update",
    "check",
    "check_unclaimed",
];
/// Put params whose value is a directory of the build holding `name`.
const DIRECTORY_ACTIONS: &[&str] = &[
    "release",
    "add",
    "add_claimed",
    "remove",
    "update",
    "check",
    "check_unclaimed",
];
/// Put params that go with an action.
const PUT_MODIFIERS: &[&str] = &["idempotent", "priority", "shared", "wait_timeout"];
/// Get params of this resource (also allowed as a put's `get_params`).
const GET_PARAMS: &[&str] = &["depth"];

const TOP_LEVEL_KEYS: &[&str] = &[
    "resources",
    "resource_types",
    "jobs",
    "groups",
    "var_sources",
    "display",
];
const RESOURCE_KEYS: &[&str] = &[
    "name",
    "type",
    "source",
    "old_name",
    "icon",
    "version",
    "check_every",
    "check_timeout",
    "expose_build_created_by",
    "tags",
    "public",
    "webhook_token",
];
const RESOURCE_TYPE_KEYS: &[&str] = &[
    "name",
    "type",
    "source",
    "privileged",
    "params",
    "check_every",
    "tags",
    "defaults",
    "unique_version_history",
];
const JOB_KEYS: &[&str] = &[
    "name",
    "old_name",
    "plan",
    "serial",
    "serial_groups",
    "build_log_retention",
    "build_logs_to_retain",
    "max_in_flight",
    "public",
    "disable_manual_trigger",
    "interruptible",
    "on_success",
    "on_failure",
    "on_error",
    "on_abort",
    "ensure",
];
const HOOKS: &[&str] = &["on_success", "on_failure", "on_error", "on_abort", "ensure"];
const MODIFIERS: &[&str] = &["timeout", "attempts", "tags", "across"];
/// Each kind of step, with the keys it takes besides hooks and modifiers.
const STEP_KINDS: &[(&str, &[&str])] = &[
    (
        "get",
        &["resource", "passed", "params", "trigger", "version"],
    ),
    (
        "put",
        &["resource", "params", "get_params", "inputs", "no_get"],
    ),
    (
        "task",
        &[
            "config",
            "file",
            "image",
            "privileged",
            "params",
            "vars",
            "input_mapping",
            "output_mapping",
            "container_limits",
            "hermetic",
        ],
    ),
    (
        "set_pipeline",
        &["file", "vars", "var_files", "team", "instance_vars"],
    ),
    ("load_var", &["file", "format", "reveal"]),
    ("in_parallel", &[]),
    ("do", &[]),
    ("try", &[]),
];
const TASK_CONFIG_KEYS: &[&str] = &[
    "platform",
    "image_resource",
    "rootfs_uri",
    "inputs",
    "outputs",
    "caches",
    "params",
    "run",
    "container_limits",
];

/// What one job has seen so far while its plan is walked in order.
#[derive(Default)]
struct JobScope {
    /// Artifact names in the build: gets, puts (their implicit get), task
    /// outputs. `None` once a task from a file may have added unknown ones.
    artifacts: Option<BTreeSet<String>>,
    /// Local vars set by `load_var`.
    local_vars: BTreeSet<String>,
}

struct Checker<'a> {
    name: &'a str,
    problems: Vec<String>,
    resources: HashMap<String, String>,
    /// Resource types whose image is this resource.
    ours: BTreeSet<String>,
    /// For each job, the resources its gets and puts name.
    job_resources: HashMap<String, BTreeSet<String>>,
}

/// Every problem `fly validate-pipeline` and this resource would have with
/// `yaml`, one line each; empty when the pipeline is fine. `name` prefixes
/// the lines.
fn check_pipeline(name: &str, yaml: &str) -> Vec<String> {
    let doc: Value = match serde_norway::from_str(yaml) {
        Ok(doc) => doc,
        Err(e) => return vec![format!("{name}: not valid YAML: {e}")],
    };
    let mut c = Checker {
        name,
        problems: Vec::new(),
        resources: HashMap::new(),
        ours: BTreeSet::new(),
        job_resources: HashMap::new(),
    };
    c.pipeline(&doc);
    c.problems
}

impl Checker<'_> {
    fn problem(&mut self, what: impl std::fmt::Display) {
        self.problems.push(format!("{}: {what}", self.name));
    }

    fn unknown_keys(&mut self, map: &Map<String, Value>, known: &[&str], at: &str) {
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                self.problem(format_args!("{at} has unknown key {key:?}"));
            }
        }
    }

    /// The list under `key`, each entry an object; problems for anything else.
    fn objects<'v>(
        &mut self,
        map: &'v Map<String, Value>,
        key: &str,
    ) -> Vec<&'v Map<String, Value>> {
        match map.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item.as_object() {
                        Some(o) => out.push(o),
                        None => self.problem(format_args!("{key}[{i}] is not a mapping")),
                    }
                }
                out
            }
            Some(_) => {
                self.problem(format_args!("{key} is not a list"));
                Vec::new()
            }
        }
    }

    fn name_of(&mut self, map: &Map<String, Value>, at: &str) -> Option<String> {
        match map.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => Some(n.to_string()),
            _ => {
                self.problem(format_args!("{at} has no name"));
                None
            }
        }
    }

    fn pipeline(&mut self, doc: &Value) {
        let Some(top) = doc.as_object() else {
            self.problem("the pipeline is not a mapping");
            return;
        };
        self.unknown_keys(top, TOP_LEVEL_KEYS, "the pipeline");

        let mut types: BTreeSet<String> = CORE_TYPES.iter().map(|t| t.to_string()).collect();
        let mut custom = BTreeSet::new();
        for (i, rt) in self.objects(top, "resource_types").into_iter().enumerate() {
            let at = format!("resource_types[{i}]");
            self.unknown_keys(rt, RESOURCE_TYPE_KEYS, &at);
            let Some(name) = self.name_of(rt, &at) else {
                continue;
            };
            if !custom.insert(name.clone()) {
                self.problem(format_args!("resource type {name:?} is defined twice"));
            }
            match rt.get("type").and_then(Value::as_str) {
                Some(t) if types.contains(t) || custom.contains(t) => {}
                Some(t) => self.problem(format_args!(
                    "resource type {name:?} has unknown type {t:?}"
                )),
                None => self.problem(format_args!("resource type {name:?} has no type")),
            }
            let repository = rt
                .get("source")
                .and_then(|s| s.get("repository"))
                .and_then(Value::as_str);
            if repository == Some(IMAGE_REPOSITORY) {
                self.ours.insert(name.clone());
            }
            types.insert(name);
        }

        let resources = self.objects(top, "resources");
        for (i, r) in resources.iter().enumerate() {
            let at = format!("resources[{i}]");
            self.unknown_keys(r, RESOURCE_KEYS, &at);
            let Some(name) = self.name_of(r, &at) else {
                continue;
            };
            let Some(t) = r.get("type").and_then(Value::as_str) else {
                self.problem(format_args!("resource {name:?} has no type"));
                continue;
            };
            if !types.contains(t) {
                self.problem(format_args!("resource {name:?} has unknown type {t:?}"));
            }
            if self.resources.insert(name.clone(), t.to_string()).is_some() {
                self.problem(format_args!("resource {name:?} is defined twice"));
            }
            if t == "pool" && !self.ours.contains("pool") {
                self.problem(format_args!(
                    "resource {name:?} uses the built-in pool type; register {IMAGE_REPOSITORY} as `pool` in resource_types"
                ));
            }
            if self.ours.contains(t) {
                self.pool_source(&name, r.get("source"));
            }
        }

        let jobs = self.objects(top, "jobs");
        if jobs.is_empty() {
            self.problem("the pipeline has no jobs");
        }
        // `passed` may name any job, so collect what each job touches first.
        let mut names = BTreeSet::new();
        for (i, job) in jobs.iter().enumerate() {
            let Some(name) = self.name_of(job, &format!("jobs[{i}]")) else {
                continue;
            };
            if !names.insert(name.clone()) {
                self.problem(format_args!("job {name:?} is defined twice"));
            }
            let mut touched = BTreeSet::new();
            resources_touched(&Value::Object((*job).clone()), &mut touched);
            self.job_resources.insert(name, touched);
        }
        for job in &jobs {
            let name = job
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            let at = format!("job {name:?}");
            self.unknown_keys(job, JOB_KEYS, &at);
            let mut scope = JobScope {
                artifacts: Some(BTreeSet::new()),
                ..JobScope::default()
            };
            match job.get("plan") {
                Some(Value::Array(steps)) if !steps.is_empty() => {
                    for (i, step) in steps.iter().enumerate() {
                        self.step(step, &format!("{at} plan[{i}]"), &mut scope);
                    }
                }
                _ => self.problem(format_args!("{at} has no plan")),
            }
            for hook in HOOKS {
                if let Some(step) = job.get(*hook) {
                    self.step(step, &format!("{at} {hook}"), &mut scope);
                }
            }
            self.local_vars(&Value::Object((*job).clone()), &scope, &at);
        }

        for (i, group) in self.objects(top, "groups").into_iter().enumerate() {
            let at = format!("groups[{i}]");
            self.unknown_keys(group, &["name", "jobs"], &at);
            for job in group
                .get("jobs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let job = job.as_str().unwrap_or_default();
                // A group may list jobs by glob.
                if !job.contains('*') && !names.contains(job) {
                    self.problem(format_args!("{at} names unknown job {job:?}"));
                }
            }
        }
    }

    fn step(&mut self, step: &Value, at: &str, scope: &mut JobScope) {
        let Some(map) = step.as_object() else {
            self.problem(format_args!("{at} is not a mapping"));
            return;
        };
        let kinds: Vec<&(&str, &[&str])> = STEP_KINDS
            .iter()
            .filter(|(k, _)| map.contains_key(*k))
            .collect();
        let (kind, keys) = match kinds.as_slice() {
            [one] => **one,
            [] => {
                self.problem(format_args!(
                    "{at} is no known kind of step (keys: {:?})",
                    map.keys().collect::<Vec<_>>()
                ));
                return;
            }
            many => {
                let names: Vec<&str> = many.iter().map(|(k, _)| *k).collect();
                self.problem(format_args!(
                    "{at} is several kinds of step at once: {names:?}"
                ));
                return;
            }
        };
        let mut known: Vec<&str> = vec![kind];
        known.extend_from_slice(keys);
        known.extend_from_slice(HOOKS);
        known.extend_from_slice(MODIFIERS);
        self.unknown_keys(map, &known, at);
        let label = map
            .get(kind)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let at = if label.is_empty() {
            at.to_string()
        } else {
            format!("{at} ({kind}: {label})")
        };

        match kind {
            "get" | "put" => self.resource_step(kind, &label, map, &at, scope),
            "task" => self.task(&label, map, &at, scope),
            "load_var" => {
                if !map.get("file").is_some_and(Value::is_string) {
                    self.problem(format_args!("{at} has no file"));
                }
                scope.local_vars.insert(label);
            }
            "set_pipeline" => {
                if !map.get("file").is_some_and(Value::is_string) {
                    self.problem(format_args!("{at} has no file"));
                }
            }
            "in_parallel" => {
                let steps = match &map["in_parallel"] {
                    Value::Array(steps) => Some(steps),
                    Value::Object(o) => {
                        self.unknown_keys(o, &["steps", "limit", "fail_fast"], &at);
                        o.get("steps").and_then(Value::as_array)
                    }
                    _ => None,
                };
                match steps {
                    Some(steps) => {
                        for (i, s) in steps.iter().enumerate() {
                            self.step(s, &format!("{at}[{i}]"), scope);
                        }
                    }
                    None => self.problem(format_args!("{at} has no steps")),
                }
            }
            "do" => match &map["do"] {
                Value::Array(steps) => {
                    for (i, s) in steps.iter().enumerate() {
                        self.step(s, &format!("{at}[{i}]"), scope);
                    }
                }
                _ => self.problem(format_args!("{at}: do is not a list of steps")),
            },
            "try" => self.step(&map["try"], &format!("{at} try"), scope),
            _ => unreachable!("step kind {kind} is listed but not handled"),
        }

        for hook in HOOKS {
            if let Some(s) = map.get(*hook) {
                self.step(s, &format!("{at} {hook}"), scope);
            }
        }
    }

    fn resource_step(
        &mut self,
        kind: &str,
        label: &str,
        map: &Map<String, Value>,
        at: &str,
        scope: &mut JobScope,
    ) {
        let resource = map
            .get("resource")
            .and_then(Value::as_str)
            .unwrap_or(label)
            .to_string();
        let Some(rtype) = self.resources.get(&resource).cloned() else {
            self.problem(format_args!("{at} names unknown resource {resource:?}"));
            return;
        };
        for job in map
            .get("passed")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let job = job.as_str().unwrap_or_default();
            match self.job_resources.get(job) {
                None => self.problem(format_args!("{at} passed names unknown job {job:?}")),
                Some(touched) if !touched.contains(&resource) => self.problem(format_args!(
                    "{at} passed names job {job:?}, which does not use resource {resource:?}"
                )),
                Some(_) => {}
            }
        }
        if self.ours.contains(&rtype) {
            match kind {
                "get" => self.params(map.get("params"), GET_PARAMS, at),
                _ => {
                    self.put_params(map.get("params"), at, scope);
                    self.params(
                        map.get("get_params"),
                        GET_PARAMS,
                        &format!("{at} get_params"),
                    );
                }
            }
        }
        let no_get = kind == "put" && map.get("no_get") == Some(&Value::Bool(true));
        if !no_get {
            if let Some(artifacts) = &mut scope.artifacts {
                artifacts.insert(label.to_string());
            }
        }
    }

    fn task(&mut self, label: &str, map: &Map<String, Value>, at: &str, scope: &mut JobScope) {
        if label.is_empty() {
            self.problem(format_args!("{at}: a task needs a name"));
        }
        if let Some(image) = map.get("image").and_then(Value::as_str) {
            if scope.artifacts.as_ref().is_some_and(|a| !a.contains(image)) {
                self.problem(format_args!(
                    "{at} image {image:?} is not an artifact of an earlier step"
                ));
            }
        }
        let config = match (map.get("config"), map.get("file")) {
            (Some(_), Some(_)) => {
                self.problem(format_args!("{at} has both config and file"));
                return;
            }
            (None, None) => {
                self.problem(format_args!("{at} has neither config nor file"));
                return;
            }
            (None, Some(_)) => {
                // Its outputs are in a file we do not read.
                scope.artifacts = None;
                return;
            }
            (Some(config), None) => config,
        };
        let Some(config) = config.as_object() else {
            self.problem(format_args!("{at} config is not a mapping"));
            return;
        };
        self.unknown_keys(config, TASK_CONFIG_KEYS, &format!("{at} config"));
        if !config.get("platform").is_some_and(Value::is_string) {
            self.problem(format_args!("{at} config has no platform"));
        }
        if !config
            .get("run")
            .and_then(|r| r.get("path"))
            .is_some_and(Value::is_string)
        {
            self.problem(format_args!("{at} config has no run.path"));
        }
        if !map.contains_key("image")
            && !config.contains_key("image_resource")
            && !config.contains_key("rootfs_uri")
        {
            self.problem(format_args!(
                "{at} has no image (image, image_resource or rootfs_uri)"
            ));
        }
        let mapping = |key: &str| -> HashMap<String, String> {
            map.get(key)
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (input_mapping, output_mapping) = (mapping("input_mapping"), mapping("output_mapping"));
        for input in config
            .get("inputs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = input
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let optional = input.get("optional") == Some(&Value::Bool(true));
            let artifact = input_mapping.get(name).map(String::as_str).unwrap_or(name);
            if let Some(artifacts) = &scope.artifacts {
                if !optional && !artifacts.contains(artifact) {
                    self.problem(format_args!(
                        "{at} input {name:?} needs artifact {artifact:?}, which no earlier step provides"
                    ));
                }
            }
        }
        for output in config
            .get("outputs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = output
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let artifact = output_mapping
                .get(name)
                .cloned()
                .unwrap_or_else(|| name.to_string());
            if let Some(artifacts) = &mut scope.artifacts {
                artifacts.insert(artifact);
            }
        }
    }

    fn params(&mut self, params: Option<&Value>, known: &[&str], at: &str) {
        let Some(params) = params else { return };
        let Some(map) = params.as_object() else {
            self.problem(format_args!("{at} params is not a mapping"));
            return;
        };
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                self.problem(format_args!(
                    "{at} uses param {key:?}, which this resource does not have (it has {known:?})"
                ));
            }
        }
    }

    fn put_params(&mut self, params: Option<&Value>, at: &str, scope: &JobScope) {
        let empty = Map::new();
        let map = match params {
            None => &empty,
            Some(Value::Object(map)) => map,
            Some(_) => {
                self.problem(format_args!("{at} params is not a mapping"));
                return;
            }
        };
        let known: Vec<&str> = PUT_ACTIONS.iter().chain(PUT_MODIFIERS).copied().collect();
        self.params(params, &known, at);
        if let Some(v) = map.get("idempotent").filter(|v| !v.is_boolean()) {
            self.problem(format_args!(
                "{at} idempotent must be true or false, is {v}"
            ));
        }
        if let Some(v) = map.get("shared").filter(|v| !v.is_boolean()) {
            self.problem(format_args!("{at} shared must be true or false, is {v}"));
        }
        let shares = map.get("acquire").is_some_and(|v| v == &Value::Bool(true))
            || map.get("claim").is_some_and(Value::is_string);
        if map.contains_key("shared") && !shares {
            self.problem(format_args!(
                "{at} shared goes with acquire: true or claim: LOCK (one lock)"
            ));
        }
        let actions: Vec<&str> = PUT_ACTIONS
            .iter()
            .copied()
            .filter(|a| map.contains_key(*a))
            .collect();
        if actions.len() != 1 {
            self.problem(format_args!(
                "{at} must have exactly one of {PUT_ACTIONS:?}, has {actions:?}"
            ));
            return;
        }
        let action = actions[0];
        let value = &map[action];
        match action {
            // `acquire: N` takes N locks in one commit (unknown to the Go resource).
            "acquire" => {
                if value != &Value::Bool(true) && value.as_u64().is_none_or(|n| n < 1) {
                    self.problem(format_args!(
                        "{at} acquire must be true or a number of locks (1 or more), is {value}"
                    ));
                }
            }
            // `claim: [A, B]` takes them all in one commit.
            "claim" if value.is_array() => {
                let names = value.as_array().map(Vec::as_slice).unwrap_or_default();
                if names.is_empty()
                    || !names
                        .iter()
                        .all(|n| n.as_str().is_some_and(|n| !n.is_empty()))
                {
                    self.problem(format_args!(
                        "{at} claim must be a lock name or a non-empty list of them, is {value}"
                    ));
                }
            }
            _ => match value.as_str() {
                None | Some("") => self.problem(format_args!(
                    "{at} {action} must be a non-empty string, is {value}"
                )),
                Some(dir) if DIRECTORY_ACTIONS.contains(&action) => {
                    // The directory is an artifact of the build: its first
                    // path component must be one an earlier step made.
                    let artifact = dir.split('/').next().unwrap_or(dir);
                    if scope
                        .artifacts
                        .as_ref()
                        .is_some_and(|a| !a.contains(artifact))
                    {
                        self.problem(format_args!(
                            "{at} {action}: {dir:?} is not a directory of this build (no earlier step provides {artifact:?})"
                        ));
                    }
                }
                Some(_) => {}
            },
        }
    }

    fn pool_source(&mut self, resource: &str, source: Option<&Value>) {
        let at = format!("resource {resource:?}");
        let Some(source) = source.and_then(Value::as_object) else {
            self.problem(format_args!("{at} has no source"));
            return;
        };
        for key in source.keys() {
            if !SOURCE_FIELDS.contains(&key.as_str()) {
                self.problem(format_args!(
                    "{at} has source field {key:?}, which this resource does not have"
                ));
            }
        }
        for key in REQUIRED_SOURCE_FIELDS {
            let given = matches!(source.get(*key), Some(Value::String(s)) if !s.is_empty());
            if !given {
                self.problem(format_args!("{at} needs source.{key}"));
            }
        }
        if let Some(backend) = source.get("backend") {
            if !backend.as_str().is_some_and(|b| BACKENDS.contains(&b)) {
                self.problem(format_args!(
                    "{at} source.backend is {backend}, not one of {BACKENDS:?}"
                ));
            }
        }
        if let Some(delay) = source.get("retry_delay") {
            if !delay.as_str().is_some_and(is_go_duration) {
                self.problem(format_args!(
                    "{at} source.retry_delay {delay} is not a duration like \"10s\""
                ));
            }
        }
    }

    /// Every `((.:var))` in the job must have been set by a `load_var` in it.
    fn local_vars(&mut self, job: &Value, scope: &JobScope, at: &str) {
        let mut used = BTreeSet::new();
        strings(job, &mut |s| {
            for part in s.split("((.:").skip(1) {
                if let Some(end) = part.find("))") {
                    used.insert(part[..end].trim().to_string());
                }
            }
        });
        for var in used {
            let root = var.split('.').next().unwrap_or(&var).to_string();
            if !scope.local_vars.contains(&root) {
                self.problem(format_args!(
                    "{at} uses ((.:{var})), but no load_var sets {root:?}"
                ));
            }
        }
    }
}

/// The resources named by every get and put under `value`.
fn resources_touched(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for kind in ["get", "put"] {
                if let Some(label) = map.get(kind).and_then(Value::as_str) {
                    let resource = map.get("resource").and_then(Value::as_str).unwrap_or(label);
                    out.insert(resource.to_string());
                }
            }
            for (key, v) in map {
                // Task configs and params hold no steps.
                if !matches!(key.as_str(), "config" | "params" | "source") {
                    resources_touched(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| resources_touched(v, out)),
        _ => {}
    }
}

/// Calls `f` on every string under `value`.
fn strings(value: &Value, f: &mut impl FnMut(&str)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|v| strings(v, f)),
        Value::Object(map) => map.values().for_each(|v| strings(v, f)),
        _ => {}
    }
}

/// Whether `s` reads as a Go duration: number-unit pairs such as `1m30s`.
fn is_go_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ns", "us", "µs", "ms", "s", "m", "h"]
            .into_iter()
            .find(|u| rest.starts_with(u))
        else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    true
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn examples() -> Vec<PathBuf> {
    let dir = repo_path("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| entry.expect("reading examples/").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        // Prometheus rules and their tests live beside the pipelines.
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("prometheus-"))
        })
        .collect();
    files.sort();
    files
}

fn assert_valid(path: &Path) {
    let name = path
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path);
    let problems = check_pipeline(&name.display().to_string(), &read(path));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_ci_pipeline_is_valid() {
    assert_valid(&repo_path("ci/pipeline.yml"));
}

#[test]
fn the_ci_pipeline_tests_builds_and_pushes_with_credentials_from_the_credential_manager() {
    let yaml = read(&repo_path("ci/pipeline.yml"));
    let doc: Value = serde_norway::from_str(&yaml).expect("ci/pipeline.yml is YAML");
    let mut builds = Vec::new();
    let mut pushes = Vec::new();
    for job in doc["jobs"].as_array().expect("jobs") {
        let mut touched = BTreeSet::new();
        resources_touched(job, &mut touched);
        strings(job, &mut |s| {
            if s == "build" {
                builds.push(job["name"].as_str().unwrap_or_default().to_string());
            }
        });
        for step in job["plan"].as_array().expect("plan") {
            if let Some(put) = step.get("put").and_then(Value::as_str) {
                pushes.push((
                    job["name"].as_str().unwrap_or_default().to_string(),
                    put.to_string(),
                ));
            }
        }
    }
    assert!(!builds.is_empty(), "no job runs oci-build-task's `build`");
    let registry: Vec<&Value> = doc["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter(|r| r["type"] == "registry-image" && r["source"]["repository"] == IMAGE_REPOSITORY)
        .collect();
    assert!(
        !registry.is_empty(),
        "no registry-image resource for {IMAGE_REPOSITORY}"
    );
    for r in &registry {
        for field in ["username", "password"] {
            let value = r["source"][field].as_str().unwrap_or_default();
            assert!(
                value.starts_with("((") && value.ends_with("))"),
                "resource {} source.{field} is {value:?}, not a ((var)) from the credential manager",
                r["name"]
            );
        }
    }
    let pushed: BTreeSet<&str> = pushes.iter().map(|(_, r)| r.as_str()).collect();
    for r in &registry {
        let name = r["name"].as_str().unwrap_or_default();
        assert!(pushed.contains(name), "nothing pushes {name}: {pushes:?}");
    }
    // Pushes happen on main (after the tests) and on version tags.
    let git: Vec<&Value> = doc["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter(|r| r["type"] == "git")
        .collect();
    assert!(
        git.iter()
            .any(|r| r["source"]["branch"] == "main" && r["source"].get("tag_regex").is_none()),
        "no git resource follows main"
    );
    assert!(
        git.iter()
            .any(|r| r["source"].get("tag_regex").is_some()
                || r["source"].get("tag_filter").is_some()),
        "no git resource follows version tags"
    );
}

#[test]
fn every_example_is_a_valid_pipeline_using_only_what_this_resource_has() {
    let files = examples();
    let names: Vec<String> = files
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for expected in [
        "multi-environment-deploy.yml",
        "codecommit-instance-profile.yml",
        "claim-named-lock.yml",
        "wait-for-lock.yml",
        "several-locks-at-once.yml",
        "shared-smoke-tests.yml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "examples/{expected} is missing: {names:?}"
        );
    }
    for file in &files {
        assert_valid(file);
        // An example that never uses this resource shows nothing.
        let doc: Value = serde_norway::from_str(&read(file)).expect("checked above");
        let ours = doc["resource_types"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["source"]["repository"] == IMAGE_REPOSITORY);
        assert!(
            ours,
            "{} does not register {IMAGE_REPOSITORY}",
            file.display()
        );
    }
}

/// The names in `(known: a, b, c)` at the end of an `error:` line.
fn known_names(stderr: &str) -> BTreeSet<String> {
    let line = stderr
        .lines()
        .map(|l| l.replace("\x1b[31m", "").replace("\x1b[0m", ""))
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"));
    let list = line
        .rsplit_once("(known: ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no list of known names in: {line}"));
    list.split(", ").map(String::from).collect()
}

/// The lists above are checked against what the real executables accept,
/// not against the text of the source (where a name in a comment would
/// pass): an unknown param's error lists the known ones, every source field
/// listed here is taken without an "unknown field" warning while a
/// misspelt one gets it, and a bad backend's error names the backends.
#[test]
fn the_param_and_field_names_checked_here_are_the_ones_the_resource_parses() {
    let dir = tempfile::TempDir::new().expect("a temp dir");
    let source = |extra: &[(&str, Value)]| {
        let mut s =
            serde_json::json!({"uri": "/nonexistent/locks.git", "branch": "main", "pool": "p"});
        for (k, v) in extra {
            s[*k] = v.clone();
        }
        s
    };
    let far = "zzzzzzzzzzzzzzzzzzzzzzzz";
    let put = run_bin(
        "out",
        &[dir.path()],
        &serde_json::json!({"source": source(&[]), "params": {far: true}}),
        &[],
    );
    let put_known: BTreeSet<String> = PUT_ACTIONS
        .iter()
        .chain(PUT_MODIFIERS)
        .map(|s| s.to_string())
        .collect();
    assert_eq!(known_names(&put.stderr), put_known, "put params");
    let get = run_bin(
        "in",
        &[dir.path()],
        &serde_json::json!({"source": source(&[]), "version": {"ref": "abcd"}, "params": {far: 1}}),
        &[],
    );
    let get_known: BTreeSet<String> = GET_PARAMS.iter().map(|s| s.to_string()).collect();
    assert_eq!(known_names(&get.stderr), get_known, "get params");

    let value_for = |field: &str| match field {
        "forward_agent" | "skip_ssl_verification" => Value::Bool(false),
        "git_config" => serde_json::json!([]),
        "https_tunnel" => serde_json::json!({"proxy_host": "127.0.0.1", "proxy_port": 3128}),
        "backend" => Value::String("git".into()),
        _ => Value::String("x".into()),
    };
    let warns_unknown = |field: &str| {
        let extra = [(field, value_for(field))];
        let run = run_bin(
            "check",
            &[],
            &serde_json::json!({"source": source(&extra)}),
            &[],
        );
        run.stderr
            .contains(&format!("unknown field source.{field} "))
    };
    for field in SOURCE_FIELDS {
        assert!(!warns_unknown(field), "check calls source.{field} unknown");
    }
    assert!(
        warns_unknown("privat_key"),
        "a misspelt field is not warned about"
    );

    let bad = run_bin(
        "check",
        &[],
        &serde_json::json!({"source": source(&[("backend", Value::String("nope".into()))])}),
        &[],
    );
    let expected = format!("({})", BACKENDS.join(" or "));
    assert!(bad.stderr.contains(&expected), "{}", bad.stderr);
}

const POOL_TYPE: &str = "
resource_types:
- name: pool
  type: registry-image
  source: {repository: ghcr.io/pool-resource/pool-resource}
";

/// A pipeline made of POOL_TYPE, a pool resource `locks` with `source`, and
/// one job with `plan`.
fn pool_pipeline(source: &str, plan: &str) -> String {
    format!(
        "{POOL_TYPE}
resources:
- name: locks
  type: pool
  source: {source}
jobs:
- name: deploy
  plan:
{plan}"
    )
}

const SOURCE: &str = "{uri: 'git@example.com:locks.git', branch: main, pool: envs}";

fn problems_of(yaml: &str) -> String {
    check_pipeline("test.yml", yaml).join("\n")
}

#[test]
fn a_sound_pool_pipeline_has_no_problems() {
    let yaml = pool_pipeline(
        SOURCE,
        "
  - put: env
    resource: locks
    params: {acquire: true}
  - task: use
    config:
      platform: linux
      image_resource: {type: registry-image, source: {repository: alpine}}
      inputs: [{name: env}]
      run: {path: cat, args: [env/name]}
    ensure:
      put: locks
      params: {release: env}
  - get: locks
    params: {depth: 1}
",
    );
    assert_eq!(problems_of(&yaml), "");
}

#[test]
fn the_checker_finds_a_shared_put_that_cannot_share() {
    for (params, problem) in [
        (
            "{acquire: true, shared: yes-please}",
            "shared must be true or false",
        ),
        (
            "{acquire: 2, shared: true}",
            "shared goes with acquire: true or claim: LOCK",
        ),
        (
            "{release: env, shared: true}",
            "shared goes with acquire: true or claim: LOCK",
        ),
    ] {
        let yaml = pool_pipeline(
            SOURCE,
            &format!(
                "
  - put: env
    resource: locks
    params: {params}
"
            ),
        );
        let found = problems_of(&yaml);
        assert!(found.contains(problem), "{params}: {found}");
    }
    let sound = pool_pipeline(
        SOURCE,
        "
  - put: env
    resource: locks
    params: {claim: staging, shared: true}
",
    );
    assert_eq!(problems_of(&sound), "");
}

#[test]
fn the_checker_finds_what_fly_would_reject() {
    let yaml = "
resourses: []
resources:
- name: repo
  type: gitt
jobs:
- name: build
  plan:
  - get: nothing
  - get: repo
    passed: [nobody]
  - task: no-config
  - task: both
    file: x.yml
    config: {}
  - put: repo
    params: {version: ((.:unset))}
  - wait: 5
";
    let problems = problems_of(yaml);
    for expected in [
        "the pipeline has unknown key \"resourses\"",
        "resource \"repo\" has unknown type \"gitt\"",
        "(get: nothing) names unknown resource \"nothing\"",
        "passed names unknown job \"nobody\"",
        "(task: no-config) has neither config nor file",
        "(task: both) has both config and file",
        "uses ((.:unset)), but no load_var sets \"unset\"",
        "is no known kind of step",
    ] {
        assert!(
            problems.contains(expected),
            "missing {expected:?} in:\n{problems}"
        );
    }
}

#[test]
fn the_checker_finds_params_and_fields_this_resource_does_not_have() {
    let yaml = pool_pipeline(
        "{uri: 'git@example.com:locks.git', branch: main, pol: envs, backend: svn, retry_delay: soon}",
        "
  - put: locks
    params: {aquire: true}
  - put: locks
    params: {acquire: true, release: env}
  - put: locks
    params: {release: never-fetched}
    get_params: {dept: 1}
  - get: locks
    params: {depth: 1, shallow: true}
",
    );
    let problems = problems_of(&yaml);
    for expected in [
        "has source field \"pol\", which this resource does not have",
        "needs source.pool",
        "source.backend is \"svn\"",
        "source.retry_delay \"soon\" is not a duration",
        "uses param \"aquire\"",
        "has [\"acquire\", \"release\"]",
        "release: \"never-fetched\" is not a directory of this build",
        "get_params uses param \"dept\"",
        "uses param \"shallow\"",
    ] {
        assert!(
            problems.contains(expected),
            "missing {expected:?} in:\n{problems}"
        );
    }
}

#[test]
fn the_built_in_pool_type_is_not_mistaken_for_this_resource() {
    let yaml = "
resources:
- name: locks
  type: pool
  source: {uri: x, branch: main, pool: p}
jobs:
- name: j
  plan:
  - put: locks
    params: {acquire: true}
";
    assert!(
        problems_of(yaml).contains("uses the built-in pool type"),
        "{}",
        problems_of(yaml)
    );
}

#[test]
fn go_durations_are_recognised() {
    for ok in ["10s", "1m30s", "1.5h", "100ms", "2h45m"] {
        assert!(is_go_duration(ok), "{ok}");
    }
    for bad in ["", "10", "s", "ten seconds", "1d"] {
        assert!(!is_go_duration(bad), "{bad}");
    }
}
