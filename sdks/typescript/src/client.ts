/**
 * `KeywardClient`: a typed method for every endpoint of SPEC §4.1–4.3, §4.8 (webhooks) and
 * §4.9 (leaked keys), grouped by resource, with the seeds' names in `client.apiKeys`.
 */

import type * as T from "./api-types.js";
import type { AnswerOf, BodyOf, OperationId, PathOf, QueryOf, RouteOf } from "./api-types.js";
import { Credentials, type CredentialOptions, type RefreshUserToken } from "./credentials.js";
import { describeRequest, type IncomingRequest, type VerifyRequestOptions } from "./gateway.js";
import { PageRequest, type Page } from "./pagination.js";
import { WorkspaceKeySigner } from "./signing.js";
import {
  KeywardAlertsWebSocket,
  KeywardWebSocket,
  type SocketOptions,
  type WebSocketConstructor,
} from "./socket.js";
import {
  DEFAULT_BASE_URL,
  DEFAULT_MAX_RETRIES,
  DEFAULT_TIMEOUT_MS,
  Transport,
  fillPath,
  type FetchFunction,
  type QueryParameters,
} from "./transport.js";

export interface KeywardClientOptions extends CredentialOptions {
  /** The server's address; `http://127.0.0.1:8080` when absent. */
  baseUrl?: string | undefined;
  /**
   * A workspace key and its secret, for backends: every request is signed with HMAC-SHA256
   * (SPEC §4.4) and the secret is never sent. It replaces `apiKey`.
   */
  workspaceKey?: { key: string; secret: string } | undefined;
  /** How long one attempt may take, in milliseconds (default 30 000). */
  timeout?: number | undefined;
  /** How many times a GET that met a 503 or could not connect is tried again (default 2). */
  maxRetries?: number | undefined;
  /** The `fetch` to call; the platform's when absent. */
  fetch?: FetchFunction | undefined;
  /** The WebSocket class for `client.events()` / `client.alerts()`; the platform's when absent. */
  WebSocket?: WebSocketConstructor | undefined;
}

/**
 * The operations the SDK calls; the rest are for proxies (forward auth), Prometheus, sockets,
 * GitHub (`github_report`: the secret scanning partner endpoint, which GitHub calls with its
 * own signature, never an application), or Keyward's own portal page
 * (`redeem_portal_session` when a customer opens a link, `end_portal_session` when they
 * sign out).
 */
type SdkOperation = Exclude<
  OperationId,
  | `forward_auth${string}`
  | "websocket"
  | "metrics"
  | "github_report"
  | "redeem_portal_session"
  | "end_portal_session"
>;

/**
 * Where each operation lives. Checked against the generated `paths`: an operation the server
 * moves, or adds, fails the type check until this table follows.
 */
