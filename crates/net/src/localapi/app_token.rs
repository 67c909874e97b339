//! The macOS Tailscale app's LocalAPI port and token, read from the files the app leaves.
//!
//! - The standalone app ("macsys") links `<dir>/ipnport` to its port number and writes the
//!   token into `<dir>/sameuserproof-<port>`, `<dir>` being `/Library/Tailscale`.
//! - The App Store app leaves files named `sameuserproof-<port>-<token>` in its group container
//!   (`~/Library/Group Containers/…io.tailscale.ipn.macos`).
//!
//! Compiled on every OS so that the parsing is tested on Linux with a fake tree; used only on
//! macOS, where it is untested here.

#![cfg_attr(not(target_os = "macos"), allow(dead_code))]

use std::path::Path;
use std::time::SystemTime;

use super::Endpoint;

const PROOF_PREFIX: &str = "sameuserproof-";
const GROUP_CONTAINER_SUFFIX: &str = "io.tailscale.ipn.macos";
/// At most this many App Store proof files are tried (newest first); older ones are stale.
const MAX_APP_STORE: usize = 4;

/// The endpoints the files under `macsys_dir` and `group_containers` point to: the standalone
/// app's first, then the App Store app's, newest first. Missing or odd files are skipped.
pub(super) fn endpoints(macsys_dir: &Path, group_containers: Option<&Path>) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = macsys(macsys_dir).into_iter().collect();
    if let Some(dir) = group_containers {
        for endpoint in app_store(dir) {
            if !out.contains(&endpoint) {
                out.push(endpoint);
            }
        }
    }
    out
}

fn macsys(dir: &Path) -> Option<Endpoint> {
    let target = std::fs::read_link(dir.join("ipnport")).ok()?;
    let port_text = target.to_str()?.trim().to_owned();
    let port: u16 = port_text.parse().ok().filter(|&p| p != 0)?;
    let token = std::fs::read_to_string(dir.join(format!("{PROOF_PREFIX}{port_text}"))).ok()?;
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    Some(Endpoint::LocalTcp {
        port,
        token: token.to_owned(),
    })
}

fn app_store(group_containers: &Path) -> Vec<Endpoint> {
    let mut found: Vec<(SystemTime, Endpoint)> = Vec::new();
    let Ok(containers) = std::fs::read_dir(group_containers) else {
        return Vec::new();
    };
    for container in containers.flatten() {
        if !container
            .file_name()
            .to_string_lossy()
            .ends_with(GROUP_CONTAINER_SUFFIX)
        {
            continue;
        }
        let Ok(files) = std::fs::read_dir(container.path()) else {
            continue;
        };
        for file in files.flatten() {
            let name = file.file_name();
            let Some((port, token)) = name.to_str().and_then(parse_proof_name) else {
                continue;
            };
            let modified = file
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            found.push((modified, Endpoint::LocalTcp { port, token }));
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found
        .into_iter()
        .map(|(_, e)| e)
        .take(MAX_APP_STORE)
        .collect()
}

/// `sameuserproof-<port>-<token>` → `(port, token)`.
fn parse_proof_name(name: &str) -> Option<(u16, String)> {
    let (port, token) = name.strip_prefix(PROOF_PREFIX)?.split_once('-')?;
    let port: u16 = port.parse().ok().filter(|&p| p != 0)?;
    if token.is_empty() || !token.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    Some((port, token.to_owned()))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn proof_names_parse_only_when_whole() {
        assert_eq!(
            parse_proof_name("sameuserproof-49231-a1b2c3d4e5"),
            Some((49231, "a1b2c3d4e5".into()))
        );
        for bad in [
            "sameuserproof-49231",
            "sameuserproof-49231-",
            "sameuserproof-0-abc",
            "sameuserproof-99999-abc",
            "sameuserproof-x-abc",
            "sameuserproof-1-a/b",
            "ipnport",
        ] {
            assert_eq!(parse_proof_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_standalone_app_comes_before_the_app_store_app() {
        let root = tempfile::tempdir().unwrap();
        let macsys_dir = root.path().join("Library-Tailscale");
        std::fs::create_dir(&macsys_dir).unwrap();
        std::os::unix::fs::symlink("52817", macsys_dir.join("ipnport")).unwrap();
        std::fs::write(macsys_dir.join("sameuserproof-52817"), "0f1e2d3c4b5a\n").unwrap();

        let groups = root.path().join("Group Containers");
        let container = groups.join("W5364U7YZB.io.tailscale.ipn.macos");
        std::fs::create_dir_all(&container).unwrap();
        std::fs::write(container.join("sameuserproof-61234-deadbeef00"), "").unwrap();
        std::fs::write(container.join("unrelated.plist"), "").unwrap();
        std::fs::create_dir_all(groups.join("com.example.other")).unwrap();
        std::fs::write(groups.join("com.example.other/sameuserproof-1111-nope"), "").unwrap();

        assert_eq!(
            endpoints(&macsys_dir, Some(&groups)),
            vec![
                Endpoint::LocalTcp {
                    port: 52817,
                    token: "0f1e2d3c4b5a".into()
                },
                Endpoint::LocalTcp {
                    port: 61234,
                    token: "deadbeef00".into()
                },
            ]
        );
    }

    #[test]
    fn missing_or_broken_files_give_nothing() {
        let root = tempfile::tempdir().unwrap();
        assert!(
            endpoints(
                &root.path().join("absent"),
                Some(&root.path().join("absent"))
            )
            .is_empty()
        );
        // A port link without its token file, and one that is not a number.
        std::os::unix::fs::symlink("52817", root.path().join("ipnport")).unwrap();
        assert!(endpoints(root.path(), None).is_empty());
        let other = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("port", other.path().join("ipnport")).unwrap();
        std::fs::write(other.path().join("sameuserproof-port"), "tok").unwrap();
        assert!(endpoints(other.path(), None).is_empty());
    }
}
