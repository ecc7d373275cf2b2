//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi};

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
    openapi
}
