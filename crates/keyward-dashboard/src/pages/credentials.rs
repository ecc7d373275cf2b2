//! Credentials besides API keys: JWT and client public keys, signing keys (the private key
//! shown once, as PEM and Base64), and workspace keys (the secret shown once).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};

use axum::response::Response;
use keyward_proto::{
    CreatePublicKeyRequest, CreateSigningKeyRequest, CreateWorkspaceKeyRequest, Page, PublicKey,
    RotateKeyRequest, SigningKey, SigningKeyWithPrivateKey, WorkspaceKey, WorkspaceKeyWithSecret,
};
use serde::Deserialize;

use crate::api::{path, ApiFailure};
use crate::error::PageError;
use crate::pages::apps::refusal;
use crate::pages::{back_to, list_page, Confirmed, RevealPage, Revealed};
use crate::view::{filled, render, split_list, when, Layout, Notice, Section, Submitted};
use crate::{Dashboard, SignedIn};

// Public keys.

#[derive(Template)]
#[template(path = "public_keys.html")]
struct PublicKeysPage {
    layout: Layout,
    keys: Page<PublicKey>,
}

async fn public_keys_page(
    dashboard: &Dashboard,
    signed: SignedIn,
    notice: Option<Notice>,
) -> Result<Response, PageError> {
    list_page(
        dashboard,
        signed,
        "public-keys",
        notice,
        |layout, keys| PublicKeysPage { layout, keys },
        Section::PublicKeys,
        "Public keys",
    )
    .await
}

