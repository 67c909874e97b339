//! Typed reads of Ray's own view of the cluster, through the dashboard's HTTP API.
//!
//! Only the fields Flotilla uses are parsed, each with a default, so a newer Ray that adds or
//! drops a field degrades to a missing value instead of an error. The token goes in an
//! `Authorization: Bearer` header (Ray answers 401 without it and 403 with a wrong one).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, RayToken, Result};

/// A node as Ray reports it (`/api/v0/nodes?detail=1`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RayNode {
    pub node_id: String,
    pub node_ip: String,
    pub is_head_node: bool,
    /// `ALIVE` or `DEAD`.
    pub state: String,
    pub state_message: Option<String>,
    pub node_name: String,
    pub resources_total: BTreeMap<String, f64>,
    pub labels: BTreeMap<String, String>,
    pub start_time_ms: u64,
    pub end_time_ms: u64,
}

impl RayNode {
    pub fn is_alive(&self) -> bool {
        self.state == "ALIVE"
    }

    pub fn cpus_total(&self) -> f64 {
        self.resources_total.get("CPU").copied().unwrap_or(0.0)
    }
}

/// Resource use per node and in total (`/api/cluster_status`): resource -> (used, total).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ResourceUsage {
    pub total: BTreeMap<String, (f64, f64)>,
    pub by_node: BTreeMap<String, BTreeMap<String, (f64, f64)>>,
}

impl ResourceUsage {
    /// CPUs in use on `node_id` (0 when Ray does not report the node).
    pub fn cpus_used(&self, node_id: &str) -> f64 {
        self.by_node
            .get(node_id)
            .and_then(|r| r.get("CPU"))
            .map_or(0.0, |(used, _)| *used)
    }
}

/// A Ray job (`/api/jobs/`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RayJob {
    pub job_id: Option<String>,
    pub submission_id: Option<String>,
    /// `SUBMISSION` or `DRIVER`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `PENDING`, `RUNNING`, `STOPPED`, `SUCCEEDED` or `FAILED`.
    pub status: String,
    pub entrypoint: String,
    pub message: Option<String>,
    pub start_time: Option<u64>,
    pub end_time: Option<u64>,
}

/// Task counts by state over the cluster (`/api/v0/tasks/summarize`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TaskCounts {
    pub by_state: BTreeMap<String, u64>,
}

impl TaskCounts {
    pub fn get(&self, state: &str) -> u64 {
        self.by_state.get(state).copied().unwrap_or(0)
    }

    /// Tasks waiting for or holding a worker.
    pub fn running(&self) -> u64 {
        self.get("RUNNING")
    }

    pub fn finished(&self) -> u64 {
        self.get("FINISHED")
    }

    pub fn failed(&self) -> u64 {
        self.get("FAILED")
    }

    /// Tasks not yet running: waiting for arguments, resources or a worker.
    pub fn pending(&self) -> u64 {
        self.by_state
            .iter()
            .filter(|(k, _)| k.starts_with("PENDING"))
            .map(|(_, v)| v)
            .sum()
    }
}

