//! Finding or installing `uv`, the tool that provisions Python + Ray runtimes.
//!
//! Order: `FLOTILLA_UV`; `uv` beside the running executable (bundles ship it there); the copy
//! Flotilla installed in its data dir; `uv` on `PATH`; otherwise the `uv` wheel is downloaded from
//! the Python package index (`FLOTILLA_PYPI_URL`, default `https://pypi.org`), checked against
//! the index's SHA-256 digest, and its binary extracted into the data dir.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::Digest;

use crate::runtime::{Progress, ProgressFn};
use crate::{Error, Result};

const UV_EXE: &str = if cfg!(windows) { "uv.exe" } else { "uv" };

/// Where uv would be installed by [`ensure_uv`] under `data_dir`.
pub fn installed_path(data_dir: &Path) -> PathBuf {
    data_dir.join("bin").join(UV_EXE)
}

/// Finds uv without downloading anything.
pub fn find_uv(data_dir: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLOTILLA_UV").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(UV_EXE)));
    let candidates = beside.into_iter().chain([installed_path(data_dir)]);
    for c in candidates {
        if c.is_file() {
            return Some(c);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(UV_EXE))
        .find(|c| c.is_file())
}

/// Finds uv, or installs it into `data_dir/bin` from the package index.
pub async fn ensure_uv(data_dir: &Path, progress: &ProgressFn) -> Result<PathBuf> {
    if let Some(p) = find_uv(data_dir) {
        return Ok(p);
    }
    let index = std::env::var("FLOTILLA_PYPI_URL").unwrap_or_else(|_| "https://pypi.org".into());
    download_uv(&index, data_dir, progress).await
}

#[derive(Debug, Deserialize)]
struct Project {
    urls: Vec<Release>,
}

#[derive(Debug, Deserialize, Clone)]
struct Release {
    filename: String,
    url: String,
    #[serde(default)]
    size: Option<u64>,
    digests: Digests,
}

#[derive(Debug, Deserialize, Clone)]
struct Digests {
    sha256: String,
}

/// The wheel platform tags that can run on this machine, best first.
fn platform_tags() -> &'static [&'static str] {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => &["manylinux", "x86_64"],
        ("linux", "aarch64") => &["manylinux", "aarch64"],
        ("macos", "aarch64") => &["macosx", "arm64"],
        ("macos", "x86_64") => &["macosx", "x86_64"],
        ("windows", "x86_64") => &["win_amd64"],
        ("windows", "aarch64") => &["win_arm64"],
        _ => &[],
    }
}

fn pick_wheel(releases: &[Release], tags: &[&str]) -> Option<Release> {
    if tags.is_empty() {
        return None;
    }
    releases
        .iter()
        .filter(|r| r.filename.ends_with(".whl"))
        .find(|r| tags.iter().all(|t| r.filename.contains(t)))
        .cloned()
}

