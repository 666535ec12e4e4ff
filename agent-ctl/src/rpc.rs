//! Raw unary ttrpc requests: service and method by name, payload as bytes.

use std::fmt;
use std::time::Duration;

use ttrpc::r#async::Client;

use crate::catalog::Method;

/// How a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The agent answered with a non-OK ttrpc status (or the client's own
    /// deadline passed, reported as `DEADLINE_EXCEEDED`).
    Status { code: String, message: String },
    /// The connection failed.
    Transport(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status { code, message } => write!(f, "{code}: {message}"),
            Self::Transport(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CallError {}

/// A ready-to-send request for `method`; clone it to send it again.
pub fn request(method: &Method, payload: Vec<u8>, timeout: Option<Duration>) -> ttrpc::Request {
    let mut req = ttrpc::Request::new();
    req.service = method.service.clone();
    req.method = method.name.clone();
    req.payload = payload;
    req.timeout_nano = timeout.map_or(0, |t| i64::try_from(t.as_nanos()).unwrap_or(i64::MAX));
    req
}

/// Sends one request and returns the response payload.
pub async fn call(client: &Client, req: ttrpc::Request) -> Result<Vec<u8>, CallError> {
    let timeout = Duration::from_nanos(u64::try_from(req.timeout_nano).unwrap_or(0));
    let path = format!("{}/{}", req.service, req.method);
    match client.request(req).await {
        Ok(resp) => Ok(resp.payload),
        Err(ttrpc::Error::RpcStatus(status)) => Err(CallError::Status {
            code: match status.code.enum_value() {
                Ok(code) => format!("{code:?}"),
                Err(n) => format!("CODE_{n}"),
            },
            message: status.message,
        }),
        // ttrpc's own client deadline.
        Err(ttrpc::Error::Others(m)) if m == "Request deadline elapsed" => Err(CallError::Status {
            code: "DEADLINE_EXCEEDED".into(),
            message: format!("no response to {path} within {timeout:?}"),
        }),
        Err(ttrpc::Error::RemoteClosed) | Err(ttrpc::Error::LocalClosed) => Err(
            CallError::Transport(format!("{path}: connection closed before the response")),
        ),
        Err(e) => Err(CallError::Transport(format!("{path}: {e}"))),
    }
}
