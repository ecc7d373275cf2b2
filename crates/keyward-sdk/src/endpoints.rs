//! Typed calls beyond apps and keys: usage control, browser-safe and backend credentials,
//! gateway verification, end-user self-service and demo sandboxes (SPEC §4.1–4.3), webhook
//! endpoints (§4.8) and the secret-scanning patterns (§4.9).

use keyward_proto::{
    ApiKey, ApiKeyWithSecret, CreateMyKeyRequest, CreatePublicKeyRequest,
    CreateRateLimitSchemeRequest, CreateSigningKeyRequest, CreateWorkspaceKeyRequest, DemoSession,
    Organization, Page, PageParams, PublicKey, PutOrganizationRequest, RateLimitScheme,
    RotateKeyRequest, SigningKey, SigningKeyWithPrivateKey, UpdateRateLimitSchemeRequest,
    VerifyKeyResponse, VerifyRequestRequest, WorkspaceKey, WorkspaceKeyWithSecret,
};
use keyward_proto::{CreatePortalSessionRequest, PortalSessionLink};
use keyward_proto::{
    CreateWebhookEndpointRequest, ListWebhookDeliveriesParams, SecretScanningPatterns,
    UpdateWebhookEndpointRequest, WebhookDelivery, WebhookDeliveryQueued, WebhookEndpoint,
    WebhookEndpointWithSecret,
};
use keyward_proto::{KeyUsageReport, MyKeyUsageParams, UsageParams, UsageReport};
use reqwest::Method;

use crate::{Client, Error, NONE};

impl Client {
    /// `POST /api/v1/rate-limit-schemes` (scope `apps:write`).
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{CreateRateLimitSchemeRequest, RateWindow};
    ///
    /// let answer = keyward.create_rate_limit_scheme(&CreateRateLimitSchemeRequest {
    ///     slug: "standard".into(),
    ///     windows: vec![RateWindow { limit: 100, period_seconds: 60 }],
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn create_rate_limit_scheme(
        &self,
        request: &CreateRateLimitSchemeRequest,
    ) -> Result<RateLimitScheme, Error> {
        self.call(Method::POST, &["rate-limit-schemes"], NONE, Some(request))
            .await
    }