const ROUTES = {
  healthz: ["GET", "/healthz"],
  readyz: ["GET", "/readyz"],
  create_app: ["POST", "/api/v1/apps"],
  list_apps: ["GET", "/api/v1/apps"],
  get_app: ["GET", "/api/v1/apps/{slug}"],
  update_app: ["PATCH", "/api/v1/apps/{slug}"],
  delete_app: ["DELETE", "/api/v1/apps/{slug}"],
  create_key: ["POST", "/api/v1/apps/{slug}/keys"],
  list_keys: ["GET", "/api/v1/apps/{slug}/keys"],
  import_keys: ["POST", "/api/v1/apps/{slug}/keys/import"],
  get_key: ["GET", "/api/v1/keys/{id}"],
  update_key: ["PATCH", "/api/v1/keys/{id}"],
  delete_key: ["DELETE", "/api/v1/keys/{id}"],
  revoke_key: ["POST", "/api/v1/keys/{id}/revoke"],
  rotate_key: ["POST", "/api/v1/keys/{id}/rotate"],
  verify_key: ["POST", "/api/v1/keys/verify"],
  report_leak: ["POST", "/api/v1/keys/report-leak"],
  verify_request: ["POST", "/api/v1/verify-request"],
  create_public_key: ["POST", "/api/v1/public-keys"],
  list_public_keys: ["GET", "/api/v1/public-keys"],
  rotate_public_key: ["POST", "/api/v1/public-keys/{id}/rotate"],
  delete_public_key: ["DELETE", "/api/v1/public-keys/{id}"],
  create_signing_key: ["POST", "/api/v1/signing-keys"],
  list_signing_keys: ["GET", "/api/v1/signing-keys"],
  delete_signing_key: ["DELETE", "/api/v1/signing-keys/{id}"],
  create_workspace_key: ["POST", "/api/v1/workspace-keys"],
  list_workspace_keys: ["GET", "/api/v1/workspace-keys"],
  rotate_workspace_key: ["POST", "/api/v1/workspace-keys/{id}/rotate"],
  delete_workspace_key: ["DELETE", "/api/v1/workspace-keys/{id}"],
  create_scheme: ["POST", "/api/v1/rate-limit-schemes"],
  list_schemes: ["GET", "/api/v1/rate-limit-schemes"],
  get_scheme: ["GET", "/api/v1/rate-limit-schemes/{slug}"],
  update_scheme: ["PATCH", "/api/v1/rate-limit-schemes/{slug}"],
  delete_scheme: ["DELETE", "/api/v1/rate-limit-schemes/{slug}"],
  put_organization: ["PUT", "/api/v1/organizations/{organization_id}"],
  get_organization: ["GET", "/api/v1/organizations/{organization_id}"],
  delete_organization: ["DELETE", "/api/v1/organizations/{organization_id}"],
  create_root_key: ["POST", "/api/v1/root-keys"],
  list_root_keys: ["GET", "/api/v1/root-keys"],
  revoke_root_key: ["POST", "/api/v1/root-keys/{id}/revoke"],
  get_environment: ["GET", "/api/v1/environment"],
  update_environment: ["PATCH", "/api/v1/environment"],
  list_audit_log: ["GET", "/api/v1/audit-log"],
  usage: ["GET", "/api/v1/usage"],
  usage_by_key: ["GET", "/api/v1/usage/keys"],
  list_my_keys: ["GET", "/api/v1/me/keys"],
  create_my_key: ["POST", "/api/v1/me/keys"],
  rotate_my_key: ["POST", "/api/v1/me/keys/{id}/rotate"],
  revoke_my_key: ["POST", "/api/v1/me/keys/{id}/revoke"],
  get_my_key: ["GET", "/api/v1/me/keys/{id}"],
  my_key_usage: ["GET", "/api/v1/me/keys/{id}/usage"],
  create_session: ["POST", "/api/v1/demo/session"],
  delete_session: ["DELETE", "/api/v1/demo/session"],
  create_endpoint: ["POST", "/api/v1/webhook-endpoints"],
  list_endpoints: ["GET", "/api/v1/webhook-endpoints"],
  get_endpoint: ["GET", "/api/v1/webhook-endpoints/{id}"],
  update_endpoint: ["PATCH", "/api/v1/webhook-endpoints/{id}"],
  delete_endpoint: ["DELETE", "/api/v1/webhook-endpoints/{id}"],
  rotate_secret: ["POST", "/api/v1/webhook-endpoints/{id}/rotate-secret"],
  list_deliveries: ["GET", "/api/v1/webhook-endpoints/{id}/deliveries"],
  retry_delivery: ["POST", "/api/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry"],
  test_endpoint: ["POST", "/api/v1/webhook-endpoints/{id}/test"],
  patterns: ["GET", "/api/v1/secret-scanning/patterns"],
  create_portal_session: ["POST", "/api/v1/portal/sessions"],
} as const satisfies { [O in SdkOperation]: RouteOf<O> };

/** The operation ids the SDK covers (the drift test compares them with the server's). */
export const SDK_OPERATIONS = Object.keys(ROUTES) as readonly SdkOperation[];

interface CallInput<O extends SdkOperation> {
  path?: PathOf<O>;
  query?: QueryOf<O> | undefined;
  body?: BodyOf<O> | undefined;
}

type ListOperation = {
  [O in SdkOperation]: AnswerOf<O> extends Page<unknown> ? (QueryOf<O> extends { cursor?: unknown } ? O : never) : never;
}[SdkOperation];
type ItemOf<O extends SdkOperation> = AnswerOf<O> extends Page<infer Item> ? Item : never;

/** What every resource group calls: one operation, by its OpenAPI id. */
class Api {
  constructor(readonly transport: Transport) {}

  call<O extends SdkOperation>(operation: O, input: CallInput<O> = {}): Promise<AnswerOf<O>> {
    const [method, template] = ROUTES[operation];
    const path = fillPath(template, input.path as Record<string, string> | undefined);
    const options: { query?: QueryParameters; body?: unknown } = {};
    if (input.query !== undefined) options.query = input.query as QueryParameters;
    if (input.body !== undefined) options.body = input.body;
    return this.transport.request<AnswerOf<O>>(method, path, options);
  }

