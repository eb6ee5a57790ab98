//! Kubernetes pods, by their projected service-account token: a JWT whose
//! signature, issuer, audience and expiry are checked against a configured
//! JWKS before its `kubernetes.io` claims name the caller.
//!
//! **Invariant:** the token is a bearer credential: it never reaches a log
//! line or an error message (errors name what failed, not the token).
//! **Invariant:** each key's algorithm comes from the key, never from the
//! token's header, so a token cannot pick a weaker check (`alg` confusion).

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 5;

/// The identity a verified token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
    /// The pod the token was bound to, when the token is pod-bound.
    pub pod: Option<String>,
    /// That pod's uid: a caller in another pod is refused ([`check_pod_binding`]).
    pub pod_uid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the service-account token is not a well-formed JWT")]
    Malformed,
    #[error("the token was signed by key {0:?}, which the configured JWKS does not hold: check [kubernetes] jwks against the cluster's service-account issuer keys")]
    UnknownKey(String),
    #[error("the token's signature does not verify against the configured JWKS")]
    BadSignature,
    #[error("the token has expired (or is not valid yet): the pod's projected token should be refreshed by the kubelet; check the clocks")]
    Expired,
    #[error("the token's issuer is not the configured one ({expected})")]
    WrongIssuer { expected: String },
    #[error("the token is not meant for unbaked: its audience does not include {expected:?}; set `audience: {expected}` on the projected volume")]
    WrongAudience { expected: String },
    #[error("the token carries no kubernetes.io service-account claims")]
    NotServiceAccount,
    #[error("the JWKS is not usable: {0}")]
    Jwks(String),
}

#[derive(Deserialize)]
struct Claims {
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<K8sClaims>,
}

#[derive(Deserialize)]
struct K8sClaims {
    namespace: String,
    serviceaccount: Named,
    pod: Option<Pod>,
}

#[derive(Deserialize)]
struct Pod {
    name: String,
    uid: Option<String>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

struct Key {
    kid: Option<String>,
    key: DecodingKey,
    alg: Algorithm,
}

pub struct TokenVerifier {
    keys: Vec<Key>,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("keys", &self.keys.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

fn algorithm(params: &AlgorithmParameters) -> Result<Algorithm, TokenError> {
    match params {
        AlgorithmParameters::RSA(_) => Ok(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Ok(Algorithm::ES256),
            EllipticCurve::P384 => Ok(Algorithm::ES384),
            _ => Err(TokenError::Jwks(
                "only P-256 and P-384 curves are supported".into(),
            )),
        },
        AlgorithmParameters::OctetKeyPair(_) => Ok(Algorithm::EdDSA),
        AlgorithmParameters::OctetKey(_) => Err(TokenError::Jwks(
            "symmetric (oct) keys are refused: a service-account issuer publishes public keys"
                .into(),
        )),
    }
}

/// Build the verifier `[kubernetes]` describes, reading or fetching the JWKS.
pub async fn load(cfg: &crate::config::KubernetesConfig) -> Result<TokenVerifier, String> {
    let jwks = match (&cfg.jwks_file, &cfg.jwks_url) {
        (Some(path), None) => std::fs::read(path)
            .map_err(|e| format!("cannot read [kubernetes] jwks_file {}: {e}", path.display()))?,
        (None, Some(url)) => fetch_jwks(url, cfg.jwks_ca_cert.as_deref())
            .await
            .map_err(|e| format!("cannot fetch [kubernetes] jwks_url {url}: {e}"))?,
        _ => return Err("[kubernetes] needs exactly one of jwks_file and jwks_url".into()),
    };
    TokenVerifier::from_jwks(&jwks, &cfg.issuer, &cfg.audience).map_err(|e| e.to_string())
}

async fn fetch_jwks(url: &str, ca: Option<&std::path::Path>) -> Result<Vec<u8>, String> {
    // rustls is built without a default provider: ring is the one we link.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).map_err(|e| format!("jwks_ca_cert {}: {e}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| e.to_string())?;
        builder = builder.add_root_certificate(cert);
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    let res = client
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| e.to_string())?;
    Ok(res.bytes().await.map_err(|e| e.to_string())?.to_vec())
}

impl TokenVerifier {
    /// Keys from a JWKS document (the cluster's `/openid/v1/jwks`).
    pub fn from_jwks(
        jwks: &[u8],
        issuer: &str,
        audience: &str,
    ) -> Result<TokenVerifier, TokenError> {
        let set: JwkSet =
            serde_json::from_slice(jwks).map_err(|e| TokenError::Jwks(e.to_string()))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let alg = algorithm(&jwk.algorithm)?;
            let key = DecodingKey::from_jwk(jwk).map_err(|e| TokenError::Jwks(e.to_string()))?;
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                key,
                alg,
            });
        }
        if keys.is_empty() {
            return Err(TokenError::Jwks("it holds no keys".into()));
        }
        Ok(TokenVerifier {
            keys,
            issuer: issuer.into(),
            audience: audience.into(),
        })
    }

    pub fn verify(&self, token: &str) -> Result<ServiceAccount, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        let candidates: Vec<&Key> = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect(),
            None => self.keys.iter().collect(),
        };
        if candidates.is_empty() {
            return Err(TokenError::UnknownKey(header.kid.unwrap_or_default()));
        }
        let mut last = TokenError::BadSignature;
        for key in candidates {
            let mut v = Validation::new(key.alg);
            v.leeway = LEEWAY_SECS;
            v.set_issuer(&[&self.issuer]);
            v.set_audience(&[&self.audience]);
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            match decode::<Claims>(token, &key.key, &v) {
                Ok(data) => {
                    let k8s = data
                        .claims
                        .kubernetes
                        .ok_or(TokenError::NotServiceAccount)?;
                    let (pod, pod_uid) = match k8s.pod {
                        Some(p) => (Some(p.name), p.uid),
                        None => (None, None),
                    };
                    return Ok(ServiceAccount {
                        namespace: k8s.namespace,
                        name: k8s.serviceaccount.name,
                        pod,
                        pod_uid,
                    });
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::ExpiredSignature | K::ImmatureSignature => TokenError::Expired,
                        K::InvalidIssuer => TokenError::WrongIssuer {
                            expected: self.issuer.clone(),
                        },
                        K::InvalidAudience => TokenError::WrongAudience {
                            expected: self.audience.clone(),
                        },
                        K::InvalidSignature | K::InvalidAlgorithm | K::InvalidEcdsaKey => {
                            TokenError::BadSignature
                        }
                        K::MissingRequiredClaim(_) | K::Json(_) => TokenError::NotServiceAccount,
                        _ => TokenError::Malformed,
                    };
                    // Another key with the same kid may still verify it.
                    if last != TokenError::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }
}

