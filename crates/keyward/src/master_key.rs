//! The master key that seals workspace secrets: from settings, or from `master.key` in the
//! data directory, made on first start readable by its owner only.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};

use keyward_server::crypto::MasterKey;
use secrecy::ExposeSecret;

use crate::settings::Settings;

const FILE_NAME: &str = "master.key";

pub(crate) fn load(settings: &Settings) -> Result<MasterKey, String> {
    if let Some(text) = &settings.master_key {
        return MasterKey::from_base64(text.expose_secret())
            .map_err(|error| format!("KEYWARD_MASTER_KEY: {error}"));
    }
    let path = settings.data_dir.join(FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            if let Ok(metadata) = std::fs::metadata(&path) {
                if metadata.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "the master key file is readable by others; chmod 600 it");
                }
            }
            MasterKey::from_base64(&text).map_err(|error| format!("{}: {error}", path.display()))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&settings.data_dir)
                .map_err(|error| format!("{}: {error}", settings.data_dir.display()))?;
            // Written whole to a file of its own, then linked into place: a node starting at
            // the same moment on the same directory either wins or reads the winner's key,
            // never a half-written one.
            let (text, key) = MasterKey::generate();
            let draft = settings
                .data_dir
                .join(format!("{FILE_NAME}.{}.tmp", std::process::id()));
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&draft)
                .map_err(|error| format!("cannot create {}: {error}", draft.display()))?;
            file.write_all(format!("{text}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|error| format!("cannot write {}: {error}", draft.display()))?;
            let linked = std::fs::hard_link(&draft, &path);
            let _ = std::fs::remove_file(&draft);
            match linked {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "made a master key for workspace secrets");
                    Ok(key)
                }
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => load(settings),
                Err(error) => Err(format!("cannot create {}: {error}", path.display())),
            }
        }
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}