  /** A list operation as a {@link PageRequest}: the first page, or every item of every page. */
  list<O extends ListOperation>(operation: O, input: CallInput<O> = {}): PageRequest<ItemOf<O>> {
    const query = (input.query ?? {}) as QueryOf<O> & { cursor?: string };
    return new PageRequest(
      (cursor) =>
        this.call(operation, { ...input, query: { ...query, cursor } }) as unknown as Promise<Page<ItemOf<O>>>,
      query.cursor,
    );
  }
}

abstract class Resource {
  protected readonly api: Api;
  constructor(api: Api) {
    this.api = api;
  }
}

/** Apps: categories of keys with the permissions they may grant (`apps:write`, `apps:read`). */
export class Apps extends Resource {
  create(body: T.CreateAppRequest): Promise<T.App> {
    return this.api.call("create_app", { body });
  }
  list(query?: QueryOf<"list_apps">): PageRequest<T.App> {
    return this.api.list("list_apps", { query });
  }
  get(slug: string): Promise<T.App> {
    return this.api.call("get_app", { path: { slug } });
  }
  update(slug: string, body: T.UpdateAppRequest): Promise<T.App> {
    return this.api.call("update_app", { path: { slug }, body });
  }
  /** Deletes the app and revokes every key it has. */
  delete(slug: string): Promise<T.App> {
    return this.api.call("delete_app", { path: { slug } });
  }
}

/** API keys issued under apps, and their verification. */
export class Keys extends Resource {
  /** Issues a key; the answer holds its `secret`, this once. */
  create(app: string, body: T.CreateKeyRequest): Promise<T.ApiKeyWithSecret> {
    return this.api.call("create_key", { path: { slug: app }, body });
  }
  /** Metadata of an app's keys, never secrets; filters `owner_user_id`, `organization_id`, `status`, `search`. */
  list(app: string, query?: QueryOf<"list_keys">): PageRequest<T.ApiKey> {
    return this.api.list("list_keys", { path: { slug: app }, query });
  }
  /** Imports existing keys by hash; a batch may be sent again. */
  import(app: string, body: T.ImportKeysRequest): Promise<T.ImportKeysResponse> {
    return this.api.call("import_keys", { path: { slug: app }, body });
  }
  get(id: string): Promise<T.ApiKey> {
    return this.api.call("get_key", { path: { id } });
  }
  update(id: string, body: T.UpdateKeyRequest): Promise<T.ApiKey> {
    return this.api.call("update_key", { path: { id }, body });
  }
  /** Revokes at once: every later verification gets `KEY_REVOKED`. */
  revoke(id: string): Promise<T.ApiKey> {
    return this.api.call("revoke_key", { path: { id } });
  }
  /** A new secret for the same key; the old one works `expire_previous_in_seconds` longer. */
  rotate(id: string, body: T.RotateKeyRequest = {}): Promise<T.ApiKeyWithSecret> {
    return this.api.call("rotate_key", { path: { id }, body });
  }
  delete(id: string): Promise<T.ApiKey> {
    return this.api.call("delete_key", { path: { id } });
  }
  /** Verifies a key (scope `verify`). A refused key is no error: `valid: false`, with the `status` to answer. */
  verify(body: T.VerifyKeyRequest): Promise<T.VerifyKeyResponse> {
    return this.api.call("verify_key", { body });
  }
  /**
   * Reports a secret found in public (SPEC §4.9), for scanners other than GitHub's: the
   * environment's `leaked_key_action` applies (`revoke` by default) and a `key.leaked` event
   * follows. An unknown or already revoked key changes nothing, and `result` says so.
   */
  reportLeak(body: T.ReportLeakRequest): Promise<T.ReportLeakResponse> {
    return this.api.call("report_leak", { body });
  }
}

/** The seeds' names for apps and keys (`@keyward/sdk` users coming from similar SDKs). */
export class ApiKeys extends Resource {
  readonly #apps = new Apps(this.api);
  readonly #keys = new Keys(this.api);