    /// `GET /api/v1/rate-limit-schemes`: one page.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{PageParams};
    ///
    /// let answer = keyward.list_rate_limit_schemes(&PageParams::default()).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn list_rate_limit_schemes(
        &self,
        page: &PageParams,
    ) -> Result<Page<RateLimitScheme>, Error> {
        self.call(Method::GET, &["rate-limit-schemes"], Some(page), NONE)
            .await
    }

    /// `GET /api/v1/rate-limit-schemes/{slug}`.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.get_rate_limit_scheme("acme").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn get_rate_limit_scheme(&self, slug: &str) -> Result<RateLimitScheme, Error> {
        self.call(Method::GET, &["rate-limit-schemes", slug], NONE, NONE)
            .await
    }

    /// `PATCH /api/v1/rate-limit-schemes/{slug}`: applies to every key using it at once.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{RateWindow, UpdateRateLimitSchemeRequest};
    ///
    /// let answer = keyward.update_rate_limit_scheme("acme", &UpdateRateLimitSchemeRequest {
    ///     windows: vec![RateWindow { limit: 200, period_seconds: 60 }],
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn update_rate_limit_scheme(
        &self,
        slug: &str,
        request: &UpdateRateLimitSchemeRequest,
    ) -> Result<RateLimitScheme, Error> {
        self.call(
            Method::PATCH,
            &["rate-limit-schemes", slug],
            NONE,
            Some(request),
        )
        .await
    }

    /// `DELETE /api/v1/rate-limit-schemes/{slug}`; refused while in use.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.delete_rate_limit_scheme("acme").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn delete_rate_limit_scheme(&self, slug: &str) -> Result<RateLimitScheme, Error> {
        self.call(Method::DELETE, &["rate-limit-schemes", slug], NONE, NONE)
            .await
    }

    /// `PUT /api/v1/organizations/{id}`: replaces its limits, keeps what it spent.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{PutOrganizationRequest};
    ///
    /// let answer = keyward.put_organization("key_…", &PutOrganizationRequest {
    ///     credit_cap: Some(10_000),
    ///     ..Default::default()
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn put_organization(
        &self,
        id: &str,
        request: &PutOrganizationRequest,
    ) -> Result<Organization, Error> {
        self.call(Method::PUT, &["organizations", id], NONE, Some(request))
            .await
    }

    /// `GET /api/v1/organizations/{id}`.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.get_organization("key_…").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn get_organization(&self, id: &str) -> Result<Organization, Error> {
        self.call(Method::GET, &["organizations", id], NONE, NONE)
            .await
    }

    /// `DELETE /api/v1/organizations/{id}`.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.delete_organization("key_…").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn delete_organization(&self, id: &str) -> Result<Organization, Error> {
        self.call(Method::DELETE, &["organizations", id], NONE, NONE)
            .await
    }

    /// `POST /api/v1/public-keys`: a JWT public key or a client public key.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{CreatePublicKeyRequest};
    ///
    /// let answer = keyward.create_public_key(&CreatePublicKeyRequest {
    ///     key_type: "jwt".into(),
    ///     jwks_url: Some("https://auth.example.com/.well-known/jwks.json".into()),
    ///     algorithms: Some(vec!["RS256".into()]),
    ///     ..Default::default()
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn create_public_key(
        &self,
        request: &CreatePublicKeyRequest,
    ) -> Result<PublicKey, Error> {
        self.call(Method::POST, &["public-keys"], NONE, Some(request))
            .await
    }

    /// `GET /api/v1/public-keys`: one page.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{PageParams};
    ///
    /// let answer = keyward.list_public_keys(&PageParams::default()).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn list_public_keys(&self, page: &PageParams) -> Result<Page<PublicKey>, Error> {
        self.call(Method::GET, &["public-keys"], Some(page), NONE)
            .await
    }

    /// `POST /api/v1/public-keys/{id}/rotate`: a new value for the same key.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{RotateKeyRequest};
    ///
    /// let answer = keyward.rotate_public_key("key_…", &RotateKeyRequest {
    ///     expire_previous_in_seconds: Some(3600),
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn rotate_public_key(
        &self,
        id: &str,
        request: &RotateKeyRequest,
    ) -> Result<PublicKey, Error> {
        self.call(
            Method::POST,
            &["public-keys", id, "rotate"],
            NONE,
            Some(request),
        )
        .await
    }

    /// `DELETE /api/v1/public-keys/{id}`.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.delete_public_key("key_…").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn delete_public_key(&self, id: &str) -> Result<PublicKey, Error> {
        self.call(Method::DELETE, &["public-keys", id], NONE, NONE)
            .await
    }

    /// `POST /api/v1/signing-keys`: the private key is in this answer only.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{CreateSigningKeyRequest};
    ///
    /// let answer = keyward.create_signing_key(&CreateSigningKeyRequest::default()).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn create_signing_key(
        &self,
        request: &CreateSigningKeyRequest,
    ) -> Result<SigningKeyWithPrivateKey, Error> {
        self.call(Method::POST, &["signing-keys"], NONE, Some(request))
            .await
    }

    /// `GET /api/v1/signing-keys`: one page of public halves.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{PageParams};
    ///
    /// let answer = keyward.list_signing_keys(&PageParams::default()).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn list_signing_keys(&self, page: &PageParams) -> Result<Page<SigningKey>, Error> {
        self.call(Method::GET, &["signing-keys"], Some(page), NONE)
            .await
    }

    /// `DELETE /api/v1/signing-keys/{id}`: tokens it signed stop verifying.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.delete_signing_key("key_…").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn delete_signing_key(&self, id: &str) -> Result<SigningKey, Error> {
        self.call(Method::DELETE, &["signing-keys", id], NONE, NONE)
            .await
    }

    /// `POST /api/v1/workspace-keys`: the secret is in this answer only.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{CreateWorkspaceKeyRequest};
    ///
    /// let answer = keyward.create_workspace_key(&CreateWorkspaceKeyRequest::default()).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn create_workspace_key(
        &self,
        request: &CreateWorkspaceKeyRequest,
    ) -> Result<WorkspaceKeyWithSecret, Error> {
        self.call(Method::POST, &["workspace-keys"], NONE, Some(request))
            .await
    }

    /// `GET /api/v1/workspace-keys`: one page, never secrets.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{PageParams};
    ///
    /// let answer = keyward.list_workspace_keys(&PageParams::default()).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn list_workspace_keys(
        &self,
        page: &PageParams,
    ) -> Result<Page<WorkspaceKey>, Error> {
        self.call(Method::GET, &["workspace-keys"], Some(page), NONE)
            .await
    }

    /// `POST /api/v1/workspace-keys/{id}/rotate`: a new secret, this once.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{RotateKeyRequest};
    ///
    /// let answer = keyward.rotate_workspace_key("key_…", &RotateKeyRequest {
    ///     expire_previous_in_seconds: Some(3600),
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn rotate_workspace_key(
        &self,
        id: &str,
        request: &RotateKeyRequest,
    ) -> Result<WorkspaceKeyWithSecret, Error> {
        self.call(
            Method::POST,
            &["workspace-keys", id, "rotate"],
            NONE,
            Some(request),
        )
        .await
    }

    /// `DELETE /api/v1/workspace-keys/{id}`.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.delete_workspace_key("key_…").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn delete_workspace_key(&self, id: &str) -> Result<WorkspaceKey, Error> {
        self.call(Method::DELETE, &["workspace-keys", id], NONE, NONE)
            .await
    }

    /// `POST /api/v1/verify-request` (scope `verify`): the verdict on whichever credential a
    /// request carries. See also [`crate::verify_api_key_request`].
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{VerifyRequestRequest};
    ///
    /// let answer = keyward.verify_request(&VerifyRequestRequest {
    ///     method: "GET".into(),
    ///     path: "/orders".into(),
    ///     headers: [("x-api-key".to_owned(), "acme_live_…".to_owned())].into(),
    ///     ..Default::default()
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn verify_request(
        &self,
        request: &VerifyRequestRequest,
    ) -> Result<VerifyKeyResponse, Error> {
        self.call(Method::POST, &["verify-request"], NONE, Some(request))
            .await
    }

    /// `GET /api/v1/me/keys`: the end user's own keys (a public-key client).
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{PageParams};
    ///
    /// let answer = keyward.list_my_keys(&PageParams::default()).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn list_my_keys(&self, page: &PageParams) -> Result<Page<ApiKey>, Error> {
        self.call(Method::GET, &["me", "keys"], Some(page), NONE)
            .await
    }

    /// `POST /api/v1/me/keys`: a key for the end user; the secret is in this answer only.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{CreateMyKeyRequest};
    ///
    /// let answer = keyward.create_my_key(&CreateMyKeyRequest {
    ///     name: "my laptop".into(),
    ///     ..Default::default()
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn create_my_key(
        &self,
        request: &CreateMyKeyRequest,
    ) -> Result<ApiKeyWithSecret, Error> {
        self.call(Method::POST, &["me", "keys"], NONE, Some(request))
            .await
    }

    /// `POST /api/v1/me/keys/{id}/rotate`.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{RotateKeyRequest};
    ///
    /// let answer = keyward.rotate_my_key("key_…", &RotateKeyRequest {
    ///     expire_previous_in_seconds: Some(3600),
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn rotate_my_key(
        &self,
        id: &str,
        request: &RotateKeyRequest,
    ) -> Result<ApiKeyWithSecret, Error> {
        self.call(
            Method::POST,
            &["me", "keys", id, "rotate"],
            NONE,
            Some(request),
        )
        .await
    }

    /// `POST /api/v1/me/keys/{id}/revoke`.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.revoke_my_key("key_…").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn revoke_my_key(&self, id: &str) -> Result<ApiKey, Error> {
        self.call(Method::POST, &["me", "keys", id, "revoke"], NONE, NONE)
            .await
    }

    /// `GET /api/v1/me/keys/{id}`: one of the end user's keys, metadata only.
    pub async fn get_my_key(&self, id: &str) -> Result<ApiKey, Error> {
        self.call(Method::GET, &["me", "keys", id], NONE, NONE)
            .await
    }

    /// `GET /api/v1/me/keys/{id}/usage`: one of the end user's keys' verification counts
    /// over time, by outcome.
    pub async fn my_key_usage(
        &self,
        id: &str,
        range: &MyKeyUsageParams,
    ) -> Result<UsageReport, Error> {
        self.call(Method::GET, &["me", "keys", id, "usage"], Some(range), NONE)
            .await
    }

    /// `GET /api/v1/usage` (scope `keys:read`): verification counts over time, by outcome.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{UsageParams};
    ///
    /// let answer = keyward.usage(&UsageParams {
    ///     key_id: Some("key_…".into()),
    ///     granularity: Some("day".into()),
    ///     ..Default::default()
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn usage(&self, params: &UsageParams) -> Result<UsageReport, Error> {
        self.call(Method::GET, &["usage"], Some(params), NONE).await
    }

    /// `GET /api/v1/usage/keys` (scope `keys:read`): the keys with the most verifications
    /// over a range, most first; `limit` says how many (default 10).
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::UsageParams;
    ///
    /// let busiest = keyward.usage_by_key(&UsageParams {
    ///     app: Some("acme-v2".into()),
    ///     limit: Some(5),
    ///     ..Default::default()
    /// }).await?;
    /// # let _ = busiest;
    /// # Ok(()) }
    /// ```
    pub async fn usage_by_key(&self, params: &UsageParams) -> Result<KeyUsageReport, Error> {
        self.call(Method::GET, &["usage", "keys"], Some(params), NONE)
            .await
    }

    /// `POST /api/v1/portal/sessions` (scope `keys:write`): a single-use link, valid for
    /// minutes, for one customer to manage their keys of one app on Keyward's portal page
    /// (SPEC §4.10). Send the customer's browser to `url`.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::CreatePortalSessionRequest;
    ///
    /// let link = keyward.create_portal_session(&CreatePortalSessionRequest {
    ///     owner_user_id: "usr_123".into(),
    ///     app: "reports".into(),
    ///     return_url: Some("https://app.example.com/settings".into()),
    ///     ..Default::default()
    /// }).await?;
    /// // e.g. answer the customer's request with a redirect to `link.url`.
    /// # let _ = link;
    /// # Ok(()) }
    /// ```
    pub async fn create_portal_session(
        &self,
        request: &CreatePortalSessionRequest,
    ) -> Result<PortalSessionLink, Error> {
        self.call(Method::POST, &["portal", "sessions"], NONE, Some(request))
            .await
    }

    /// `POST /api/v1/webhook-endpoints` (scope `webhooks:write`): where events and alerts
    /// are pushed. The signing secret (`whsec_…`) is in this answer only; check deliveries
    /// with it using any Standard Webhooks library (e.g. the `standardwebhooks` crate).
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{CreateWebhookEndpointRequest};
    ///
    /// let answer = keyward.create_webhook_endpoint(&CreateWebhookEndpointRequest {
    ///     url: "https://api.example.com/keyward-hook".into(),
    ///     events: Some(vec!["key.revoked".into(), "key.leaked".into()]),
    ///     ..Default::default()
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn create_webhook_endpoint(
        &self,
        request: &CreateWebhookEndpointRequest,
    ) -> Result<WebhookEndpointWithSecret, Error> {
        self.call(Method::POST, &["webhook-endpoints"], NONE, Some(request))
            .await
    }

    /// `GET /api/v1/webhook-endpoints` (scope `webhooks:read`): one page, never secrets.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{PageParams};
    ///
    /// let answer = keyward.list_webhook_endpoints(&PageParams::default()).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn list_webhook_endpoints(
        &self,
        page: &PageParams,
    ) -> Result<Page<WebhookEndpoint>, Error> {
        self.call(Method::GET, &["webhook-endpoints"], Some(page), NONE)
            .await
    }

    /// `GET /api/v1/webhook-endpoints/{id}`.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.get_webhook_endpoint("whe_…").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn get_webhook_endpoint(&self, id: &str) -> Result<WebhookEndpoint, Error> {
        self.call(Method::GET, &["webhook-endpoints", id], NONE, NONE)
            .await
    }

    /// `PATCH /api/v1/webhook-endpoints/{id}`: absent fields are kept; turning an endpoint
    /// back on resumes its pending deliveries.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{UpdateWebhookEndpointRequest};
    ///
    /// let answer = keyward.update_webhook_endpoint("whe_…", &UpdateWebhookEndpointRequest {
    ///     enabled: Some(true),
    ///     ..Default::default()
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn update_webhook_endpoint(
        &self,
        id: &str,
        request: &UpdateWebhookEndpointRequest,
    ) -> Result<WebhookEndpoint, Error> {
        self.call(
            Method::PATCH,
            &["webhook-endpoints", id],
            NONE,
            Some(request),
        )
        .await
    }

    /// `DELETE /api/v1/webhook-endpoints/{id}`, with its pending deliveries and its log.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// keyward.delete_webhook_endpoint("whe_…").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_webhook_endpoint(&self, id: &str) -> Result<(), Error> {
        self.call(Method::DELETE, &["webhook-endpoints", id], NONE, NONE)
            .await
    }

    /// `POST /api/v1/webhook-endpoints/{id}/rotate-secret`: a new secret, this once. The
    /// previous one keeps signing beside it for 24 hours.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.rotate_webhook_secret("whe_…").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn rotate_webhook_secret(
        &self,
        id: &str,
    ) -> Result<WebhookEndpointWithSecret, Error> {
        self.call(
            Method::POST,
            &["webhook-endpoints", id, "rotate-secret"],
            NONE,
            NONE,
        )
        .await
    }

    /// `GET /api/v1/webhook-endpoints/{id}/deliveries`: one page, newest first, each with its
    /// attempts.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{ListWebhookDeliveriesParams};
    ///
    /// let answer = keyward
    ///     .list_webhook_deliveries("whe_…", &ListWebhookDeliveriesParams::default())
    ///     .await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn list_webhook_deliveries(
        &self,
        id: &str,
        params: &ListWebhookDeliveriesParams,
    ) -> Result<Page<WebhookDelivery>, Error> {
        self.call(
            Method::GET,
            &["webhook-endpoints", id, "deliveries"],
            Some(params),
            NONE,
        )
        .await
    }

    /// `POST /api/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry`: sends a delivery
    /// again now, with the same `webhook-id`.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.retry_webhook_delivery("whe_…", "whd_…").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn retry_webhook_delivery(
        &self,
        id: &str,
        delivery_id: &str,
    ) -> Result<WebhookDeliveryQueued, Error> {
        self.call(
            Method::POST,
            &["webhook-endpoints", id, "deliveries", delivery_id, "retry"],
            NONE,
            NONE,
        )
        .await
    }

    /// `POST /api/v1/webhook-endpoints/{id}/test`: queues a `webhook.test` event for this
    /// endpoint only, whatever its `events`.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.test_webhook_endpoint("whe_…").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn test_webhook_endpoint(&self, id: &str) -> Result<WebhookDeliveryQueued, Error> {
        self.call(Method::POST, &["webhook-endpoints", id, "test"], NONE, NONE)
            .await
    }

    /// `GET /api/v1/secret-scanning/patterns` (scope `apps:read`): the formats scanners
    /// should match, a regex for root keys and one per app's key prefix.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.secret_scanning_patterns().await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn secret_scanning_patterns(&self) -> Result<SecretScanningPatterns, Error> {
        self.call(Method::GET, &["secret-scanning", "patterns"], NONE, NONE)
            .await
    }

    /// `POST /api/v1/demo/session`: a throw-away sandbox with its own root key. Needs no
    /// API key.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.create_demo_session().await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn create_demo_session(&self) -> Result<DemoSession, Error> {
        self.call(Method::POST, &["demo", "session"], NONE, NONE)
            .await
    }

    /// `DELETE /api/v1/demo/session`, with the sandbox's own key: purges the sandbox.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.delete_demo_session().await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn delete_demo_session(&self) -> Result<(), Error> {
        self.call(Method::DELETE, &["demo", "session"], NONE, NONE)
            .await
    }
}
