/**
 * The API's types, all derived from the server's OpenAPI document
 * (`src/generated/openapi.ts`): a field the server renames or retypes breaks this package's
 * type check, and the drift test fails until the file is regenerated.
 */

import type { components, operations, paths } from "./generated/openapi.js";

type Schemas = components["schemas"];

export type ApiKey = Schemas["ApiKey"];
export type ApiKeyWithSecret = Schemas["ApiKeyWithSecret"];
export type App = Schemas["App"];
export type AuditEntry = Schemas["AuditEntry"];
export type CreateAppRequest = Schemas["CreateAppRequest"];
export type CreateKeyRequest = Schemas["CreateKeyRequest"];
export type CreateMyKeyRequest = Schemas["CreateMyKeyRequest"];
export type CreatePublicKeyRequest = Schemas["CreatePublicKeyRequest"];
export type CreateRateLimitSchemeRequest = Schemas["CreateRateLimitSchemeRequest"];
export type CreateRootKeyRequest = Schemas["CreateRootKeyRequest"];
export type CreateSigningKeyRequest = Schemas["CreateSigningKeyRequest"];
export type CreateWebhookEndpointRequest = Schemas["CreateWebhookEndpointRequest"];
export type CreateWorkspaceKeyRequest = Schemas["CreateWorkspaceKeyRequest"];
export type DemoSession = Schemas["DemoSession"];
export type EnvironmentSettings = Schemas["EnvironmentSettings"];
export type Health = Schemas["Health"];
export type ImportKeysRequest = Schemas["ImportKeysRequest"];
export type ImportKeysResponse = Schemas["ImportKeysResponse"];
export type KeyUsageReport = Schemas["KeyUsageReport"];
export type Organization = Schemas["Organization"];
export type PermissionQuery = Schemas["PermissionQuery"];
export type PublicKey = Schemas["PublicKey"];
export type PutOrganizationRequest = Schemas["PutOrganizationRequest"];
export type RateLimitScheme = Schemas["RateLimitScheme"];
export type CreatePortalSessionRequest = Schemas["CreatePortalSessionRequest"];
export type PortalSessionLink = Schemas["PortalSessionLink"];
export type ReportLeakRequest = Schemas["ReportLeakRequest"];
export type ReportLeakResponse = Schemas["ReportLeakResponse"];
export type RootKey = Schemas["RootKey"];
export type RootKeyWithSecret = Schemas["RootKeyWithSecret"];
export type RotateKeyRequest = Schemas["RotateKeyRequest"];
export type SecretScanningPattern = Schemas["SecretScanningPattern"];
export type SecretScanningPatterns = Schemas["SecretScanningPatterns"];
export type SigningKey = Schemas["SigningKey"];
export type SigningKeyWithPrivateKey = Schemas["SigningKeyWithPrivateKey"];
export type UpdateAppRequest = Schemas["UpdateAppRequest"];
export type UpdateEnvironmentRequest = Schemas["UpdateEnvironmentRequest"];
export type UpdateKeyRequest = Schemas["UpdateKeyRequest"];
export type UpdateRateLimitSchemeRequest = Schemas["UpdateRateLimitSchemeRequest"];
export type UpdateWebhookEndpointRequest = Schemas["UpdateWebhookEndpointRequest"];
export type UsageReport = Schemas["UsageReport"];
export type VerifyKeyRequest = Schemas["VerifyKeyRequest"];
export type VerifyKeyResponse = Schemas["VerifyKeyResponse"];
export type VerifyRequestRequest = Schemas["VerifyRequestRequest"];
export type WebhookAttempt = Schemas["WebhookAttempt"];
export type WebhookDelivery = Schemas["WebhookDelivery"];
export type WebhookDeliveryQueued = Schemas["WebhookDeliveryQueued"];
export type WebhookEndpoint = Schemas["WebhookEndpoint"];
export type WebhookEndpointWithSecret = Schemas["WebhookEndpointWithSecret"];
export type WorkspaceKey = Schemas["WorkspaceKey"];
export type WorkspaceKeyWithSecret = Schemas["WorkspaceKeyWithSecret"];

export type OperationId = keyof operations;

type Lower = "get" | "post" | "put" | "patch" | "delete";

/**
 * The `[METHOD, path]` pairs at which the document serves `O`. The SDK's route table is
 * checked against it, so a route the server moves fails the type check.
 */
export type RouteOf<O extends OperationId> = {
  [P in keyof paths]: {
    [M in Lower]: paths[P][M] extends operations[O]
      ? operations[O] extends paths[P][M]
        ? readonly [Uppercase<M>, P]
        : never
      : never;
  }[Lower];
}[keyof paths];

type Parameters<O extends OperationId> = operations[O]["parameters"];

/** The path parameters of `O`, e.g. `{ slug: string }`. */
export type PathOf<O extends OperationId> = Parameters<O> extends { path: infer P } ? P : undefined;
/** The query parameters of `O` (every list's `limit` and `cursor`, its filters). */
export type QueryOf<O extends OperationId> = Parameters<O> extends { query?: infer Q } ? NonNullable<Q> : never;
/** The JSON body `O` takes. */
export type BodyOf<O extends OperationId> = operations[O] extends {
  requestBody?: { content: { "application/json": infer B } };
}
  ? B
  : never;

type Responses<O extends OperationId> = operations[O]["responses"];
type Json<R> = R extends { content: { "application/json": infer T } } ? T : never;

/** What `O` answers on success: the JSON of its 200, 201 or 202 (queued), nothing for a 204. */
export type AnswerOf<O extends OperationId> = Responses<O> extends { 200: infer R }
  ? Json<R>
  : Responses<O> extends { 201: infer R }
    ? Json<R>
    : Responses<O> extends { 202: infer R }
      ? Json<R>
      : Responses<O> extends { 204: unknown }
        ? void
        : never;
