//! Secret files (TSIG keys, bearer tokens, webhook secrets, AWS credentials): read when a step
//! runs, so a rotated file takes effect without a restart; never logged; checked at start-up,
//! where a missing file stops the node and a file others can read draws a warning.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::StepError;
use crate::config::Config;

/// The contents of a secret file, trimmed of surrounding whitespace. An unreadable file is a
/// permanent failure naming the field and the file (an operator must fix it, then retry).
pub fn read(field: &str, path: &Path) -> Result<Vec<u8>, StepError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes.trim_ascii().to_vec()),
        Err(e) => Err(StepError::permanent(format!("cannot read {field} {}: {e}", path.display()))),
    }
}

/// Problems with the secret files a config names: errors (missing or unreadable) and warnings
/// (readable by anyone on the machine).
pub fn audit(config: &Config) -> (Vec<String>, Vec<String>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    for group in &config.groups {
        for step in &group.steps {
            for (field, path) in step.kind.secret_files() {
                let name = format!("group {:?} step {:?} {field} {}", group.name, step.name, path.display());
                // Opened, not just looked at: the node must be able to read it.
                match std::fs::File::open(path).and_then(|f| f.metadata()) {
                    Err(e) => errors.push(format!("{name}: {e}")),
                    Ok(meta) if !meta.is_file() => errors.push(format!("{name}: not a regular file")),
                    Ok(meta) if meta.permissions().mode() & 0o004 != 0 => warnings
                        .push(format!("{name} is readable by every user of this machine; restrict it (chmod 600)")),
                    Ok(_) => {}
                }
            }
        }
    }
    (errors, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_trims_and_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  s3cret\n").unwrap();
        assert_eq!(read("token_file", &file).unwrap(), b"s3cret");
        let err = read("token_file", &dir.path().join("absent")).unwrap_err();
        assert!(!err.retryable);
        assert!(err.message.contains("token_file") && err.message.contains("absent"), "{err}");
    }
}