pub(crate) async fn public_keys(
    State(dashboard): State<Arc<Dashboard>>,
    signed: SignedIn,
) -> Result<Response, PageError> {
    public_keys_page(&dashboard, signed, None).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct PublicKeyForm {
    key_type: String,
    name: Option<String>,
    jwks_url: Option<String>,
    public_key: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    algorithms: Option<String>,
    subject_claim: Option<String>,
    self_service_app: Option<String>,
    max_keys_per_user: Option<String>,
}

/// A form's refusal shown on its list page; a refused root key ends the session.
async fn or_show<T>(
    result: Result<T, ApiFailure>,
    show: impl AsyncFnOnce(Option<Notice>) -> Result<Response, PageError>,
    then: impl FnOnce(T) -> Response,
) -> Result<Response, PageError> {
    match result {
        Ok(value) => Ok(then(value)),
        Err(failure) => {
            let failure = refusal(failure)?;
            show(Notice::error(failure.message)).await
        }
    }
}

pub(crate) async fn create_public_key(
    State(dashboard): State<Arc<Dashboard>>,
    Submitted { signed, form }: Submitted<PublicKeyForm>,
) -> Result<Response, PageError> {
    let max_keys_per_user = match filled(&form.max_keys_per_user).map(|text| text.parse()) {
        None => None,
        Some(Ok(max)) => Some(max),
        Some(Err(_)) => {
            return public_keys_page(
                &dashboard,
                signed,
                Notice::error("Keys per user is a whole number"),
            )
            .await
        }
    };
    let request = CreatePublicKeyRequest {
        key_type: form.key_type.clone(),
        name: filled(&form.name),
        jwks_url: filled(&form.jwks_url),
        public_key: filled(&form.public_key),
        issuer: filled(&form.issuer),
        audience: filled(&form.audience),
        algorithms: filled(&form.algorithms).map(|text| split_list(&text)),
        subject_claim: filled(&form.subject_claim),
        self_service_app: filled(&form.self_service_app),
        max_keys_per_user,
        rate_limit_scheme: None,
    };
    let created = dashboard
        .api
        .post::<PublicKey>(signed.key(), &path(&["public-keys"], None::<&()>), &request)
        .await;
    or_show(
        created,
        async |notice| public_keys_page(&dashboard, signed, notice).await,
        |_| back_to("/dashboard/public-keys"),
    )
    .await
}

pub(crate) async fn rotate_public_key(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    Submitted { signed, .. }: Submitted<Confirmed>,
) -> Result<Response, PageError> {
    dashboard
        .api
        .post::<PublicKey>(
            signed.key(),
            &path(&["public-keys", &id, "rotate"], None::<&()>),
            &RotateKeyRequest::default(),
        )
        .await?;
    Ok(back_to("/dashboard/public-keys"))
}

pub(crate) async fn delete_public_key(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    Submitted { signed, .. }: Submitted<Confirmed>,
) -> Result<Response, PageError> {
    dashboard
        .api
        .delete(signed.key(), &path(&["public-keys", &id], None::<&()>))
        .await?;
    Ok(back_to("/dashboard/public-keys"))
}

// Signing keys.

#[derive(Template)]
#[template(path = "signing_keys.html")]
struct SigningKeysPage {
    layout: Layout,
    keys: Page<SigningKey>,
}

impl SigningKeysPage {
    fn created(key: &SigningKey) -> String {
        when(&key.created_at)
    }
}

async fn signing_keys_page(
    dashboard: &Dashboard,
    signed: SignedIn,
    notice: Option<Notice>,
) -> Result<Response, PageError> {
    list_page(
        dashboard,
        signed,
        "signing-keys",
        notice,
        |layout, keys| SigningKeysPage { layout, keys },
        Section::SigningKeys,
        "Signing keys",
    )
    .await
}

pub(crate) async fn signing_keys(
    State(dashboard): State<Arc<Dashboard>>,
    signed: SignedIn,
) -> Result<Response, PageError> {
    signing_keys_page(&dashboard, signed, None).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct NameForm {
    name: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

pub(crate) async fn create_signing_key(
    State(dashboard): State<Arc<Dashboard>>,
    Submitted { signed, form }: Submitted<NameForm>,
) -> Result<Response, PageError> {
    let created = dashboard
        .api
        .post::<SigningKeyWithPrivateKey>(
            signed.key(),
            &path(&["signing-keys"], None::<&()>),
            &CreateSigningKeyRequest {
                name: filled(&form.name),
            },
        )
        .await;
    let layout = Layout::new(&signed, Section::SigningKeys, "Your new signing key");
    or_show(
        created,
        async |notice| signing_keys_page(&dashboard, signed, notice).await,
        |created| {
            render(&RevealPage {
                layout,
                what: format!("Signing key “{}” created", created.key.name),
                next: "/dashboard/signing-keys".to_owned(),
                secrets: vec![
                    Revealed {
                        label: "Private key (PEM)",
                        value: created.private_key_pem,
                        multiline: true,
                    },
                    Revealed {
                        label: "Private key (Base64 of the PEM)",
                        value: created.private_key_base64,
                        multiline: false,
                    },
                ],
            })
        },
    )
    .await
}

pub(crate) async fn delete_signing_key(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    Submitted { signed, .. }: Submitted<Confirmed>,
) -> Result<Response, PageError> {
    dashboard
        .api
        .delete(signed.key(), &path(&["signing-keys", &id], None::<&()>))
        .await?;
    Ok(back_to("/dashboard/signing-keys"))
}

// Workspace keys.

#[derive(Template)]
#[template(path = "workspace_keys.html")]
struct WorkspaceKeysPage {
    layout: Layout,
    keys: Page<WorkspaceKey>,
}

impl WorkspaceKeysPage {
    fn created(key: &WorkspaceKey) -> String {
        when(&key.created_at)
    }
}

async fn workspace_keys_page(
    dashboard: &Dashboard,
    signed: SignedIn,
    notice: Option<Notice>,
) -> Result<Response, PageError> {
    list_page(
        dashboard,
        signed,
        "workspace-keys",
        notice,
        |layout, keys| WorkspaceKeysPage { layout, keys },
        Section::WorkspaceKeys,
        "Workspace keys",
    )
    .await
}

pub(crate) async fn workspace_keys(
    State(dashboard): State<Arc<Dashboard>>,
    signed: SignedIn,
) -> Result<Response, PageError> {
    workspace_keys_page(&dashboard, signed, None).await
}

fn reveal_workspace_key(layout: Layout, what: &str, key: WorkspaceKeyWithSecret) -> Response {
    render(&RevealPage {
        layout,
        what: format!("Workspace key “{}” {what}", key.key.name),
        next: "/dashboard/workspace-keys".to_owned(),
        secrets: vec![
            Revealed {
                label: "Workspace key id",
                value: key.key.id,
                multiline: false,
            },
            Revealed {
                label: "Workspace secret",
                value: key.secret,
                multiline: false,
            },
        ],
    })
}

pub(crate) async fn create_workspace_key(
    State(dashboard): State<Arc<Dashboard>>,
    Submitted { signed, form }: Submitted<NameForm>,
) -> Result<Response, PageError> {
    let scopes: Vec<String> = form
        .scopes
        .iter()
        .flat_map(|scope| split_list(scope))
        .collect();
    let created = dashboard
        .api
        .post::<WorkspaceKeyWithSecret>(
            signed.key(),
            &path(&["workspace-keys"], None::<&()>),
            &CreateWorkspaceKeyRequest {
                name: filled(&form.name),
                scopes: (!scopes.is_empty()).then_some(scopes),
                // The dashboard's workspace keys are unlimited, or inherit the signed-in
                // key's limit; the API sets a scheme.
                rate_limit_scheme: None,
            },
        )
        .await;
    let layout = Layout::new(&signed, Section::WorkspaceKeys, "Your new workspace key");
    or_show(
        created,
        async |notice| workspace_keys_page(&dashboard, signed, notice).await,
        |created| reveal_workspace_key(layout, "created", created),
    )
    .await
}

pub(crate) async fn rotate_workspace_key(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    Submitted { signed, .. }: Submitted<Confirmed>,
) -> Result<Response, PageError> {
    let rotated: WorkspaceKeyWithSecret = dashboard
        .api
        .post(
            signed.key(),
            &path(&["workspace-keys", &id, "rotate"], None::<&()>),
            &RotateKeyRequest::default(),
        )
        .await?;
    let layout = Layout::new(&signed, Section::WorkspaceKeys, "Rotated workspace key");
    Ok(reveal_workspace_key(layout, "rotated", rotated))
}

pub(crate) async fn delete_workspace_key(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    Submitted { signed, .. }: Submitted<Confirmed>,
) -> Result<Response, PageError> {
    dashboard
        .api
        .delete(signed.key(), &path(&["workspace-keys", &id], None::<&()>))
        .await?;
    Ok(back_to("/dashboard/workspace-keys"))
}