/// The uid of the Kubernetes pod a `/proc/<pid>/cgroup` places its process
/// in: `/kubepods/<qos>/pod<uid>/...` (cgroupfs) or
/// `kubepods-<qos>-pod<uid with _>.slice` (systemd); `None` outside a pod.
pub fn pod_uid_from_cgroup(text: &str) -> Option<String> {
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        if !path.contains("kubepods") {
            continue;
        }
        for comp in path.split('/') {
            let comp = comp.strip_suffix(".slice").unwrap_or(comp);
            let tail = match comp.rfind("-pod") {
                Some(i) => &comp[i + 4..],
                None => match comp.strip_prefix("pod") {
                    Some(t) => t,
                    None => continue,
                },
            };
            let uid = tail.replace('_', "-");
            let shaped = uid.len() == 36
                && uid
                    .bytes()
                    .all(|b| b == b'-' || (b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            if shaped {
                return Some(uid);
            }
        }
    }
    None
}

/// The pod the process `pid` runs in, from its cgroup; `None` for a
/// process outside any pod (or gone: the server's liveness check refuses
/// a caller whose process has exited).
pub fn caller_pod(pid: Option<i32>) -> Option<String> {
    let pid = pid.filter(|p| *p > 0)?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    pod_uid_from_cgroup(&text)
}

/// A pod-bound token proves one pod: a caller the kernel places in another
/// pod is presenting a token it copied (a replay), so it is refused. A
/// caller outside any pod (a host process, which could read every pod's
/// token anyway) is judged by the token alone.
pub fn check_pod_binding(sa: &ServiceAccount, caller_pod: Option<&str>) -> Result<(), String> {
    match (sa.pod_uid.as_deref(), caller_pod) {
        (Some(bound), Some(actual)) if bound != actual => Err(format!(
            "the service-account token was issued to pod {} (uid {bound}), but the caller runs in pod uid {actual}: a token proves only its own pod; mount this pod's projected token",
            sa.pod.as_deref().unwrap_or("?")
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    /// A P-256 signing key and its JWK.
    pub(crate) struct TestKey {
        pkcs8: Vec<u8>,
        pub jwk: serde_json::Value,
    }

    impl TestKey {
        pub(crate) fn new(kid: &str) -> TestKey {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .unwrap()
                .as_ref()
                .to_vec();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).unwrap();
            let point = pair.public_key().as_ref(); // 0x04 || X || Y
            let jwk = serde_json::json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            });
            TestKey { pkcs8, jwk }
        }

        pub(crate) fn sign(&self, kid: &str, claims: &serde_json::Value) -> String {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some(kid.into());
            encode(&header, claims, &EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
        }
    }

    pub(crate) fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    pub(crate) fn claims(iss: &str, aud: &str, exp: u64) -> serde_json::Value {
        serde_json::json!({
            "iss": iss, "aud": [aud], "exp": exp, "iat": now(), "nbf": now() - 1,
            "sub": "system:serviceaccount:payments:billing",
            "kubernetes.io": {
                "namespace": "payments",
                "serviceaccount": { "name": "billing", "uid": "1f0c" },
                "pod": { "name": "billing-7d9f", "uid": "aa11" }
            }
        })
    }

    const ISS: &str = "https://kubernetes.default.svc";

    fn verifier(keys: &[&TestKey]) -> TokenVerifier {
        let jwks =
            serde_json::json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
        TokenVerifier::from_jwks(jwks.to_string().as_bytes(), ISS, "unbaked").unwrap()
    }

    #[test]
    fn a_valid_token_names_its_service_account() {
        let key = TestKey::new("k1");
        let v = verifier(&[&key]);
        let sa = v
            .verify(&key.sign("k1", &claims(ISS, "unbaked", now() + 600)))
            .unwrap();
        assert_eq!(
            sa,
            ServiceAccount {
                namespace: "payments".into(),
                name: "billing".into(),
                pod: Some("billing-7d9f".into()),
                pod_uid: Some("aa11".into()),
            }
        );
    }

    const POD: &str = "0b6f4a52-8c3e-4d7a-9f11-2b5c6d7e8f90";

    #[test]
    fn pods_are_read_from_both_cgroup_layouts() {
        let cgroupfs = format!("12:pids:/kubepods/besteffort/pod{POD}/0d10011f164b69fedae04229d2321585aaaabbbbccccddddeeeeffff00001111\n");
        assert_eq!(pod_uid_from_cgroup(&cgroupfs).as_deref(), Some(POD));
        let guaranteed = format!("0::/kubepods/pod{POD}/abc\n");
        assert_eq!(pod_uid_from_cgroup(&guaranteed).as_deref(), Some(POD));
        let systemd = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-abc.scope\n",
            POD.replace('-', "_")
        );
        assert_eq!(pod_uid_from_cgroup(&systemd).as_deref(), Some(POD));
        for outside in [
            "0::/\n",
            "0::/system.slice/docker-abc.scope\n",
            "0::/podman/pod0b6f4a52-8c3e-4d7a-9f11-2b5c6d7e8f90\n",
            "0::/kubepods/besteffort/podnot-a-uid\n",
        ] {
            assert_eq!(pod_uid_from_cgroup(outside), None, "{outside}");
        }
    }

    #[test]
    fn a_token_from_another_pod_is_refused() {
        let sa = ServiceAccount {
            namespace: "payments".into(),
            name: "billing".into(),
            pod: Some("billing-1".into()),
            pod_uid: Some(POD.into()),
        };
        assert!(check_pod_binding(&sa, Some(POD)).is_ok());
        assert!(check_pod_binding(&sa, None).is_ok());
        let other = "11111111-2222-4333-8444-555555555555";
        let e = check_pod_binding(&sa, Some(other)).unwrap_err();
        assert!(e.contains("billing-1") && e.contains(other), "{e}");
        let unbound = ServiceAccount {
            pod_uid: None,
            ..sa
        };
        assert!(check_pod_binding(&unbound, Some(other)).is_ok());
    }

    #[test]
    fn each_bad_token_is_refused_for_its_own_reason() {
        let key = TestKey::new("k1");
        let other = TestKey::new("k1");
        let v = verifier(&[&key]);
        let ok = claims(ISS, "unbaked", now() + 600);
        assert_eq!(
            v.verify(&key.sign("k1", &claims(ISS, "unbaked", now() - 60))),
            Err(TokenError::Expired)
        );
        assert!(matches!(
            v.verify(&key.sign("k1", &claims(ISS, "vault", now() + 600))),
            Err(TokenError::WrongAudience { .. })
        ));
        assert!(matches!(
            v.verify(&key.sign("k1", &claims("https://evil", "unbaked", now() + 600))),
            Err(TokenError::WrongIssuer { .. })
        ));
        assert_eq!(
            v.verify(&other.sign("k1", &ok)),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            v.verify(&key.sign("k9", &ok)),
            Err(TokenError::UnknownKey("k9".into()))
        );
        assert_eq!(v.verify("not.a.jwt"), Err(TokenError::Malformed));
        let mut no_k8s = ok.clone();
        no_k8s.as_object_mut().unwrap().remove("kubernetes.io");
        assert_eq!(
            v.verify(&key.sign("k1", &no_k8s)),
            Err(TokenError::NotServiceAccount)
        );
        // The error text never quotes the token.
        let token = key.sign("k1", &claims(ISS, "vault", now() + 600));
        let msg = v.verify(&token).unwrap_err().to_string();
        assert!(!msg.contains(&token[..20]));
    }

    #[test]
    fn symmetric_keys_and_empty_sets_are_refused() {
        let oct = serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]});
        assert!(TokenVerifier::from_jwks(oct.to_string().as_bytes(), ISS, "unbaked").is_err());
        assert!(TokenVerifier::from_jwks(b"{\"keys\": []}", ISS, "unbaked").is_err());
    }
}
