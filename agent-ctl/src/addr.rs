//! Agent addresses: where the ttrpc server listens, as the user spells it.

use std::fmt;
use std::path::PathBuf;

/// The vsock port the agent serves ttrpc on (Kata's default).
pub const DEFAULT_AGENT_PORT: u32 = 1024;

/// One place to reach the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `unix:///path`: a Unix socket the agent listens on (host-side tests).
    Unix(PathBuf),
    /// `unix://@name`: a Linux abstract Unix socket.
    UnixAbstract(String),
    /// `vsock://CID:PORT`: a guest reached through the host kernel's vsock.
    Vsock { cid: u32, port: u32 },
    /// `hvsock:///path:PORT`: hybrid vsock, a Unix socket on the host exposed
    /// by the VMM (Firecracker, Cloud Hypervisor, vhost-device-vsock); the
    /// client sends `CONNECT PORT\n` and waits for `OK ...\n`.
    HybridVsock { path: PathBuf, port: u32 },
}

/// The forms accepted, for error messages and help.
pub const FORMS: &str = "unix:///PATH, unix://@NAME, vsock://CID:PORT or hvsock:///PATH:PORT";

impl Address {
    /// Parses an address; errors name the address and what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid address {s:?}: {why}");
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(bad(&format!("expected {FORMS}")));
        };
        match scheme {
            "unix" => {
                if rest.is_empty() {
                    return Err(bad("missing socket path"));
                }
                match rest.strip_prefix('@') {
                    Some("") => Err(bad("missing abstract socket name after '@'")),
                    Some(name) => Ok(Self::UnixAbstract(name.to_string())),
                    None => Ok(Self::Unix(PathBuf::from(rest))),
                }
            }
            "vsock" => {
                let Some((cid, port)) = rest.split_once(':') else {
                    return Err(bad("expected vsock://CID:PORT"));
                };
                if cid == "-1" {
                    return Err(bad(
                        "CID -1 (any) is for listening; give the guest's CID, e.g. vsock://3:1024",
                    ));
                }
                let cid = parse_u32(cid).map_err(|e| bad(&format!("CID {cid:?}: {e}")))?;
                let port = parse_u32(port).map_err(|e| bad(&format!("port {port:?}: {e}")))?;
                Ok(Self::Vsock { cid, port })
            }
            "hvsock" => {
                let Some((path, port)) = rest.rsplit_once(':') else {
                    return Err(bad("expected hvsock:///PATH:PORT"));
                };
                if path.is_empty() {
                    return Err(bad("missing socket path"));
                }
                let port = parse_u32(port).map_err(|e| bad(&format!("port {port:?}: {e}")))?;
                Ok(Self::HybridVsock {
                    path: PathBuf::from(path),
                    port,
                })
            }
            other => Err(bad(&format!("unknown scheme {other:?}; expected {FORMS}"))),
        }
    }

    /// Kata agent-ctl spells hybrid vsock as a `unix://` address plus
    /// `--hybrid-vsock [--hybrid-vsock-port PORT]`; this turns that into ours.
    pub fn into_hybrid(self, port: u32) -> Result<Self, String> {
        match self {
            Self::Unix(path) => Ok(Self::HybridVsock { path, port }),
            Self::HybridVsock { .. } => Ok(self),
            other => Err(format!(
                "--hybrid-vsock needs a unix:///PATH address, got {other}"
            )),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
            Self::UnixAbstract(name) => write!(f, "unix://@{name}"),
            Self::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
            Self::HybridVsock { path, port } => write!(f, "hvsock://{}:{port}", path.display()),
        }
    }
}

fn parse_u32(s: &str) -> Result<u32, String> {
    if s.is_empty() {
        return Err("missing".to_string());
    }
    s.parse::<u32>()
        .map_err(|_| "not a number from 0 to 4294967295".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_paths() {
        assert_eq!(
            Address::parse("unix:///run/agent.sock"),
            Ok(Address::Unix("/run/agent.sock".into()))
        );
        assert_eq!(
            Address::parse("unix://relative.sock"),
            Ok(Address::Unix("relative.sock".into()))
        );
        assert_eq!(
            Address::parse("unix://@/tmp/foo.socket"),
            Ok(Address::UnixAbstract("/tmp/foo.socket".into()))
        );
    }

    #[test]
    fn vsock() {
        assert_eq!(
            Address::parse("vsock://3:1024"),
            Ok(Address::Vsock { cid: 3, port: 1024 })
        );
        assert_eq!(
            Address::parse("vsock://4294967295:1"),
            Ok(Address::Vsock {
                cid: u32::MAX,
                port: 1
            })
        );
    }

    #[test]
    fn hybrid_vsock() {
        assert_eq!(
            Address::parse("hvsock:///run/vc/vm/x/clh.sock:1024"),
            Ok(Address::HybridVsock {
                path: "/run/vc/vm/x/clh.sock".into(),
                port: 1024
            })
        );
        // The port is whatever follows the last colon; the path may hold colons.
        assert_eq!(
            Address::parse("hvsock:///tmp/a:b.sock:5"),
            Ok(Address::HybridVsock {
                path: "/tmp/a:b.sock".into(),
                port: 5
            })
        );
        assert_eq!(
            Address::parse("unix:///run/clh.sock").and_then(|a| a.into_hybrid(DEFAULT_AGENT_PORT)),
            Ok(Address::HybridVsock {
                path: "/run/clh.sock".into(),
                port: 1024
            })
        );
        assert!(Address::parse("vsock://3:1024")
            .and_then(|a| a.into_hybrid(1024))
            .is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "unix:///run/agent.sock",
            "unix://@abstract",
            "vsock://3:1024",
            "hvsock:///run/vm.sock:1024",
        ] {
            let parsed = Address::parse(s);
            assert_eq!(parsed.map(|a| a.to_string()), Ok(s.to_string()));
        }
    }

    #[track_caller]
    fn assert_err(s: &str, needle: &str) {
        match Address::parse(s) {
            Ok(a) => panic!("{s:?} parsed as {a:?}"),
            Err(e) => {
                assert!(e.contains(needle), "{s:?}: error {e:?} lacks {needle:?}");
                assert!(
                    e.contains(&format!("{s:?}")),
                    "{e:?} does not name the input"
                );
            }
        }
    }

    #[test]
    fn bad_forms() {
        assert_err("/run/agent.sock", "expected unix:///PATH");
        assert_err("", "expected unix:///PATH");
        assert_err("tcp://127.0.0.1:1", "unknown scheme \"tcp\"");
        assert_err("unix://", "missing socket path");
        assert_err("unix://@", "missing abstract socket name");
        assert_err("vsock://3", "expected vsock://CID:PORT");
        assert_err("vsock://x:1024", "CID \"x\"");
        assert_err("vsock://3:", "port \"\": missing");
        assert_err("vsock://3:99999999999", "port \"99999999999\"");
        assert_err("vsock://-1:1024", "CID -1");
        assert_err("hvsock:///run/vm.sock", "expected hvsock:///PATH:PORT");
        assert_err("hvsock://:1024", "missing socket path");
        assert_err("hvsock:///run/vm.sock:abc", "port \"abc\"");
    }
}
