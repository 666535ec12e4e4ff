//! The agent policy: every `grpc.AgentService` request is checked against a
//! Rego policy before the agent acts on it, as upstream's agent does when
//! built with its `agent-policy` feature, so the policies Kata's tooling
//! writes (genpolicy's, `allow-all.rego`) mean the same here.
//!
//! - The rule is named after the request's message type
//!   (`data.agent_policy.CreateContainerRequest`, `ReadStreamRequest` for
//!   both ReadStdout and ReadStderr, `GuestDetailsRequest`, ...) and sees the
//!   request as `input` in upstream's JSON form ([`input`]).
//! - A rule may give a boolean, or an object `{"allowed": bool, "ops": [...]}`
//!   whose JSON-patch `ops` update `data.pstate`, the policy's own state
//!   (genpolicy's rules remember the sandbox name and namespace there).
//! - A refused request gets `PERMISSION_DENIED` with
//!   `<Request> is blocked by policy: <the policy's print output>`; an
//!   undefined rule refuses too. A failed evaluation answers `INTERNAL`
//!   (`<Request>: internal error <cause>`).
//! - `AllowRequestsFailingPolicy`, when the policy makes it true, lets
//!   refused requests through, each logged as such.
//! - The policy at start is [`DEFAULT_POLICY_FILE`] (`agent.policy_file`
//!   overrides the path); without that file nothing is checked. SetPolicy
//!   replaces it, after its own check (`SetPolicyRequest`) against the
//!   policy in force; a policy that does not compile is refused with the
//!   engine's error and the old one stays.
//! - `grpc.Health` is not checked, as upstream: the shim's liveness probe
//!   does not depend on what a pod's policy lists.

pub mod input;

use std::path::Path;
use std::sync::Mutex;

use protobuf::MessageDyn;
use protocols::agent::CopyFileRequest;
use regorus::{Engine, Value};

/// Where upstream's guest image keeps the policy in force at start.
pub const DEFAULT_POLICY_FILE: &str = "/etc/kata-opa/default-policy.rego";

/// The package every agent policy declares.
const PACKAGE: &str = "agent_policy";

/// The rule that, when true, lets requests that fail the policy through.
const ALLOW_FAILURES_RULE: &str = "AllowRequestsFailingPolicy";

/// The longest policy accepted: a ttrpc message's limit. genpolicy's
/// policies run to a few hundred KiB, with long lines of JSON data.
const MAX_POLICY_BYTES: usize = 4 << 20;

/// The policy in force.
pub struct Policy {
    state: Mutex<State>,
}

struct State {
    /// `None`: no policy, every request is allowed without a look.
    engine: Option<Engine>,
    allow_failures: bool,
}

/// What a rule decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Refused, with the policy's print output.
    Blocked(String),
    /// Refused by the policy but let through by `AllowRequestsFailingPolicy`.
    AllowedFailing(String),
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{ep} is blocked by policy: {prints}")]
    Blocked { ep: String, prints: String },
    #[error("{ep}: internal error {cause}")]
    Internal { ep: String, cause: String },
    #[error("{ep}: {cause}")]
    BadInput { ep: String, cause: String },
    #[error("policy: {0}")]
    Invalid(String),
}

impl PolicyError {
    pub fn code(&self) -> ttrpc::Code {
        match self {
            PolicyError::Blocked { .. } => ttrpc::Code::PERMISSION_DENIED,
            PolicyError::Internal { .. } => ttrpc::Code::INTERNAL,
            PolicyError::BadInput { .. } | PolicyError::Invalid(_) => ttrpc::Code::INVALID_ARGUMENT,
        }
    }
}

crate::error::into_status!(PolicyError);

impl Default for Policy {
    fn default() -> Self {
        Policy::allow_all()
    }
}

/// Upstream's `allow-all.rego` (src/kata-opa), rule for rule: every
/// request allowed, through the engine (unlike [`Policy::allow_all`]).
pub const ALLOW_ALL_REGO: &str = include_str!("allow-all.rego");