  createApiAuthApp(body: T.CreateAppRequest): Promise<T.App> {
    return this.#apps.create(body);
  }
  listApiAuthApps(query?: QueryOf<"list_apps">): PageRequest<T.App> {
    return this.#apps.list(query);
  }
  getApiAuthApp(slug: string): Promise<T.App> {
    return this.#apps.get(slug);
  }
  updateApiAuthApp(slug: string, body: T.UpdateAppRequest): Promise<T.App> {
    return this.#apps.update(slug, body);
  }
  deleteApiAuthApp(slug: string): Promise<T.App> {
    return this.#apps.delete(slug);
  }
  createApiKey(app: string, body: T.CreateKeyRequest): Promise<T.ApiKeyWithSecret> {
    return this.#keys.create(app, body);
  }
  listApiKeys(app: string, query?: QueryOf<"list_keys">): PageRequest<T.ApiKey> {
    return this.#keys.list(app, query);
  }
  revokeApiKey({ api_key_id }: { api_key_id: string }): Promise<T.ApiKey> {
    return this.#keys.revoke(api_key_id);
  }
  rotateApiKey({
    api_key_id,
    expire_previous_in_seconds,
  }: {
    api_key_id: string;
    expire_previous_in_seconds?: number | undefined;
  }): Promise<T.ApiKeyWithSecret> {
    return this.#keys.rotate(
      api_key_id,
      expire_previous_in_seconds === undefined ? {} : { expire_previous_in_seconds },
    );
  }
}

/** Verifying the requests your own service receives. */
export class Gateway extends Resource {
  /** `POST /api/v1/verify-request` with facts you gathered yourself. */
  verifyRequest(body: T.VerifyRequestRequest): Promise<T.VerifyKeyResponse> {
    return this.api.call("verify_request", { body });
  }
  /**
   * Verifies whichever credential an incoming request carries (SPEC §4.4): API key, JWT
   * public key with a JWT, client public key with a signed user token, or a workspace-key
   * signature (whose body is read to digest it). Needs a root key with the `verify` scope.
   * A refused credential is no error: `valid: false`, with the `status` to answer.
   */
  async verifyApiKeyRequest(request: IncomingRequest, options?: VerifyRequestOptions): Promise<T.VerifyKeyResponse> {
    return this.verifyRequest(await describeRequest(request, options));
  }
}

/** JWT public keys (`pk_jwt_…`) and client public keys (`pk_live_…`): safe to ship to browsers. */
export class PublicKeys extends Resource {
  create(body: T.CreatePublicKeyRequest): Promise<T.PublicKey> {
    return this.api.call("create_public_key", { body });
  }
  list(query?: QueryOf<"list_public_keys">): PageRequest<T.PublicKey> {
    return this.api.list("list_public_keys", { query });
  }
  rotate(id: string, body: T.RotateKeyRequest = {}): Promise<T.PublicKey> {
    return this.api.call("rotate_public_key", { path: { id }, body });
  }
  delete(id: string): Promise<T.PublicKey> {
    return this.api.call("delete_public_key", { path: { id } });
  }
}

/** ES256 signing keys for signed user tokens; the private key is in the create answer only. */
export class SigningKeys extends Resource {
  create(body: T.CreateSigningKeyRequest = {}): Promise<T.SigningKeyWithPrivateKey> {
    return this.api.call("create_signing_key", { body });
  }
  list(query?: QueryOf<"list_signing_keys">): PageRequest<T.SigningKey> {
    return this.api.list("list_signing_keys", { query });
  }
  delete(id: string): Promise<T.SigningKey> {
    return this.api.call("delete_signing_key", { path: { id } });
  }
}

/** Workspace keys and secrets, for backends that sign their requests. */
export class WorkspaceKeys extends Resource {
  create(body: T.CreateWorkspaceKeyRequest = {}): Promise<T.WorkspaceKeyWithSecret> {
    return this.api.call("create_workspace_key", { body });
  }
  list(query?: QueryOf<"list_workspace_keys">): PageRequest<T.WorkspaceKey> {
    return this.api.list("list_workspace_keys", { query });
  }
  rotate(id: string, body: T.RotateKeyRequest = {}): Promise<T.WorkspaceKeyWithSecret> {
    return this.api.call("rotate_workspace_key", { path: { id }, body });
  }
  delete(id: string): Promise<T.WorkspaceKey> {
    return this.api.call("delete_workspace_key", { path: { id } });
  }
}

