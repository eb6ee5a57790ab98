//! A fetch writes its authenticate record in one append with the record
//! that follows it (the grant, or a denial): the order and the chain stay
//! what they were with one append per record.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use unbaked_api::wire::{DeliveryKind, ErrorCode, FetchRequest};
use unbaked_api::Secret;
use unbaked_broker::audit::{self, Audit};
use unbaked_broker::service::{Broker, Ctx};
use unbaked_broker::store::memory::MemoryStore;
use unbaked_broker::store::Store;
use unbaked_policy::Caller;

const POLICY: &str = r#"workload = "billing"

[match]
uids = [1000]

[[grant]]
secret = "app/db"
key = "password"
file = "db_password"

[[grant]]
secret = "app/api"
key = "token"
env = "API_TOKEN"
"#;

const VALUE: &[u8] = b"fetch-audit-value-5f1e";

async fn broker(audit: &Path) -> Broker {
    let policies = unbaked_policy::from_sources(&[(PathBuf::from("billing.toml"), POLICY.into())])
        .expect("the test policy is valid");
    let store = Arc::new(MemoryStore::new().unwrap());
    store
        .write(
            "app/db",
            [("password".to_string(), Secret::from_slice(VALUE))].into(),
        )
        .await
        .unwrap();
    Broker::new(policies, store, Audit::open(audit).unwrap(), 0)
}

fn ctx(uid: u32) -> Ctx {
    Ctx {
        caller: Caller {
            uid,
            gid: 1000,
            pid: Some(4242),
            container: None,
            service_account: None,
        },
        request_id: format!("r{uid}"),
        attestation: Default::default(),
    }
}

fn fetch(kinds: Vec<DeliveryKind>) -> FetchRequest {
    FetchRequest {
        workload: "billing".into(),
        kinds,
    }
}

/// (event, request id) of every line, in file order.
fn events(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["event"].as_str().unwrap().to_string(),
                v["request_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn authenticate_then_grant_or_deny_in_order_and_the_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let b = broker(&path).await;

    let lease = b.fetch(&ctx(1000), fetch(vec![DeliveryKind::File])).await;
    assert_eq!(lease.unwrap().items[0].value.expose_secret(), VALUE);
    // app/api is not in the store: the env grant is a denial, after the
    // authentication it follows.
    let missing = b.fetch(&ctx(1000), fetch(vec![DeliveryKind::Env])).await;
    assert_eq!(missing.unwrap_err().code(), ErrorCode::NotFound);
    // Refused by [match]: a denial, and no authentication.
    let denied = b.fetch(&ctx(2000), fetch(vec![])).await;
    assert_eq!(denied.unwrap_err().code(), ErrorCode::Denied);

    let r = |e: &str| (e.to_string(), "r1000".to_string());
    assert_eq!(
        events(&path),
        [
            r("authenticate"),
            r("grant"),
            r("authenticate"),
            r("deny"),
            ("deny".to_string(), "r2000".to_string()),
        ]
    );
    assert_eq!(audit::verify(&path).unwrap().records, 5);
    let text = std::fs::read(&path).unwrap();
    assert!(!text.windows(VALUE.len()).any(|w| w == VALUE));
}
