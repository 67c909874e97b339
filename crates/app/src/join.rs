//! Joining a fleet with a join code: the enrollment and its credentials go to the secret
//! store, all or nothing.

use flotilla_agent::enrollment::{self, Enrollment, Machine};

use crate::{Event, Events};

/// The name a machine joins under when none is given: its host name, with `-` for any
/// character a node name cannot have and `node-` before one that is all digits (which would
/// read as a node id).
pub fn default_name() -> String {
    name_from_host(&flotilla_host::hostname())
}

fn name_from_host(host: &str) -> String {
    let name: String = host
        .chars()
        .map(|c| {
            let mut buf = [0u8; 4];
            if c == ' ' || flotilla_secrets::ambiguous_character(c.encode_utf8(&mut buf)).is_some()
            {
                '-'
            } else {
                c
            }
        })
        .collect();
    if name.is_empty() {
        "node".to_string()
    } else if name.chars().all(|c| c.is_ascii_digit()) {
        format!("node-{name}")
    } else {
        name
    }
}

/// The secret-store name written and removed to prove the store takes writes before a join.
const WRITE_CHECK: &str = "flotilla.join-check";

/// Joins the fleet of `code` as `name` and stores the enrollment (credentials in the secret
/// store); the worker is not started. All or nothing: the store is checked before the head is
/// asked, and when storing fails after all, the head is told to forget the node and give the
/// code's use back. The head's notice, if it sends one, goes to `events`.
pub async fn enroll(
    code: &str,
    name: String,
    cpus: Option<u32>,
    events: &Events,
) -> anyhow::Result<Enrollment> {
    let mut machine = Machine::this(name, cpus);
    // The store must take writes before the code is used.
    // The store's check and the list of this machine's Pythons (a run of uv) go side by side.
    let data = flotilla_host::Dirs::from_env().data;
    let pythons = async { flotilla_ray::RuntimeManager::new(&data).pythons().await };
    let store = tokio::task::spawn_blocking(|| {
        let unusable = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!(
                "the secret store cannot keep this machine's credential, so it did not join \
                 (the join code is unused): {e}"
            )
        };
        let (dirs, _, store) =
            crate::secrets::load_store().map_err(|e| unusable(&crate::describe(&e)))?;
        let check = flotilla_secrets::Secret::from(format!("{:?}", std::time::SystemTime::now()));
        store
            .set(WRITE_CHECK, &check)
            .and_then(|()| store.remove(WRITE_CHECK).map(|_| ()))
            .map_err(|e| unusable(&e))?;
        // A machine that joins again proves which node it is, to keep its name.
        let previous = match Enrollment::load(&dirs) {
            Ok(Some(e)) => store
                .get(enrollment::CREDENTIAL_SECRET)
                .ok()
                .map(|c| (e, c)),
            _ => None,
        };
        anyhow::Ok((dirs, (store, previous)))
    });
    let (store, pythons) = tokio::join!(store, pythons);
    let (dirs, (store, previous)) = store??;
    machine.previous = previous;
    // The head refuses, before the code is used, a machine that cannot run its Python.
    match pythons {
        Ok(p) => {
            machine.python_versions = p.versions;
            machine.python_downloads = p.downloads;
        }
        Err(e) => tracing::warn!("cannot list this machine's Pythons: {e}"),
    }
    let joined = enrollment::join(code, &machine).await?;
    if let Some(notice) = &joined.notice {
        events(Event::Info(notice.clone()));
    }
    let saved = tokio::task::spawn_blocking({
        let (enrollment, credential, token) = (
            joined.enrollment.clone(),
            joined.credential.clone(),
            joined.token.clone(),
        );
        move || {
            enrollment
                .save(&dirs, &store, &credential, &token)
                .map_err(|e| anyhow::anyhow!("{e}"))
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
    .and_then(|r| r);
    if let Err(e) = saved {
        let undone = match enrollment::finish(&joined, false).await {
            Ok(()) => "the head has forgotten this machine and the join code is unused".to_string(),
            Err(f) => format!(
                "the head could not be told ({f}); it forgets this machine and gives the code's \
                 use back by itself within a few minutes"
            ),
        };
        anyhow::bail!(
            "cannot store the enrollment: {e}\n  Nothing was joined: {undone}. Fix the secret \
             store (`flotilla doctor` says how) and join again with the same code."
        );
    }
    enrollment::finish(&joined, true).await.map_err(|e| {
        anyhow::anyhow!(
            "the head did not confirm the join: {e}\n  Join again with a new code \
             (`flotilla invite` on the head)."
        )
    })?;
    Ok(joined.enrollment)
}

#[cfg(test)]
mod tests {
    use super::name_from_host;

    #[test]
    fn a_host_name_becomes_a_name_the_head_accepts() {
        for (host, name) in [
            ("studio", "studio"),
            ("Ana’s MacBook Pro", "Ana’s-MacBook-Pro"),
            ("1234", "node-1234"),
            ("vm\u{200b}", "vm-"),
            ("", "node"),
        ] {
            assert_eq!(name_from_host(host), name);
        }
    }
}
