//! The first start of an installation: one workspace, its `live` and `test` environments and
//! a root key for each.

use keyward_core::id::{self, IdKind};
use keyward_core::model::{Environment, EnvironmentSettings, RootKey, Tenancy};
use keyward_core::scope::ScopeSet;
use keyward_core::secret::{IssuedSecret, ROOT_KEY_PREFIX};
use keyward_store::{Bootstrap, Store, StoreError};
use secrecy::{ExposeSecret, SecretString};

use crate::{clock, os_rng};

/// The first root keys, to be shown to the operator once.
#[derive(Debug)]
pub struct FirstRootKeys {
    pub workspace_id: String,
    pub live: SecretString,
    pub test: SecretString,
}

/// Creates the installation's first workspace unless it exists. `None` when it did already.
pub async fn bootstrap(store: &dyn Store) -> Result<Option<FirstRootKeys>, StoreError> {
    let now = clock::now();
    let workspace_id = id::generate(IdKind::Workspace, now, &mut os_rng());
    let mut root_keys = Vec::new();
    let mut secrets = Vec::new();
    let mut environments = Vec::new();
    for environment in [Environment::Live, Environment::Test] {
        let secret = IssuedSecret::generate(ROOT_KEY_PREFIX, environment, &mut os_rng())
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        let tenancy = Tenancy {
            workspace_id: workspace_id.clone(),
            environment,
        };
        root_keys.push((
            RootKey {
                id: id::generate(IdKind::RootKey, now, &mut os_rng()),
                tenancy,
                name: format!("First {} root key", environment.as_str()),
                scopes: ScopeSet::all(),
                start: secret.start.clone(),
                created_at: now,
                revoked_at: None,
                rate_limit_scheme: None,
                limit_meter: None,
                expires_at: None,
            },
            secret.hash,
        ));
        environments.push(EnvironmentSettings {
            workspace_id: workspace_id.clone(),
            environment,
            // Live traffic gets the safe default; `test` is for development.
            enhanced_security: environment == Environment::Live,
            leaked_key_action: Default::default(),
            updated_at: now,
        });
        secrets.push(secret.secret);
    }
    let created = store
        .bootstrap(&Bootstrap {
            workspace_id: workspace_id.clone(),
            workspace_name: "Default workspace".to_owned(),
            environments,
            root_keys,
            now,
        })
        .await?;
    // Its announcement reaches nodes already running; none waits for it, since nobody holds
    // these keys until this returns.
    if !created.record {
        return Ok(None);
    }
    let mut secrets = secrets.into_iter();
    let (Some(live), Some(test)) = (secrets.next(), secrets.next()) else {
        return Err(StoreError::Corrupt("bootstrap made no keys".to_owned()));
    };
    Ok(Some(FirstRootKeys {
        workspace_id,
        live,
        test,
    }))
}

impl FirstRootKeys {
    /// The one-time banner for the operator's terminal.
    pub fn banner(&self) -> String {
        format!(
            "Created workspace {workspace}. Its root keys are shown this once; store them now:\n\
             \x20 live: {live}\n\
             \x20 test: {test}\n",
            workspace = self.workspace_id,
            live = self.live.expose_secret(),
            test = self.test.expose_secret(),
        )
    }
}