impl Policy {
    /// No policy: nothing is checked.
    pub fn allow_all() -> Self {
        Policy {
            state: Mutex::new(State {
                engine: None,
                allow_failures: false,
            }),
        }
    }

    /// The policy of `path`; none when the file does not exist. A file that
    /// cannot be read or compiled refuses every request (SetPolicy
    /// included): a guest whose image asked for a policy never runs without
    /// one.
    pub fn load(path: &Path) -> Self {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                log::info!(
                    "no policy file {}: every request is allowed",
                    path.display()
                );
                return Policy::allow_all();
            }
            Err(e) => {
                log::error!(
                    "policy file {}: {}; every request is refused",
                    path.display(),
                    crate::error::describe_io(&e)
                );
                return Policy::refuse_all();
            }
        };
        match compile(&path.display().to_string(), &text) {
            Ok((engine, allow_failures)) => {
                log::info!(
                    "policy {} in force ({} bytes){}",
                    path.display(),
                    text.len(),
                    if allow_failures {
                        "; AllowRequestsFailingPolicy is on: refused requests are let through"
                    } else {
                        ""
                    }
                );
                Policy::with_engine(engine, allow_failures)
            }
            Err(e) => {
                log::error!(
                    "policy file {}: {e}; every request is refused",
                    path.display()
                );
                Policy::refuse_all()
            }
        }
    }

    /// A policy from Rego text.
    pub fn from_rego(text: &str) -> Result<Self, PolicyError> {
        let (engine, allow_failures) = compile(PACKAGE, text)?;
        Ok(Policy::with_engine(engine, allow_failures))
    }

    fn with_engine(engine: Engine, allow_failures: bool) -> Self {
        Policy {
            state: Mutex::new(State {
                engine: Some(engine),
                allow_failures,
            }),
        }
    }

    /// An engine without rules: every rule is undefined, so every request
    /// is refused.
    fn refuse_all() -> Self {
        Policy::with_engine(new_engine(), false)
    }

    /// Whether requests are checked at all.
    pub fn is_enforcing(&self) -> bool {
        self.lock().engine.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic during an evaluation leaves the engine as it was before
        // the request: its state only changes after a decision.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks a request before it is acted on: `Ok` when the policy allows
    /// it (or there is none).
    pub fn check_request(&self, req: &dyn MessageDyn) -> Result<(), PolicyError> {
        let mut state = self.lock();
        if state.engine.is_none() {
            return Ok(());
        }
        let desc = req.descriptor_dyn();
        let ep = desc.name();
        let json = match req.downcast_ref::<CopyFileRequest>() {
            Some(copy) => input::copy_file(copy).map_err(|e| PolicyError::BadInput {
                ep: ep.to_string(),
                cause: format!("parse for policy: {e}"),
            })?,
            None => input::to_json(req),
        };
        state.check(ep, &json)
    }

    /// Evaluates the rule `ep` with `input_json`, as [`Policy::check_request`]
    /// does once it has the request's JSON form.
    pub fn check_json(&self, ep: &str, input_json: &str) -> Result<(), PolicyError> {
        self.lock().check(ep, input_json)
    }

    /// Replaces the policy with `text` (SetPolicy, after its own check). On
    /// error the policy in force stays.
    pub fn set(&self, text: &str) -> Result<(), PolicyError> {
        let (engine, allow_failures) = compile(PACKAGE, text)?;
        let mut state = self.lock();
        state.engine = Some(engine);
        state.allow_failures = allow_failures;
        log::info!(
            "policy replaced by SetPolicy ({} bytes){}",
            text.len(),
            if allow_failures {
                "; AllowRequestsFailingPolicy is on: refused requests are let through"
            } else {
                ""
            }
        );
        Ok(())
    }
}

