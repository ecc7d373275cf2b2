//! The bodies of Keyward's fuzz targets (`fuzz/`), one function per parser an attacker can
//! reach: each takes arbitrary bytes, must never panic, and checks what must hold of any
//! input the parser accepts.
//!
//! They live in a workspace crate, not in `fuzz/`, so that `cargo test` replays every saved
//! input (the corpora and the regressions) on the stable toolchain; coverage-guided runs need
//! cargo-fuzz and a nightly toolchain (docs/fuzzing.md).

use keyward_core::credential::{self, Presented};
use keyward_core::permission::PermissionQuery;
use keyward_core::secret::{KeyHash, ParsedKey, START_RANDOM_LEN};
use keyward_core::signature::SignatureHeader;
use keyward_core::token::{self, JwtAlgorithm, UserTokenClaims};
use keyward_core::Timestamp;

/// A fuzz target: arbitrary bytes in, a panic on any failed expectation.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, as `fuzz/fuzz_targets/` and the corpus folders name them.
pub const TARGETS: [(&str, Target); 6] = [
    ("key_format", key_format),
    ("credential_headers", credential_headers),
    ("signature_header", signature_header),
    ("jwt_preparse", jwt_preparse),
    ("permission_query", permission_query),
    ("management_json", management_json),
];

/// A key's format and checksum (`ParsedKey::parse`). An accepted key's parts are slices of it,
/// its display form never shows more than [`START_RANDOM_LEN`] random characters, and its
/// hash is the hash of the whole text.
pub fn key_format(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(key) = ParsedKey::parse(text) else {
        return;
    };
    assert!(text.starts_with(key.prefix()));
    let start = key.start();
    assert!(text.starts_with(&start));
    let shown_random = start.len() - key.prefix().len() - key.environment().as_str().len() - 2;
    assert_eq!(shown_random, START_RANDOM_LEN);
    assert_eq!(key.hash(), KeyHash::of(text));
    assert_eq!(key.is_root_key(), key.prefix() == "sk");
}

/// The credential a request carries: the `Authorization` and `X-API-Key` headers, and a
/// WebSocket URL's query (`api-key`, `token`). Inputs are split at the first two newlines
/// into the two header values and the query.
pub fn credential_headers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let authorization = parts.next().filter(|value| !value.is_empty());
    let x_api_key = parts.next().filter(|value| !value.is_empty());
    if let Ok(presented) = credential::from_headers(authorization, x_api_key) {
        check_presented(&presented, text);
    }
    let query = parts.next().unwrap_or("");
    if let Ok(params) = serde_urlencoded::from_str::<keyward_proto::SocketParams>(query) {
        if let Ok(presented) =
            credential::from_url_parameters(params.api_key.as_deref(), params.token.as_deref())
        {
            assert!(!matches!(presented, Presented::WorkspaceSignature(_)));
        }
    }
}

/// What was found is always part of what was sent, and never empty.
fn check_presented(presented: &Presented<'_>, sent: &str) {
    match presented {
        Presented::Secret(secret) => {
            assert!(!secret.is_empty() && sent.contains(secret));
        }
        Presented::JwtPublicKey { key, token } | Presented::ClientPublicKey { key, token } => {
            assert!(!key.is_empty() && sent.contains(key));
            if let Some(token) = token {
                assert!(!token.is_empty() && sent.contains(token));
            }
        }
        Presented::WorkspaceSignature(header) => {
            assert!(!header.key.is_empty() && sent.contains(header.key));
        }
    }
}

/// The `KW-HMAC-SHA256` parameters (`key=…, ts=…, sig=…`). An accepted header's key is
/// printable and bounded, and its freshness check cannot overflow.
pub fn signature_header(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(header) = SignatureHeader::parse(text) {
        assert!(!header.key.is_empty());
        assert!(header.key.bytes().all(|byte| byte.is_ascii_graphic()));
        for now in [0, 1_764_000_000_000, i64::MAX] {
            let _ = header.is_fresh(Timestamp::from_millis(now));
        }
    }
}

/// A JWT's header, read before any signature check (`peek_header`), and a signed user
/// token's claims. Inputs up to the first newline are the token; the rest, the claims' JSON.
pub fn jwt_preparse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (jwt, claims) = text.split_once('\n').unwrap_or((text, ""));
    let every = JwtAlgorithm::EVERY;
    if let Ok(header) = token::peek_header(jwt, &every) {
        assert!(every.contains(&header.algorithm));
        // An algorithm the key does not allow is refused, whatever the token says.
        let others: Vec<_> = every
            .iter()
            .copied()
            .filter(|algorithm| *algorithm != header.algorithm)
            .collect();
        assert!(token::peek_header(jwt, &others).is_err());
    }
    if let Ok(claims) = serde_json::from_str::<UserTokenClaims>(claims) {
        for now in [0, 1_764_000_000_000, i64::MAX] {
            let _ = claims.clone().subscriber(Timestamp::from_millis(now));
        }
    }
}

/// A permission expression (`read AND (write OR admin)`). Expressions of `AND` and `OR`
/// are monotone: holding every name an accepted one mentions satisfies it, and holding
/// none fails it.
pub fn permission_query(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(query) = PermissionQuery::parse(text) else {
        return;
    };
    let names: Vec<String> = text
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter(|word| {
            !word.is_empty()
                && !word.eq_ignore_ascii_case("and")
                && !word.eq_ignore_ascii_case("or")
        })
        .map(str::to_owned)
        .collect();
    assert!(query.is_satisfied_by(&names), "{text:?} with {names:?}");
    assert!(!query.is_satisfied_by(&[]), "{text:?} with nothing");
}

/// The JSON bodies of the management API, read as the server reads them (unknown fields
/// refused), then through the same validation. The first byte picks the request type.
pub fn management_json(data: &[u8]) {
    use keyward_core::validate;
    use keyward_proto as wire;

    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 8 {
        0 => {
            if let Ok(request) = serde_json::from_slice::<wire::CreateAppRequest>(body) {
                let _ = validate::text("name", &request.name, 200);
                let _ = validate::slug(&request.slug);
                let _ = validate::permissions(&request.permissions);
            }
        }
        1 => {
            if let Ok(request) = serde_json::from_slice::<wire::CreateKeyRequest>(body) {
                let _ = validate::text("name", &request.name, 200);
                if let Some(permissions) = &request.permissions {
                    let _ = validate::permissions(permissions);
                }
            }
        }
        2 => drop(serde_json::from_slice::<wire::UpdateKeyRequest>(body)),
        3 => drop(serde_json::from_slice::<wire::UpdateAppRequest>(body)),
        4 => {
            if let Ok(request) = serde_json::from_slice::<wire::CreateRateLimitSchemeRequest>(body)
            {
                let _ = validate::scheme_slug(&request.slug);
                let pairs: Vec<(u64, u64)> = request
                    .windows
                    .iter()
                    .map(|window| (window.limit, window.period_seconds))
                    .collect();
                let _ = validate::rate_windows(&pairs);
            }
        }
        5 => drop(serde_json::from_slice::<wire::PutOrganizationRequest>(body)),
        6 => drop(serde_json::from_slice::<wire::CreatePublicKeyRequest>(body)),
        _ => drop(serde_json::from_slice::<wire::VerifyKeyRequest>(body)),
    }
}
