//! The head machine's alerts as `flotilla.toml` and the secret store give them: `[alerts]`
//! checked, each target's URL read from the file (a `json` receiver without a token) or from
//! the store (`url_secret`), and `flotilla alerts test`'s one alert to each target.

use anyhow::Context;
use flotilla_head::alerts::{AlertsConfig, Setup, Target, TestOutcome, UrlFrom, config::check_url};
use flotilla_secrets::{Secret, SecretStore};

/// `[alerts]` of a `flotilla.toml` text with its URLs resolved through `store`; `None` when the
/// file has no `[alerts]` or no target in it. Blocks on the store.
pub fn setup(text: &str, store: &SecretStore) -> anyhow::Result<Option<Setup>> {
    let Some(config) =
        AlertsConfig::from_file_text(text).map_err(|e| anyhow::anyhow!("flotilla.toml: {e}"))?
    else {
        return Ok(None);
    };
    if config.targets.is_empty() {
        return Ok(None);
    }
    let mut targets = Vec::new();
    for spec in config.targets {
        let url = match &spec.url {
            UrlFrom::File(url) => Secret::from(url.as_str()),
            UrlFrom::Secret(name) => {
                let value = match store.get(name) {
                    Ok(v) => v,
                    Err(flotilla_secrets::Error::NotFound { .. }) => anyhow::bail!(
                        "flotilla.toml: alert target {:?}: the secret {name} is not in the store; \
                         add the webhook's URL with `flotilla secret set {name}`",
                        spec.name
                    ),
                    Err(e) => {
                        return Err(anyhow::Error::from(e).context(format!(
                            "cannot read the secret {name} of alert target {:?}",
                            spec.name
                        )));
                    }
                };
                let ok = value.expose_str().is_some_and(|u| check_url(u).is_ok());
                if !ok {
                    // The value is never quoted: it carries the webhook's token.
                    anyhow::bail!(
                        "flotilla.toml: alert target {:?}: the secret {name} is not an http:// or \
                         https:// URL; store the webhook's URL with `flotilla secret set {name}`",
                        spec.name
                    );
                }
                value
            }
        };
        targets.push(Target {
            name: spec.name,
            kind: spec.kind,
            url,
            chat_id: spec.chat_id,
        });
    }
    Ok(Some(Setup {
        settings: config.settings,
        targets,
    }))
}

/// This machine's alerts (its `flotilla.toml` and secret store). Blocks.
pub fn load() -> anyhow::Result<Option<Setup>> {
    let (dirs, _, store) = crate::secrets::load_store()?;
    let path = dirs.config.join(flotilla_agent::config::FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    setup(&text, &store)
}

/// Sends one test alert to every target of this machine's `[alerts]` (or only to `only`),
/// once each; an error when there is no target to send to.
pub async fn test(only: Option<String>) -> anyhow::Result<Vec<TestOutcome>> {
    let setup = tokio::task::spawn_blocking(load).await??;
    let path = flotilla_host::Dirs::from_env()
        .config
        .join(flotilla_agent::config::FILE_NAME);
    let Some(setup) = setup else {
        anyhow::bail!(
            "no alert target in {}: add an [[alerts.target]] (see README, \"Alerts\")",
            path.display()
        );
    };
    let targets: Vec<Target> = match &only {
        None => setup.targets,
        Some(name) => {
            let names: Vec<String> = setup.targets.iter().map(|t| t.name.clone()).collect();
            let chosen: Vec<Target> = setup
                .targets
                .into_iter()
                .filter(|t| &t.name == name)
                .collect();
            if chosen.is_empty() {
                anyhow::bail!(
                    "no alert target named {name:?} in {}; the targets are: {}",
                    path.display(),
                    names.join(", ")
                );
            }
            chosen
        }
    };
    Ok(flotilla_head::alerts::send_test(&targets, &flotilla_host::hostname()).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SecretStore) {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = flotilla_secrets::StoreConfig::new(tmp.path());
        cfg.backend = flotilla_secrets::Backend::File;
        cfg.file_encryption = flotilla_secrets::FileEncryption::Off;
        let store = SecretStore::open(&cfg).unwrap();
        (tmp, store)
    }

    const TEXT: &str = "[alerts]\noffline_after = \"1m\"\n\n[[alerts.target]]\nname = \"ops\"\n\
                        kind = \"slack\"\nurl_secret = \"alerts.slack\"\n";

    #[test]
    fn urls_come_from_the_store_and_a_missing_one_says_how_to_add_it() {
        let (_tmp, store) = store();
        let err = setup(TEXT, &store).unwrap_err().to_string();
        assert!(
            err.contains("`flotilla secret set alerts.slack`") && err.contains("\"ops\""),
            "{err}"
        );
        let url = "https://hooks.slack.com/services/T0/B0/sEcReTtOkEn";
        store.set("alerts.slack", &Secret::from(url)).unwrap();
        let s = setup(TEXT, &store).unwrap().unwrap();
        assert_eq!(s.targets.len(), 1);
        assert_eq!(s.targets[0].url(), Some(url));
        assert!(!format!("{:?}", s.targets[0]).contains("sEcReTtOkEn"));
        assert_eq!(
            s.settings.offline_after,
            Some(std::time::Duration::from_secs(60))
        );
    }

    #[test]
    fn a_secret_that_is_no_url_is_refused_without_quoting_it() {
        let (_tmp, store) = store();
        store
            .set("alerts.slack", &Secret::from("xoxb-not-a-url-sEcReT"))
            .unwrap();
        let err = setup(TEXT, &store).unwrap_err().to_string();
        assert!(err.contains("not an http:// or https:// URL"), "{err}");
        assert!(!err.contains("sEcReT"), "{err}");
    }

    #[test]
    fn no_section_or_no_target_means_no_alerts() {
        let (_tmp, store) = store();
        assert!(setup("", &store).unwrap().is_none());
        assert!(
            setup("[alerts]\njob_failed = false\n", &store)
                .unwrap()
                .is_none()
        );
        let err = setup("[alerts]\nbogus = 1\n", &store)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("flotilla.toml: alerts:") && err.contains("bogus"),
            "{err}"
        );
    }
}