impl State {
    fn check(&mut self, ep: &str, input_json: &str) -> Result<(), PolicyError> {
        let Some(engine) = self.engine.as_mut() else {
            return Ok(());
        };
        match decide(engine, ep, input_json, self.allow_failures)? {
            Decision::Allowed => {
                log::debug!("policy: {ep}: allowed");
                Ok(())
            }
            Decision::AllowedFailing(prints) => {
                log::warn!(
                    "policy: {ep}: blocked by policy, let through by {ALLOW_FAILURES_RULE}{}{prints}",
                    if prints.is_empty() { "" } else { ": " }
                );
                Ok(())
            }
            Decision::Blocked(prints) => {
                log::warn!(
                    "policy: {ep}: blocked{}{prints}",
                    if prints.is_empty() { "" } else { ": " }
                );
                Err(PolicyError::Blocked {
                    ep: ep.to_string(),
                    prints,
                })
            }
        }
    }
}

fn new_engine() -> Engine {
    let mut engine = Engine::new();
    // As upstream: a builtin's error makes its expression undefined instead
    // of failing the whole evaluation; print() output is kept for the
    // refusal's message.
    engine.set_strict_builtin_errors(false);
    engine.set_gather_prints(true);
    // The policy's state, which rules read as data.pstate and update with
    // their decision's ops.
    let mut pstate = Value::new_object();
    if let Ok(map) = pstate.as_object_mut() {
        map.insert(Value::from("pstate"), Value::new_object());
    }
    let _ = engine.add_data(pstate);
    engine
}

/// Compiles a policy and reads its `AllowRequestsFailingPolicy`.
///
/// Policies written for upstream's agent are Rego v0 (with
/// `future.keywords` or `rego.v1` imports where they use `if`, `in`,
/// `every`); a policy that only parses as Rego v1 is taken as such.
fn compile(name: &str, text: &str) -> Result<(Engine, bool), PolicyError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(PolicyError::Invalid(format!(
            "{} bytes, more than the {MAX_POLICY_BYTES} accepted",
            text.len()
        )));
    }
    let mut engine = new_engine();
    if let Err(v0) = engine.add_policy(name.to_string(), text.to_string()) {
        engine = new_engine();
        engine.set_rego_v1(true);
        if engine
            .add_policy(name.to_string(), text.to_string())
            .is_err()
        {
            return Err(PolicyError::Invalid(v0.to_string()));
        }
    }
    let packages = engine
        .get_packages()
        .map_err(|e| PolicyError::Invalid(e.to_string()))?;
    let wanted = format!("data.{PACKAGE}");
    if !packages.contains(&wanted) {
        return Err(PolicyError::Invalid(format!(
            "no package {PACKAGE} (the policy declares {})",
            if packages.is_empty() {
                "none".to_string()
            } else {
                packages.join(", ")
            }
        )));
    }
    let allow_failures = matches!(
        decide(&mut engine, ALLOW_FAILURES_RULE, "{}", false),
        Ok(Decision::Allowed)
    );
    Ok((engine, allow_failures))
}

/// Evaluates `data.agent_policy.<ep>` with `input_json` as input.
fn decide(
    engine: &mut Engine,
    ep: &str,
    input_json: &str,
    allow_failures: bool,
) -> Result<Decision, PolicyError> {
    let internal = |cause: String| PolicyError::Internal {
        ep: ep.to_string(),
        cause,
    };
    engine
        .set_input_json(input_json)
        .map_err(|e| internal(format!("input: {e}")))?;
    let rule = format!("data.{PACKAGE}.{ep}");
    let result = engine.eval_rule(rule.clone());
    let prints = engine.take_prints().unwrap_or_default().join(" ");
    let value = match result {
        Ok(v) => v,
        // A rule the policy does not define is an error for eval_rule;
        // asked as a query it is simply undefined.
        Err(e) => match engine.eval_query(rule, false) {
            Ok(r) if r.result.is_empty() => Value::Undefined,
            _ => {
                let _ = engine.take_prints();
                if allow_failures {
                    return Ok(Decision::AllowedFailing(e.to_string()));
                }
                return Err(internal(e.to_string()));
            }
        },
    };
    let _ = engine.take_prints();
    let allowed = match &value {
        Value::Bool(b) => *b,
        Value::Object(obj) => {
            let allowed = matches!(obj.get(&Value::from("allowed")), Some(Value::Bool(true)));
            if allowed {
                if let Some(ops) = obj.get(&Value::from("ops")) {
                    apply_ops(engine, ops).map_err(|e| internal(format!("state update: {e}")))?;
                }
            }
            allowed
        }
        _ => false,
    };
    let prints = if matches!(value, Value::Undefined) && prints.is_empty() {
        format!("{ep} is not defined by the policy")
    } else {
        prints
    };
    Ok(if allowed {
        Decision::Allowed
    } else if allow_failures {
        Decision::AllowedFailing(prints)
    } else {
        Decision::Blocked(prints)
    })
}

