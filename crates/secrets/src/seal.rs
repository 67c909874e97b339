//! Encryption of the fallback file at rest with `systemd-creds` (Linux, systemd 250 and later),
//! so that a copy of the state directory (a backup, a stolen disk image without the machine's
//! credential key or TPM) does not reveal the secrets.
//!
//! The whole JSON document is sealed as one credential named [`CREDENTIAL_NAME`]; the bytes go
//! through the tool's standard input and output, never its arguments. `systemd-creds` uses the
//! TPM when there is one and the host key `/var/lib/systemd/credential.secret` otherwise, which
//! only root can read: so sealing is available to services running as root. For everyone else
//! the file keeps its protection by permissions alone, as before.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

/// The credential name bound into the sealed blob (decrypting under another name fails).
pub const CREDENTIAL_NAME: &str = "flotilla-secrets";

/// The largest encrypted file `systemd-creds decrypt` reads: systemd's
/// `CREDENTIAL_ENCRYPTED_SIZE_MAX`, 1 MiB plus 128 KiB (`src/shared/creds-util.h`). Its
/// output is base64 with a header, about 1.35 times the plaintext, so with the host key it
/// decrypts at most about 873,000 bytes of plaintext (measured with systemd 252), although
/// `encrypt` accepts up to 1 MiB: larger plaintexts encrypt into files it cannot open.
pub const SEALED_FILE_MAX_BYTES: usize = 1024 * 1024 + 128 * 1024;

/// How the fallback file is protected beyond its permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileEncryption {
    /// `systemd-creds` when it works here (root with systemd 250+), else permissions only.
    #[default]
    Auto,
    /// `systemd-creds`, or an error.
    SystemdCreds,
    /// Permissions only.
    Off,
}

/// A working `systemd-creds`.
#[derive(Debug, Clone)]
pub(crate) struct Sealer {
    bin: PathBuf,
}

impl Sealer {
    /// `systemd-creds` if it is installed and can seal and unseal here; otherwise why not.
    pub(crate) fn probe() -> Result<Sealer, String> {
        if !cfg!(target_os = "linux") {
            return Err("systemd-creds exists only on Linux".into());
        }
        let bin = ["/usr/bin/systemd-creds", "/bin/systemd-creds"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| "systemd-creds is not installed (package systemd)".to_string())?;
        let sealer = Sealer { bin };
        let probe = b"flotilla-probe";
        let sealed = sealer.seal(probe)?;
        let opened = sealer.unseal(&sealed, Path::new("(probe)"))?;
        if opened.as_slice() != probe {
            return Err("systemd-creds did not give back what it sealed".into());
        }
        Ok(sealer)
    }

    fn run(&self, args: &[&str], input: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
        let mut child = Command::new(&self.bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        let mut stdin = child.stdin.take().expect("piped");
        let input = input.to_vec();
        // Written from a thread so a large document cannot deadlock against a full stdout pipe.
        let writer = std::thread::spawn(move || {
            let input = Zeroizing::new(input);
            let _ = stdin.write_all(&input);
        });
        let out = child
            .wait_with_output()
            .map_err(|e| format!("{} failed: {e}", self.bin.display()))?;
        let _ = writer.join();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let line = err
                .lines()
                .find(|l| !l.contains("not located on encrypted media"))
                .unwrap_or("")
                .trim();
            return Err(format!("systemd-creds {} failed: {line}", args[0]));
        }
        Ok(Zeroizing::new(out.stdout))
    }

    /// Seals `plain`.
    pub(crate) fn seal(&self, plain: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
        self.run(
            &["encrypt", &format!("--name={CREDENTIAL_NAME}"), "-", "-"],
            plain,
        )
    }

    /// Opens what [`seal`](Self::seal) made; `path` names the file in errors.
    pub(crate) fn unseal(&self, sealed: &[u8], path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
        self.run(
            &["decrypt", &format!("--name={CREDENTIAL_NAME}"), "-", "-"],
            sealed,
        )
        .map_err(|e| format!("{}: {e}", path.display()))
    }
}
