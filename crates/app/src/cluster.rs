//! The cluster as a head's HTTP API reports it, and this machine's agent as its control
//! channel does (`flotilla status`).

use anyhow::Context;
use flotilla_head::{ClusterSnapshot, HeadInfo};
use flotilla_host::Dirs;

/// The API of the head to talk to: explicit, else the one this machine runs, else the default.
pub fn api_url(explicit: Option<String>, dirs: &Dirs) -> String {
    explicit
        .or_else(|| HeadInfo::read(dirs).map(|i| i.api_url))
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", flotilla_head::DEFAULT_API_PORT))
}

pub async fn fetch(api: &str) -> anyhow::Result<ClusterSnapshot> {
    let url = format!("{}/api/v1/cluster", api.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(3))
        .timeout(std::time::Duration::from_secs(15))
        .build()?;
    let resp = client.get(&url).send().await.map_err(|e| {
        anyhow::anyhow!(
            "no Flotilla head answers at {api} ({e}).\n  Start one with `flotilla up`, or point \
             to another with --api URL"
        )
    })?;
    let status = resp.status();
    let body = resp.text().await.context("reading the head's answer")?;
    if !status.is_success() {
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(String::from))
            .unwrap_or(body);
        anyhow::bail!("the head at {api} answered {status}: {msg}");
    }
    serde_json::from_str(&body)
        .with_context(|| format!("the head at {api} sent an unreadable snapshot"))
}

/// This machine's agent: its latest decision and what the machine contributed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ThisMachine {
    #[serde(flatten)]
    pub decision: flotilla_agent::control::DecisionView,
    /// From the outbox's tally (an enrolled agent keeps one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contribution: Option<flotilla_agent::outbox::Contribution>,
}

/// This machine's agent, when one runs and has decided.
pub async fn this_machine() -> Option<ThisMachine> {
    let agent = flotilla_agent::control::Client::of(&Dirs::from_env());
    let decision = agent.decision().await.ok().flatten()?;
    Some(ThisMachine {
        decision,
        contribution: agent.contribution().await.ok(),
    })
}
