//! Limits on calls to Keyward's own API: a root or workspace key's scheme on its meter (its
//! own, or that of the limited key that made it), and in a demo sandbox one budget for the
//! whole sandbox. The count goes on the answer's headers (`rate_limit.rs`), refused or not.

use keyward_core::model::Tenancy;
use keyward_core::usage::{Decision, Outcome, RateWindow};
use keyward_core::{Environment, Timestamp};

use super::Verification;
use crate::usage::{ChargeRequest, UsageError};

/// A counted call: the windows it was counted against and what they said.
#[derive(Debug, Clone)]
pub struct CallReport {
    pub windows: Vec<RateWindow>,
    pub decision: Decision,
    pub now: Timestamp,
}

impl CallReport {
    pub fn is_refused(&self) -> bool {
        !matches!(self.decision.outcome, Outcome::Allowed)
    }
}

impl Verification {
    /// Counts a management credential's call: by its scheme on its meter or, in a demo
    /// sandbox, by the demo limits on one meter for the whole sandbox, so that no credential
    /// a sandbox makes has a budget of its own. `None` when nothing limits it.
    pub async fn limit_api_calls(
        &self,
        tenancy: &Tenancy,
        meter: &str,
        windows: &[RateWindow],
        now: Timestamp,
    ) -> Result<Option<CallReport>, UsageError> {
        if tenancy.environment == Environment::Demo {
            let sandbox = format!("demo:{}", tenancy.workspace_id);
            let windows = self.sandboxes.api_windows.clone();
            return self.limit_calls(&sandbox, &windows, now).await;
        }
        self.limit_calls(meter, windows, now).await
    }

    /// Counts one call against `windows` on `meter`. `None` when there are no windows.
    pub async fn limit_calls(
        &self,
        meter: &str,
        windows: &[RateWindow],
        now: Timestamp,
    ) -> Result<Option<CallReport>, UsageError> {
        if windows.is_empty() {
            return Ok(None);
        }
        let decision = self
            .limiter
            .charge(&ChargeRequest {
                meter,
                windows,
                credits: None,
                credits_generation: 0,
                organization: None,
                cost: 0,
                idempotency_key: None,
                now,
            })
            .await?;
        Ok(Some(CallReport {
            windows: windows.to_vec(),
            decision,
            now,
        }))
    }
}
