//! Leaked keys (SPEC §4.9): reports from GitHub's secret scanning and from any other scanner,
//! and the patterns scanners match.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One token in GitHub's secret scanning report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GithubTokenReport {
    pub token: String,
    /// The pattern's type as registered with GitHub.
    #[serde(rename = "type")]
    pub token_type: String,
    /// Where GitHub found it.
    #[serde(default)]
    pub url: Option<String>,
    /// e.g. `content`, `commit`, `issue_comment`.
    #[serde(default)]
    pub source: Option<String>,
}

/// Keyward's answer about one reported token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GithubTokenLabel {
    /// Lowercase hex SHA-256 of the token.
    pub token_hash: String,
    pub token_type: String,
    /// `true_positive` (a live key, now handled as the environment says) or `false_positive`.
    pub label: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportLeakRequest {
    /// The secret found (an API key or a root key of the caller's environment).
    pub key: String,
    /// Where it was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Who found it, e.g. `trufflehog`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReportLeakResponse {
    /// `revoked`, `disabled` or `notified` for a live key; `already_revoked` or `unknown`
    /// when nothing changed.
    pub result: String,
    /// The key (or root key) reported, when it is one of this environment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// A format scanners should match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretScanningPattern {
    /// e.g. `Keyward API key`.
    pub name: String,
    /// The key prefix, e.g. `sk` or an app's `acme`.
    pub prefix: String,
    /// A regular expression that matches every key of that prefix and nothing longer.
    pub regex: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretScanningPatterns {
    pub data: Vec<SecretScanningPattern>,
}