/// Client for one Ray dashboard.
#[derive(Debug, Clone)]
pub struct StateClient {
    base: String,
    token: Option<RayToken>,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Envelope<T> {
    #[serde(default)]
    result: bool,
    #[serde(default)]
    msg: String,
    data: Option<T>,
}

#[derive(Debug, Deserialize)]
struct ListData<T> {
    result: ListResult<T>,
}

#[derive(Debug, Deserialize)]
struct ListResult<T> {
    result: T,
}

impl StateClient {
    /// `base` is the dashboard's URL, e.g. `http://127.0.0.1:8265`.
    pub fn new(base: impl Into<String>, token: Option<RayToken>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .expect("a plain HTTP client always builds");
        StateClient {
            base: base.into().trim_end_matches('/').to_string(),
            token,
            http,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The body of a successful GET. Answers that grow with the cluster's history (nodes, jobs)
    /// are decoded from these bytes straight into their types, never through a
    /// `serde_json::Value` tree several times their size.
    async fn get_body(&self, path: &str) -> Result<(String, Vec<u8>)> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(self.http.get(&url), &url).await?;
        let status = resp.status();
        if !status.is_success() {
            let detail = match status.as_u16() {
                401 => "no token was sent, and this cluster requires one".to_string(),
                403 => "the token is wrong for this cluster".to_string(),
                _ => resp
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect(),
            };
            return Err(Error::Http {
                url,
                status: status.as_u16(),
                detail,
            });
        }
        match resp.bytes().await {
            Ok(body) => Ok((url, body.to_vec())),
            Err(e) => Err(Error::Unreachable {
                url,
                detail: e.to_string(),
            }),
        }
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T> {
        let (url, body) = self.get_body(path).await?;
        serde_json::from_slice(&body).map_err(|e| Error::Http {
            url,
            status: 200,
            detail: unreadable(&e.to_string()),
        })
    }

    async fn get_data<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T> {
        let (url, body) = self.get_body(path).await?;
        parse_envelope(&body).map_err(|detail| Error::Http {
            url,
            status: 200,
            detail,
        })
    }

    /// Sends `req` to `url` with the token.
    async fn send(&self, mut req: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response> {
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        req.send().await.map_err(|e| Error::Unreachable {
            url: url.to_string(),
            detail: e.to_string(),
        })
    }

    /// Whether the GCS answers (`/api/gcs_healthz`).
    pub async fn gcs_healthy(&self) -> bool {
        let url = format!("{}/api/gcs_healthz", self.base);
        let mut req = self.http.get(&url).timeout(Duration::from_secs(3));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        matches!(req.send().await, Ok(r) if r.status().is_success())
    }

    /// The Ray version the dashboard runs.
    pub async fn ray_version(&self) -> Result<String> {
        let v: serde_json::Value = self.get_json("/api/version").await?;
        Ok(v["ray_version"].as_str().unwrap_or_default().to_string())
    }

    /// Every node Ray knows, alive or dead.
    pub async fn nodes(&self) -> Result<Vec<RayNode>> {
        let d: ListData<Vec<RayNode>> = self.get_data("/api/v0/nodes?detail=1&limit=10000").await?;
        Ok(d.result.result)
    }

    pub async fn resource_usage(&self) -> Result<ResourceUsage> {
        let v: serde_json::Value = self.get_json("/api/cluster_status").await?;
        parse_usage(&v).map_err(|detail| Error::Http {
            url: format!("{}/api/cluster_status", self.base),
            status: 200,
            detail,
        })
    }

    pub async fn jobs(&self) -> Result<Vec<RayJob>> {
        self.get_json("/api/jobs/").await
    }

    /// One job, by its submission id (or job id).
    pub async fn job(&self, id: &str) -> Result<RayJob> {
        self.get_json(&format!("/api/jobs/{}", path_segment(id)?))
            .await
    }

    /// Everything a job has printed so far (Ray keeps a job's driver log whole).
    pub async fn job_logs(&self, id: &str) -> Result<String> {
        let v: serde_json::Value = self
            .get_json(&format!("/api/jobs/{}/logs", path_segment(id)?))
            .await?;
        Ok(v["logs"].as_str().unwrap_or_default().to_string())
    }

    /// Asks Ray to stop a job; `false` when it had already ended.
    pub async fn stop_job(&self, id: &str) -> Result<bool> {
        let url = format!("{}/api/jobs/{}/stop", self.base, path_segment(id)?);
        let resp = self.send(self.http.post(&url), &url).await?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(Error::Http {
                url,
                status: status.as_u16(),
                detail: text.chars().take(300).collect(),
            });
        }
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        Ok(v["stopped"].as_bool().unwrap_or(false))
    }

    pub async fn task_counts(&self) -> Result<TaskCounts> {
        let v: serde_json::Value = self.get_json("/api/v0/tasks/summarize").await?;
        parse_task_counts(&v).map_err(|detail| Error::Http {
            url: format!("{}/api/v0/tasks/summarize", self.base),
            status: 200,
            detail,
        })
    }
}

/// One line saying why a job ended as it did, from Ray's message about it. For a job whose
/// dependencies did not install (Ray's `runtime_env setup failed`, with the installer's output
/// after a traceback), the installer's own error: pip's last `ERROR:` line, or uv's `cause:`
/// (else `error:`) line. Otherwise the message's first line.
pub fn job_reason(message: &str) -> Option<String> {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let first = lines.first()?;
    if message.contains("runtime_env setup failed") || message.contains("RuntimeEnvSetupError") {
        let last_with = |prefixes: &[&str]| {
            lines.iter().rev().find_map(|l| {
                prefixes
                    .iter()
                    .find_map(|p| l.strip_prefix(p))
                    .map(str::trim)
            })
        };
        if let Some(why) = last_with(&["ERROR:"])
            .or_else(|| last_with(&["cause:"]))
            .or_else(|| last_with(&["error:"]))
        {
            return Some(format!("installing the job's dependencies failed: {why}"));
        }
        return Some(format!("setting up the job's environment failed: {first}"));
    }
    // "Job entrypoint command failed with exit code 1, last available logs:" and the logs (Ray
    // 2.60 says "last available logs (truncated to 20,000 chars):").
    if let Some((head, rest)) = first.split_once(", last available logs")
        && rest.ends_with(':')
        && let Some(last) = lines.last().filter(|l| *l != first)
    {
        return Some(format!("{head}: {last}"));
    }
    Some(first.to_string())
}

/// A job id as one URL path segment: Ray's ids are letters, digits, `_` and `-`; anything
/// else is refused rather than escaped into another path.
fn path_segment(id: &str) -> Result<&str> {
    if !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(id)
    } else {
        Err(Error::InvalidArgument {
            what: "job id",
            value: id.chars().take(130).collect(),
            expected: "a Ray job id such as raysubmit_XvzXd3wQ (see `flotilla jobs`)",
        })
    }
}

/// What to say of an answer that is not the JSON Ray's dashboard sends.
fn unreadable(error: &str) -> String {
    format!(
        "not the expected JSON ({error}); check that this port is the cluster's Ray dashboard, \
         of the Ray version `flotilla runtime list` shows"
    )
}

fn parse_envelope<T: for<'de> Deserialize<'de>>(body: &[u8]) -> std::result::Result<T, String> {
    match serde_json::from_slice::<Envelope<T>>(body) {
        Ok(Envelope {
            result: true,
            data: Some(d),
            ..
        }) => Ok(d),
        Ok(env) => Err(format!("Ray reported an error: {}", env.msg)),
        // An error's `data` need not have the shape of a success's.
        Err(e) => match serde_json::from_slice::<Envelope<serde::de::IgnoredAny>>(body) {
            Ok(env) if !env.result => Err(format!("Ray reported an error: {}", env.msg)),
            _ => Err(unreadable(&e.to_string())),
        },
    }
}

fn pairs(v: &serde_json::Value) -> BTreeMap<String, (f64, f64)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    let a = v.as_array()?;
                    Some((k.clone(), (a.first()?.as_f64()?, a.get(1)?.as_f64()?)))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn parse_usage(v: &serde_json::Value) -> std::result::Result<ResourceUsage, String> {
    let report = &v["data"]["clusterStatus"]["loadMetricsReport"];
    if report.is_null() {
        return Err("no loadMetricsReport in the cluster status".into());
    }
    let by_node = report["usageByNode"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), pairs(v))).collect())
        .unwrap_or_default();
    Ok(ResourceUsage {
        total: pairs(&report["usage"]),
        by_node,
    })
}