/** Named rate-limit schemes: one or more windows, referred to by slug. */
export class RateLimitSchemes extends Resource {
  create(body: T.CreateRateLimitSchemeRequest): Promise<T.RateLimitScheme> {
    return this.api.call("create_scheme", { body });
  }
  list(query?: QueryOf<"list_schemes">): PageRequest<T.RateLimitScheme> {
    return this.api.list("list_schemes", { query });
  }
  get(slug: string): Promise<T.RateLimitScheme> {
    return this.api.call("get_scheme", { path: { slug } });
  }
  update(slug: string, body: T.UpdateRateLimitSchemeRequest): Promise<T.RateLimitScheme> {
    return this.api.call("update_scheme", { path: { slug }, body });
  }
  delete(slug: string): Promise<T.RateLimitScheme> {
    return this.api.call("delete_scheme", { path: { slug } });
  }
}

/** Your customers' organisations: a shared rate limit and credit cap for all their keys. */
export class Organizations extends Resource {
  /** Creates or replaces the organisation's settings. */
  put(organizationId: string, body: T.PutOrganizationRequest): Promise<T.Organization> {
    return this.api.call("put_organization", { path: { organization_id: organizationId }, body });
  }
  get(organizationId: string): Promise<T.Organization> {
    return this.api.call("get_organization", { path: { organization_id: organizationId } });
  }
  delete(organizationId: string): Promise<T.Organization> {
    return this.api.call("delete_organization", { path: { organization_id: organizationId } });
  }
}

/** Root keys: credentials for Keyward's own API, with scopes. */
export class RootKeys extends Resource {
  create(body: T.CreateRootKeyRequest): Promise<T.RootKeyWithSecret> {
    return this.api.call("create_root_key", { body });
  }
  list(query?: QueryOf<"list_root_keys">): PageRequest<T.RootKey> {
    return this.api.list("list_root_keys", { query });
  }
  revoke(id: string): Promise<T.RootKey> {
    return this.api.call("revoke_root_key", { path: { id } });
  }
}

/** The settings of the calling key's environment, e.g. `enhanced_security`. */
export class Environment extends Resource {
  get(): Promise<T.EnvironmentSettings> {
    return this.api.call("get_environment");
  }
  update(body: T.UpdateEnvironmentRequest): Promise<T.EnvironmentSettings> {
    return this.api.call("update_environment", { body });
  }
}

/** Who changed what, when, with which request id; newest first. */
export class AuditLog extends Resource {
  list(query?: QueryOf<"list_audit_log">): PageRequest<T.AuditEntry> {
    return this.api.list("list_audit_log", { query });
  }
}

/** Verification counts over time, split by outcome. */
export class Usage extends Resource {
  get(query?: QueryOf<"usage">): Promise<T.UsageReport> {
    return this.api.call("usage", { query });
  }
  /** The same counts per key. */
  byKey(query?: QueryOf<"usage_by_key">): Promise<T.KeyUsageReport> {
    return this.api.call("usage_by_key", { query });
  }
}

/**
 * The end user's own keys (SPEC §4.1b), for a client built with a public key and the user's
 * token: only keys whose `owner_user_id` is the user's subject are ever seen.
 */
export class MyKeys extends Resource {
  list(query?: QueryOf<"list_my_keys">): PageRequest<T.ApiKey> {
    return this.api.list("list_my_keys", { query });
  }
  create(body: T.CreateMyKeyRequest): Promise<T.ApiKeyWithSecret> {
    return this.api.call("create_my_key", { body });
  }
  rotate(id: string, body: T.RotateKeyRequest = {}): Promise<T.ApiKeyWithSecret> {
    return this.api.call("rotate_my_key", { path: { id }, body });
  }
  revoke(id: string): Promise<T.ApiKey> {
    return this.api.call("revoke_my_key", { path: { id } });
  }
  get(id: string): Promise<T.ApiKey> {
    return this.api.call("get_my_key", { path: { id } });
  }
  /** One of the end user's keys: its verification counts over time, by outcome. */
  usage(id: string, query?: QueryOf<"my_key_usage">): Promise<T.UsageReport> {
    return this.api.call("my_key_usage", { path: { id }, query });
  }
}

/** Demo sandboxes: an isolated environment and a root key, no credential needed. */
export class Demo extends Resource {
  createSession(): Promise<T.DemoSession> {
    return this.api.call("create_session");
  }
  /** Revokes the sandbox's key and purges the sandbox; the client's `apiKey` must be its `sk_demo_…`. */
  deleteSession(): Promise<void> {
    return this.api.call("delete_session");
  }
}