async fn download_uv(index: &str, data_dir: &Path, progress: &ProgressFn) -> Result<PathBuf> {
    let meta_url = format!("{}/pypi/uv/json", index.trim_end_matches('/'));
    let fail = |detail: String| Error::UvDownload {
        url: meta_url.clone(),
        detail,
    };
    progress(Progress::Step {
        step: crate::runtime::Step::DownloadUv,
        label: "Downloading uv".into(),
    });
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(15))
        .build()
        .map_err(|e| fail(chain(&e)))?;
    let project: Project = client
        .get(&meta_url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| fail(chain(&e)))?
        .json()
        .await
        .map_err(|e| fail(format!("unexpected answer: {e}")))?;
    let wheel = pick_wheel(&project.urls, platform_tags()).ok_or_else(|| {
        fail(format!(
            "no uv wheel for {}-{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        ))
    })?;
    // Mirrors of the index may answer with URLs relative to the metadata document.
    let wheel_url = reqwest::Url::parse(&meta_url)
        .and_then(|base| base.join(&wheel.url))
        .map_err(|e| fail(format!("bad wheel URL {:?}: {e}", wheel.url)))?;
    let mut resp = client
        .get(wheel_url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| fail(chain(&e)))?;
    let total = resp.content_length().or(wheel.size);
    let mut bytes = Vec::with_capacity(total.unwrap_or(0) as usize);
    while let Some(chunk) = resp.chunk().await.map_err(|e| fail(chain(&e)))? {
        bytes.extend_from_slice(&chunk);
        progress(Progress::Bytes {
            done: bytes.len() as u64,
            total,
        });
    }
    let digest = hex(&sha2::Sha256::digest(&bytes));
    if !digest.eq_ignore_ascii_case(&wheel.digests.sha256) {
        return Err(fail(format!(
            "{} has SHA-256 {digest}, the index says {}",
            wheel.filename, wheel.digests.sha256
        )));
    }
    let binary = extract_binary(&bytes).map_err(|e| fail(format!("{}: {e}", wheel.filename)))?;
    let dest = installed_path(data_dir);
    write_executable(&dest, &binary)?;
    Ok(dest)
}

/// Pulls `<name>.data/scripts/uv` out of a wheel.
fn extract_binary(wheel: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(wheel)).map_err(|e| e.to_string())?;
    let name = (0..zip.len())
        .filter_map(|i| zip.by_index(i).ok().map(|f| f.name().to_string()))
        .find(|n| n.contains(".data/scripts/") && n.ends_with(&format!("/{UV_EXE}")))
        .ok_or("the wheel has no uv binary")?;
    let mut file = zip.by_name(&name).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    file.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn write_executable(dest: &Path, bytes: &[u8]) -> Result<()> {
    let dir = dest.parent().expect("installed_path has a parent");
    std::fs::create_dir_all(dir).map_err(Error::io(format!("cannot create {}", dir.display())))?;
    // Written beside and renamed, so a crash never leaves a truncated uv that looks installed.
    let tmp = dir.join(format!(".{UV_EXE}.{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(Error::io(format!("cannot write {}", tmp.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(
            Error::io(format!("cannot make {} executable", tmp.display())),
        )?;
    }
    std::fs::rename(&tmp, dest).map_err(Error::io(format!("cannot write {}", dest.display())))
}

/// An error with its causes, for messages where the top level alone says too little.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(name: &str) -> Release {
        Release {
            filename: name.into(),
            url: format!("https://files.example/{name}"),
            size: None,
            digests: Digests {
                sha256: "00".into(),
            },
        }
    }

    #[test]
    fn picks_the_wheel_for_the_platform() {
        let releases = [
            rel("uv-0.13.9.tar.gz"),
            rel("uv-0.13.9-py3-none-macosx_11_0_arm64.whl"),
            rel("uv-0.13.9-py3-none-musllinux_1_1_x86_64.whl"),
            rel("uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"),
            rel("uv-0.13.9-py3-none-win_amd64.whl"),
        ];
        let pick = |tags: &[&str]| pick_wheel(&releases, tags).map(|r| r.filename);
        assert_eq!(
            pick(&["manylinux", "x86_64"]).as_deref(),
            Some("uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
        );
        assert_eq!(
            pick(&["macosx", "arm64"]).as_deref(),
            Some("uv-0.13.9-py3-none-macosx_11_0_arm64.whl")
        );
        assert_eq!(
            pick(&["win_amd64"]).as_deref(),
            Some("uv-0.13.9-py3-none-win_amd64.whl")
        );
        assert_eq!(pick(&[]), None);
        assert_eq!(pick(&["win_arm64"]), None);
    }

    #[test]
    fn extracts_the_binary_from_a_wheel() {
        use std::io::Write;
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut buf);
            let opts = zip::write::SimpleFileOptions::default();
            w.start_file("uv-0.13.9.dist-info/METADATA", opts).unwrap();
            w.write_all(b"Name: uv").unwrap();
            w.start_file(format!("uv-0.13.9.data/scripts/{UV_EXE}"), opts)
                .unwrap();
            w.write_all(b"\x7fELF binary").unwrap();
            w.finish().unwrap();
        }
        assert_eq!(extract_binary(buf.get_ref()).unwrap(), b"\x7fELF binary");
        assert!(extract_binary(b"not a zip").is_err());
    }

    #[tokio::test]
    async fn an_unreachable_index_says_what_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        // Port 9 on loopback: nothing listens, the connection is refused at once.
        let err = download_uv(
            "http://127.0.0.1:9",
            tmp.path(),
            &crate::runtime::no_progress(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("cannot download uv") && err.contains("pip install uv"),
            "{err}"
        );
    }
}