fn parse_task_counts(v: &serde_json::Value) -> std::result::Result<TaskCounts, String> {
    let summary = &v["data"]["result"]["result"]["node_id_to_summary"]["cluster"]["summary"];
    let Some(funcs) = summary.as_object() else {
        return Err("no cluster summary in the task summary".into());
    };
    let mut by_state = BTreeMap::new();
    for f in funcs.values() {
        if let Some(counts) = f["state_counts"].as_object() {
            for (state, n) in counts {
                *by_state.entry(state.clone()).or_insert(0) += n.as_u64().unwrap_or(0);
            }
        }
    }
    Ok(TaskCounts { by_state })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_whose_dependencies_fail_says_what_the_installer_said() {
        let head = "runtime_env setup failed: Failed to set up runtime environment.\n\
            Could not create the actor because its associated runtime env failed to be created.\n\
            [Node 10.0.0.1] Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n\
            ray._private.runtime_env.utils.SubprocessCalledProcessError: Run cmd[18] failed.\n\
            Last 50 lines of stdout:\n";
        let pip = format!(
            "{head}    Looking in links: /opt/wheels\n    ERROR: Could not find a version that \
             satisfies the requirement nope==1.0 (from versions: none)\n    ERROR: No matching \
             distribution found for nope==1.0\n"
        );
        assert_eq!(
            job_reason(&pip).unwrap(),
            "installing the job's dependencies failed: No matching distribution found for nope==1.0"
        );
        let uv = format!(
            "{head}    Using Python 3.11.7 environment at: /srv/job/virtualenv\n    error: No solution found \
             when resolving dependencies\n      cause: Because nope was not found in the package \
             registry, your requirements are unsatisfiable.\n"
        );
        assert_eq!(
            job_reason(&uv).unwrap(),
            "installing the job's dependencies failed: Because nope was not found in the package \
             registry, your requirements are unsatisfiable."
        );
        let other = format!("{head}    something unexpected\n");
        assert!(
            job_reason(&other)
                .unwrap()
                .starts_with("setting up the job's environment failed: runtime_env setup failed")
        );
        assert_eq!(
            job_reason("Job finished successfully.").unwrap(),
            "Job finished successfully."
        );
        assert_eq!(
            job_reason("Job entrypoint command failed with exit code 1, last available logs:\nTraceback:\nValueError: boom\n").unwrap(),
            "Job entrypoint command failed with exit code 1: ValueError: boom"
        );
        assert_eq!(
            job_reason(
                "Job entrypoint command failed with exit code 1, last available logs (truncated \
                 to 20,000 chars):\nSystemExit: the strategy file is missing\n"
            )
            .unwrap(),
            "Job entrypoint command failed with exit code 1: SystemExit: the strategy file is missing"
        );
        assert_eq!(job_reason("  \n"), None);
    }

    #[test]
    fn job_ids_that_could_leave_their_path_are_refused() {
        assert_eq!(
            path_segment("raysubmit_XvzXd3wQ").unwrap(),
            "raysubmit_XvzXd3wQ"
        );
        assert_eq!(path_segment("02000000").unwrap(), "02000000");
        for bad in ["", "../nodes", "a/b", "a?b=1", "a b", "%2e%2e"] {
            assert!(path_segment(bad).is_err(), "{bad}");
        }
        assert!(path_segment(&"a".repeat(129)).is_err());
    }

    fn fixture_bytes(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn fixture(name: &str) -> serde_json::Value {
        serde_json::from_slice(&fixture_bytes(name)).unwrap()
    }

    #[test]
    fn parses_nodes_as_ray_2_60_reports_them() {
        let d: ListData<Vec<RayNode>> = parse_envelope(&fixture_bytes("nodes.json")).unwrap();
        let nodes = d.result.result;
        assert_eq!(nodes.len(), 2);
        let head = nodes.iter().find(|n| n.is_head_node).unwrap();
        assert!(head.is_alive());
        assert_eq!(head.cpus_total(), 0.0);
        assert_eq!(
            head.labels.get("flotilla.node").map(String::as_str),
            Some("head")
        );
        let worker = nodes.iter().find(|n| !n.is_head_node).unwrap();
        assert_eq!(worker.cpus_total(), 1.0);
    }

    #[test]
    fn parses_usage_by_node() {
        let u = parse_usage(&fixture("cluster_status.json")).unwrap();
        assert_eq!(u.total.get("CPU"), Some(&(1.0, 1.0)));
        assert_eq!(
            u.cpus_used("028db802e178b41676ab148447dfa80e2407f67e7f753d9e6d7fc94f"),
            1.0
        );
        assert_eq!(u.cpus_used("unknown"), 0.0);
    }

    #[test]
    fn sums_task_states_over_functions() {
        let t = parse_task_counts(&fixture("tasks_summarize.json")).unwrap();
        assert_eq!(t.finished(), 5);
        assert_eq!(t.running(), 1);
        assert_eq!(t.pending(), 2);
    }

    #[test]
    fn parses_jobs() {
        let jobs: Vec<RayJob> = serde_json::from_slice(&fixture_bytes("jobs.json")).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].kind, "DRIVER");
        assert_eq!(jobs[0].status, "RUNNING");
        assert_eq!(jobs[0].job_id.as_deref(), Some("01000000"));
        assert_eq!(jobs[0].end_time, Some(0));
    }

    #[test]
    fn an_error_envelope_is_an_error() {
        let body = br#"{"result": false, "msg": "GCS down", "data": null}"#;
        let e = parse_envelope::<serde_json::Value>(body).unwrap_err();
        assert!(e.contains("GCS down"));
        // Whatever shape an error's data has.
        let body = br#"{"result": false, "msg": "GCS down", "data": {"oops": 1}}"#;
        let e = parse_envelope::<ListData<Vec<RayNode>>>(body).unwrap_err();
        assert!(e.contains("Ray reported an error: GCS down"), "{e}");
        let e = parse_envelope::<ListData<Vec<RayNode>>>(b"[1, 2]").unwrap_err();
        assert!(e.contains("not the expected JSON"), "{e}");
    }
}
