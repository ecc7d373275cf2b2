//! Issues a key to a customer, verifies it, rotates it with a grace period, then revokes it.
//!
//! ```sh
//! KEYWARD_URL=http://127.0.0.1:8080 KEYWARD_API_KEY=sk_live_… \
//!     cargo run -p keyward-sdk --example issue_and_rotate
//! ```

use keyward_sdk::proto::{CreateAppRequest, CreateKeyRequest, RotateKeyRequest, VerifyKeyRequest};
use keyward_sdk::{Client, Error};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keyward = Client::from_env()?;
    let app = CreateAppRequest {
        name: "Example API".into(),
        slug: "example-api".into(),
        permissions: vec!["read".into(), "write".into()],
        ..Default::default()
    };
    match keyward.create_app(&app).await {
        Ok(_) => {}
        // Run twice, the app is already there.
        Err(Error::Http { status: 409, .. }) => {}
        Err(error) => return Err(error.into()),
    }
    let issued = keyward
        .create_key(
            "example-api",
            &CreateKeyRequest {
                name: "Customer 42".into(),
                owner_user_id: Some("usr_42".into()),
                permissions: Some(vec!["read".into()]),
                ..Default::default()
            },
        )
        .await?;
    // The only time the secret is shown: hand it to the customer now.
    println!("issued {} (secret shown once)", issued.key.id);
    let verify = |key: String| VerifyKeyRequest {
        key,
        ..Default::default()
    };
    let verdict = keyward.verify_key(&verify(issued.secret.clone())).await?;
    println!("verify: {} {}", verdict.code, verdict.valid);

    // Rolling rotation: the old secret keeps working for an hour.
    let rotated = keyward
        .rotate_key(
            &issued.key.id,
            &RotateKeyRequest {
                expire_previous_in_seconds: Some(3600),
            },
        )
        .await?;
    let old = keyward.verify_key(&verify(issued.secret)).await?;
    let new = keyward.verify_key(&verify(rotated.secret)).await?;
    println!("after rotation: old {} · new {}", old.code, new.code);

    let revoked = keyward.revoke_key(&issued.key.id).await?;
    println!("revoked: status {}", revoked.status);
    Ok(())
}
