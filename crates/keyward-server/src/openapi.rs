//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use keyward_proto::{ClientMessage, Event, EventKey, ServerMessage, Session};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

pub(crate) fn finish(mut openapi: OpenApi) -> OpenApi {
    openapi.info = InfoBuilder::new()
        .title("Keyward")
        .version("1.0")
        .description(Some(
            "API keys and request authentication. Every error has the envelope \
             `{\"error\": {type, code, message, request_id}}`.",
        ))
        .build();
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "root_key",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    // A public key in `X-API-Key`, with the end user's token as `Authorization: Bearer`.
    components.add_security_scheme(
        "public_key",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-API-Key",
            "A pk_jwt_… or pk_live_… key; the end user's token goes in Authorization: Bearer",
        ))),
    );
    // No route takes or answers the socket's messages over HTTP, so nothing would list them;
    // SDKs generate their socket types from these.
    let mut socket_schemas: Vec<(String, RefOr<Schema>)> = vec![
        (ServerMessage::name().into_owned(), ServerMessage::schema()),
        (ClientMessage::name().into_owned(), ClientMessage::schema()),
        (Session::name().into_owned(), Session::schema()),
        (Event::name().into_owned(), Event::schema()),
        (EventKey::name().into_owned(), EventKey::schema()),
    ];
    ServerMessage::schemas(&mut socket_schemas);
    ClientMessage::schemas(&mut socket_schemas);
    components.schemas.extend(socket_schemas);
    openapi
}