/**
 * Webhook endpoints (SPEC §4.8): events and alerts pushed to your backend, signed per the
 * Standard Webhooks specification with the endpoint's `whsec_…` secret.
 */
export class Webhooks extends Resource {
  /** Adds an endpoint; the answer holds its signing `secret`, this once. */
  create(body: T.CreateWebhookEndpointRequest): Promise<T.WebhookEndpointWithSecret> {
    return this.api.call("create_endpoint", { body });
  }
  /** The environment's endpoints, newest first; never their secrets. */
  list(query?: QueryOf<"list_endpoints">): PageRequest<T.WebhookEndpoint> {
    return this.api.list("list_endpoints", { query });
  }
  get(id: string): Promise<T.WebhookEndpoint> {
    return this.api.call("get_endpoint", { path: { id } });
  }
  /** Changes an endpoint; turning it back on (`enabled: true`) resumes its pending deliveries. */
  update(id: string, body: T.UpdateWebhookEndpointRequest): Promise<T.WebhookEndpoint> {
    return this.api.call("update_endpoint", { path: { id }, body });
  }
  /** Deletes the endpoint with its pending deliveries and its log. */
  delete(id: string): Promise<void> {
    return this.api.call("delete_endpoint", { path: { id } });
  }
  /**
   * A new signing secret, in this answer only. The previous one keeps signing beside it for
   * 24 hours (each delivery then carries both signatures), so receivers can switch.
   */
  rotateSecret(id: string): Promise<T.WebhookEndpointWithSecret> {
    return this.api.call("rotate_secret", { path: { id } });
  }
  /** The endpoint's deliveries, newest first, each with its attempts. */
  deliveries(id: string, query?: QueryOf<"list_deliveries">): PageRequest<T.WebhookDelivery> {
    return this.api.list("list_deliveries", { path: { id }, query });
  }
  /** Sends a delivery again now, with the same `webhook-id`; answers the delivery queued. */
  retryDelivery(id: string, deliveryId: string): Promise<T.WebhookDeliveryQueued> {
    return this.api.call("retry_delivery", { path: { id, delivery_id: deliveryId } });
  }
  /** Queues a `webhook.test` event to this endpoint only, whatever its `events`. */
  test(id: string): Promise<T.WebhookDeliveryQueued> {
    return this.api.call("test_endpoint", { path: { id } });
  }
}

/**
 * Secret scanning (SPEC §4.9). GitHub's partner endpoint (`POST
 * /api/v1/secret-scanning/github`) is called by GitHub, not through this SDK.
 */
export class SecretScanning extends Resource {
  /** The formats scanners should match: a regular expression per key prefix. */
  patterns(): Promise<T.SecretScanningPatterns> {
    return this.api.call("patterns");
  }
}

/**
 * The customer portal (SPEC §4.10): a single-use link, valid for minutes, for one customer
 * to manage their keys of one app on Keyward's own page.
 *
 * ```ts
 * const { url } = await keyward.portal.createSession({ owner_user_id: user.id, app: "reports",
 *   return_url: "https://app.example.com/settings" });
 * return Response.redirect(url, 303);
 * ```
 */
export class Portal extends Resource {
  createSession(body: T.CreatePortalSessionRequest): Promise<T.PortalSessionLink> {
    return this.api.call("create_portal_session", { body });
  }
}

/**
 * A client of one Keyward server.
 *
 * ```ts
 * const keyward = new KeywardClient({ apiKey: process.env.KEYWARD_ROOT_KEY, baseUrl: "https://keyward.example.com" });
 * const { secret } = await keyward.apiKeys.createApiKey("acme", { name: "Customer 42" });
 * ```
 */
export class KeywardClient {
  readonly apiKeys: ApiKeys;
  readonly apps: Apps;
  readonly keys: Keys;
  readonly gateway: Gateway;
  readonly publicKeys: PublicKeys;
  readonly signingKeys: SigningKeys;
  readonly workspaceKeys: WorkspaceKeys;
  readonly rateLimitSchemes: RateLimitSchemes;
  readonly organizations: Organizations;
  readonly rootKeys: RootKeys;
  readonly environment: Environment;
  readonly auditLog: AuditLog;
  readonly usage: Usage;
  /** The end user's own keys (`/api/v1/me/keys`). */
  readonly me: MyKeys;
  readonly demo: Demo;
  readonly webhooks: Webhooks;
  readonly secretScanning: SecretScanning;
  readonly portal: Portal;

