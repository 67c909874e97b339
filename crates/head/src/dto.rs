//! The JSON documents of the HTTP API that are not the snapshot itself: errors, the events of
//! `/api/v1/events`, and the admin endpoints' requests and replies.
//!
//! The dashboard (`ui/`) consumes these and the snapshot's types through TypeScript
//! declarations generated from them with `ts-rs` into `ui/src/lib/generated/`; the test at the
//! bottom of this file fails when the committed declarations no longer match.

use serde::{Deserialize, Serialize};

/// Every error answer: `{"error": {"code", "message"}}`. `code` is stable, for programs;
/// `message` is English, for people.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ApiError {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ErrorBody {
    /// `unauthorized`, `not_found`, `bad_request`, `no_control_plane`, `ray_unavailable`,
    /// `ray_auth`, `ray_error`, `internal`.
    pub code: String,
    pub message: String,
}

/// The `node` event of `/api/v1/events`: a state change the registry recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct NodeEvent {
    pub id: i64,
    pub node_id: i64,
    pub at_unix_ms: u64,
    /// `enrolled`, `state` or `revoked`.
    pub kind: String,
    /// The registry's state after the event: `enrolled`, `online`, `paused`, `draining`,
    /// `offline`.
    pub state: String,
    /// The reason code the node reported (see `AgentView::reason_code`).
    pub reason: String,
}

/// How an admin pauses a node.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum PauseMode {
    /// Stop now; Ray reruns the node's tasks elsewhere.
    #[default]
    Now,
    /// Take no new tasks; let the running ones finish.
    Finish,
}

/// The body of `POST /api/v1/nodes/{node}/pause` (all optional: an empty body pauses now,
/// until resumed), as `flotilla pause --node` sends it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub mode: Option<PauseMode>,
    /// Pause for this many seconds, then resume by itself (absent: until resumed).
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub for_secs: Option<u64>,
}

/// The reply to a pause or resume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct CommandReply {
    pub node_id: i64,
    pub name: String,
    /// Whether the node was connected and got the command now (otherwise it gets it when it
    /// reconnects).
    pub delivered: bool,
}

/// The reply to `POST /api/v1/jobs/{id}/stop`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct StopJobReply {
    pub id: String,
    /// Whether Ray stopped it now (`false`: it had already ended).
    pub stopped: bool,
}

/// The body of `POST /api/v1/invites` (all optional: one machine, 24 hours).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub uses: Option<u32>,
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub expires_secs: Option<u64>,
}

/// A new join code, with its QR code as an SVG document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct InviteReply {
    pub code: String,
    /// Its id, for `POST /api/v1/invites/{id}/revoke`.
    pub id: String,
    pub expires_unix: u64,
    pub uses: u32,
    pub qr_svg: String,
}

/// A join code the head made, as `GET /api/v1/invites` lists it (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct InviteView {
    pub id: String,
    /// `usable`, `used up`, `expired` or `withdrawn`.
    pub state: String,
    pub created_unix: u64,
    pub expires_unix: u64,
    /// Uses it was made with (0: not known) and uses left.
    pub uses: u32,
    pub uses_left: u32,
    pub revoked_unix: Option<u64>,
    /// The names of the nodes that joined with it.
    pub joined: Vec<String>,
}

/// The reply to `POST /api/v1/invites/{id}/revoke`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct RevokeInviteReply {
    pub id: String,
    /// `false`: it was withdrawn already.
    pub revoked: bool,
}

/// The reply to `GET /api/v1/whoami`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Whoami {
    /// Whether the request carried the admin token.
    pub admin: bool,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use ts_rs::{Config, TS};

    fn committed_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui/src/lib/generated")
    }

    /// Every `.ts` file under `dir`, by name.
    fn read_dir(dir: &Path) -> BTreeMap<String, String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "ts"))
                    .map(|e| {
                        (
                            e.file_name().to_string_lossy().into_owned(),
                            std::fs::read_to_string(e.path()).unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn export_to(dir: &Path) {
        // JSON numbers: serde writes 64-bit integers as numbers, and none of ours exceed 2^53.
        let cfg = Config::new().with_large_int("number").with_out_dir(dir);
        crate::ClusterSnapshot::export_all(&cfg).unwrap();
        super::ApiError::export_all(&cfg).unwrap();
        super::NodeEvent::export_all(&cfg).unwrap();
        super::PauseRequest::export_all(&cfg).unwrap();
        super::CommandReply::export_all(&cfg).unwrap();
        super::InviteRequest::export_all(&cfg).unwrap();
        super::InviteReply::export_all(&cfg).unwrap();
        super::Whoami::export_all(&cfg).unwrap();
        super::StopJobReply::export_all(&cfg).unwrap();
        super::InviteView::export_all(&cfg).unwrap();
        super::RevokeInviteReply::export_all(&cfg).unwrap();
    }

    /// Run with `FLOTILLA_WRITE_BINDINGS=1` to rewrite `ui/src/lib/generated/`.
    #[test]
    fn the_committed_typescript_declarations_are_current() {
        let fresh = tempfile::tempdir().unwrap();
        export_to(fresh.path());
        let want = read_dir(fresh.path());
        assert!(want.contains_key("ClusterSnapshot.ts"), "{:?}", want.keys());
        if std::env::var_os("FLOTILLA_WRITE_BINDINGS").is_some() {
            let dir = committed_dir();
            for name in read_dir(&dir).keys() {
                std::fs::remove_file(dir.join(name)).unwrap();
            }
            std::fs::create_dir_all(&dir).unwrap();
            for (name, text) in &want {
                std::fs::write(dir.join(name), text).unwrap();
            }
        }
        let have = read_dir(&committed_dir());
        assert!(
            have == want,
            "ui/src/lib/generated/ is stale: regenerate it with \
             `FLOTILLA_WRITE_BINDINGS=1 cargo test -p flotilla-head --lib dto` and commit the \
             result (files that differ: {:?})",
            want.keys()
                .chain(have.keys())
                .filter(|k| have.get(*k) != want.get(*k))
                .collect::<std::collections::BTreeSet<_>>()
        );
    }
}
