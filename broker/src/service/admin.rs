//! The admin API behind `unbaked secret put|get|list|rm`: root and the
//! broker's own uid only.
//!
//! **Invariant:** a change (put, rm) is audited before the store is
//! touched (`admin_request`), so with a failing audit sink nothing is
//! written and the caller gets the audit error; its outcome
//! (`secret_write` with the version, `secret_delete`) follows. A read is
//! audited before the value is released.

use super::{Broker, Ctx, ServiceError};
use crate::audit::{Event, Record};
use crate::names::bounded_name;
use crate::request::Refusal;
use crate::rules::DenyRule;
use unbaked_api::wire::{PutSecret, SecretData, SecretList, SecretMeta};

/// Longest store path or prefix the admin API takes.
const MAX_PATH_BYTES: usize = 1024;
/// Longest key name.
const MAX_KEY_BYTES: usize = 128;

impl Broker {
    fn require_admin(&self, ctx: &Ctx, what: &str) -> Result<(), ServiceError> {
        if self.is_admin(&ctx.caller) {
            return Ok(());
        }
        let reason = format!(
            "{what} is for root and the broker's uid {}; the caller is uid {}: run it as one of those",
            self.admin_uid, ctx.caller.uid
        );
        Err(self.deny(ctx, "", Refusal::new(DenyRule::Admin, reason)))
    }

    pub async fn put_secret(
        &self,
        ctx: &Ctx,
        path: &str,
        body: PutSecret,
    ) -> Result<SecretMeta, ServiceError> {
        self.require_admin(ctx, "writing secrets")?;
        check_store_path(path)?;
        if body.data.is_empty() {
            return Err(ServiceError::BadRequest(format!(
                "no keys given for {path}: give at least one KEY=VALUE"
            )));
        }
        if let Some(bad) = body.data.keys().find(|k| !valid_key(k)) {
            return Err(ServiceError::BadRequest(format!(
                "key {} of {path} is not valid: use up to {MAX_KEY_BYTES} letters, digits, '_', '-' and '.'",
                bounded_name(bad)
            )));
        }
        let keys = body.data.keys().cloned().collect::<Vec<_>>().join(",");
        // Audit first: a sink that fails refuses the write.
        self.audit_or_withhold(
            Event::AdminRequest,
            Record {
                path: Some(path.into()),
                reason: Some(format!("write keys {keys}")),
                ..ctx.record()
            },
        )?;
        let keys: Vec<String> = body.data.keys().cloned().collect();
        let version = self.store.write(path, body.data).await.inspect_err(|e| {
            self.audit_outcome(ctx, Event::SecretWrite, path, format!("failed: {e}"));
        })?;
        let outcome = format!("version {version}, keys {}", keys.join(","));
        self.audit_outcome(ctx, Event::SecretWrite, path, outcome);
        Ok(SecretMeta {
            path: path.into(),
            version,
            keys,
        })
    }

    /// The outcome of an audited admin request: best effort, as the change
    /// is made (its `admin_request` record is already written).
    fn audit_outcome(&self, ctx: &Ctx, event: Event, path: &str, reason: String) {
        let record = Record {
            path: Some(path.into()),
            reason: Some(reason),
            ..ctx.record()
        };
        if let Err(e) = self.audit.record(event, record) {
            tracing::error!(error = %e, path, "could not audit the outcome of an admin request");
        }
    }

    pub async fn get_secret(&self, ctx: &Ctx, path: &str) -> Result<SecretData, ServiceError> {
        self.require_admin(ctx, "reading secrets")?;
        check_store_path(path)?;
        let data = self
            .store
            .read_all(path)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no secret at {path}")))?;
        self.audit_or_withhold(
            Event::SecretRead,
            Record {
                path: Some(path.into()),
                ..ctx.record()
            },
        )?;
        Ok(SecretData {
            path: path.into(),
            version: data.version,
            data: data.data,
        })
    }

    pub async fn delete_secret(&self, ctx: &Ctx, path: &str) -> Result<(), ServiceError> {
        self.require_admin(ctx, "deleting secrets")?;
        check_store_path(path)?;
        // Audit first: a sink that fails refuses the deletion.
        self.audit_or_withhold(
            Event::AdminRequest,
            Record {
                path: Some(path.into()),
                reason: Some("delete".into()),
                ..ctx.record()
            },
        )?;
        let deleted = self.store.delete(path).await.inspect_err(|e| {
            self.audit_outcome(ctx, Event::SecretDelete, path, format!("failed: {e}"));
        })?;
        if !deleted {
            let missing = format!("no secret at {path}");
            self.audit_outcome(ctx, Event::SecretDelete, path, missing.clone());
            return Err(ServiceError::NotFound(missing));
        }
        let record = Record {
            path: Some(path.into()),
            ..ctx.record()
        };
        if let Err(e) = self.audit.record(Event::SecretDelete, record) {
            tracing::error!(error = %e, "could not audit a secret deletion");
        }
        Ok(())
    }

    pub async fn list_secrets(&self, ctx: &Ctx, prefix: &str) -> Result<SecretList, ServiceError> {
        self.require_admin(ctx, "listing secrets")?;
        if prefix.len() > MAX_PATH_BYTES {
            return Err(ServiceError::BadRequest(format!(
                "prefix {} is longer than {MAX_PATH_BYTES} bytes",
                bounded_name(prefix)
            )));
        }
        let paths = self.store.list(prefix).await?;
        Ok(SecretList { paths })
    }
}

/// A store path by the policy crate's rules, its length bounded first (the
/// validator's message quotes it).
fn check_store_path(path: &str) -> Result<(), ServiceError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(ServiceError::BadRequest(format!(
            "secret path {} is longer than {MAX_PATH_BYTES} bytes",
            bounded_name(path)
        )));
    }
    unbaked_policy::check_secret_path(path)
        .map_err(|why| ServiceError::BadRequest(format!("secret path {path:?}: {why}")))
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_KEY_BYTES
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}