  readonly #api: Api;
  readonly #WebSocket: WebSocketConstructor | undefined;

  constructor(options: KeywardClientOptions = {}) {
    const credentials = new Credentials(options);
    const signer = options.workspaceKey
      ? new WorkspaceKeySigner(options.workspaceKey.key, options.workspaceKey.secret)
      : undefined;
    const globalFetch = globalThis.fetch as FetchFunction | undefined;
    const fetch = options.fetch ?? globalFetch?.bind(globalThis);
    if (!fetch) throw new TypeError("no fetch here: pass one as `fetch`");
    this.#api = new Api(
      new Transport({
        baseUrl: options.baseUrl ?? DEFAULT_BASE_URL,
        credentials,
        signer,
        timeoutMs: options.timeout ?? DEFAULT_TIMEOUT_MS,
        maxRetries: options.maxRetries ?? DEFAULT_MAX_RETRIES,
        fetch,
      }),
    );
    this.#WebSocket = options.WebSocket;
    this.apiKeys = new ApiKeys(this.#api);
    this.apps = new Apps(this.#api);
    this.keys = new Keys(this.#api);
    this.gateway = new Gateway(this.#api);
    this.publicKeys = new PublicKeys(this.#api);
    this.signingKeys = new SigningKeys(this.#api);
    this.workspaceKeys = new WorkspaceKeys(this.#api);
    this.rateLimitSchemes = new RateLimitSchemes(this.#api);
    this.organizations = new Organizations(this.#api);
    this.rootKeys = new RootKeys(this.#api);
    this.environment = new Environment(this.#api);
    this.auditLog = new AuditLog(this.#api);
    this.usage = new Usage(this.#api);
    this.me = new MyKeys(this.#api);
    this.demo = new Demo(this.#api);
    this.webhooks = new Webhooks(this.#api);
    this.secretScanning = new SecretScanning(this.#api);
    this.portal = new Portal(this.#api);
  }

  /** The server's address, as the client uses it. */
  get baseUrl(): string {
    return this.#api.transport.baseUrl;
  }

  /** `GET /healthz`: whether the process is up. Needs no credential. */
  health(): Promise<T.Health> {
    return this.#api.call("healthz");
  }

  /** `GET /readyz`: whether the server reaches its storage (an HttpError 503 when not). */
  ready(): Promise<T.Health> {
    return this.#api.call("readyz");
  }

  /**
   * Acts for an end user of a client public key (`pk_live_…`) with the signed user token
   * your backend made for them (SPEC §4.4). When the server says the token expired (a 401
   * `token_expired`, or the socket's `token_expired`), `refreshUserToken(oldToken, payload)`
   * is called once and the request (or connection) is made again with its answer.
   * It replaces `jwt` and `getJwt`.
   */
  identify(userId: string, userToken: string, options: { refreshUserToken?: RefreshUserToken } = {}): this {
    this.#api.transport.credentials.identify(userId, userToken, options.refreshUserToken);
    return this;
  }

  /** The user set by {@link identify}. */
  get userId(): string | undefined {
    return this.#api.transport.credentials.userId;
  }

  /** A socket of key events with this client's credentials (`getJwt` and `identify` included). */
  events(options: Omit<SocketOptions, keyof CredentialOptions | "baseUrl"> = {}): KeywardWebSocket {
    return new KeywardWebSocket(this.#socketOptions(options), this.#socketSource());
  }

  /** A socket of alerts with this client's credentials. */
  alerts(options: Omit<SocketOptions, keyof CredentialOptions | "baseUrl"> = {}): KeywardAlertsWebSocket {
    return new KeywardAlertsWebSocket(this.#socketOptions(options), this.#socketSource());
  }

  #socketOptions(options: SocketOptions): SocketOptions {
    return { WebSocket: this.#WebSocket, ...options };
  }

  #socketSource(): { baseUrl: string; credentials: Credentials } {
    return { baseUrl: this.#api.transport.baseUrl, credentials: this.#api.transport.credentials };
  }

  toJSON(): Record<string, unknown> {
    return { baseUrl: this.baseUrl };
  }

  /** What `console.log(client)` shows in Node: where it points, never what it carries. */
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return `KeywardClient { baseUrl: '${this.baseUrl}' }`;
  }
}