/// Applies a decision's JSON-patch operations (`add`, `replace`, `remove`)
/// to the engine's data, as upstream does to keep the policy's state.
fn apply_ops(engine: &mut Engine, ops: &Value) -> Result<(), String> {
    let Value::Array(ops) = ops else {
        return match ops {
            Value::Null | Value::Undefined => Ok(()),
            _ => Err("ops is not an array".to_string()),
        };
    };
    if ops.is_empty() {
        return Ok(());
    }
    let mut data: serde_json::Value =
        serde_json::from_str(&engine.get_data().to_json_str().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    for op in ops.iter() {
        let op: serde_json::Value =
            serde_json::from_str(&op.to_json_str().map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        patch_one(&mut data, &op)?;
    }
    let data = Value::from_json_str(&data.to_string()).map_err(|e| e.to_string())?;
    engine.clear_data();
    engine.add_data(data).map_err(|e| e.to_string())
}

fn patch_one(doc: &mut serde_json::Value, op: &serde_json::Value) -> Result<(), String> {
    let kind = op.get("op").and_then(|v| v.as_str()).unwrap_or_default();
    let path = op
        .get("path")
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("op {op}: no path"))?;
    let (parent, last) = match path.rfind('/') {
        Some(i) => (&path[..i], unescape(&path[i + 1..])),
        None => return Err(format!("op {op}: path {path:?} is not a JSON pointer")),
    };
    let target = doc
        .pointer_mut(parent)
        .ok_or_else(|| format!("op {op}: no {parent:?}"))?;
    match (kind, target) {
        ("add" | "replace", serde_json::Value::Object(map)) => {
            let value = op.get("value").cloned().unwrap_or(serde_json::Value::Null);
            if kind == "replace" && !map.contains_key(&last) {
                return Err(format!("op {op}: nothing at {path:?}"));
            }
            map.insert(last, value);
            Ok(())
        }
        ("add" | "replace", serde_json::Value::Array(list)) => {
            let value = op.get("value").cloned().unwrap_or(serde_json::Value::Null);
            if kind == "add" && last == "-" {
                list.push(value);
                return Ok(());
            }
            let i: usize = last
                .parse()
                .map_err(|_| format!("op {op}: bad index {last:?}"))?;
            match kind {
                "add" if i <= list.len() => list.insert(i, value),
                "replace" if i < list.len() => list[i] = value,
                _ => return Err(format!("op {op}: index {i} out of range")),
            }
            Ok(())
        }
        ("remove", serde_json::Value::Object(map)) => map
            .remove(&last)
            .map(drop)
            .ok_or_else(|| format!("op {op}: nothing at {path:?}")),
        ("remove", serde_json::Value::Array(list)) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("op {op}: bad index {last:?}"))?;
            if i < list.len() {
                list.remove(i);
                Ok(())
            } else {
                Err(format!("op {op}: index {i} out of range"))
            }
        }
        _ => Err(format!("op {op}: unsupported")),
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

#[cfg(test)]
mod tests;
