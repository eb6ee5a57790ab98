//! Kubernetes service-account tokens for the tests: a P-256 signing key,
//! its JWKS, and tokens with the claims a kubelet's projected token has.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The issuer the tests configure in `[kubernetes]`.
pub const ISS: &str = "https://kubernetes.default.svc.cluster.local";

/// A P-256 key that signs service-account tokens, and its JWKS.
pub struct Issuer {
    pkcs8: Vec<u8>,
    pub jwks: String,
}

impl Issuer {
    /// A fresh key, published in the JWKS under `kid`.
    pub fn new(kid: &str) -> Issuer {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let p = pair.public_key().as_ref();
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65]),
        }]})
        .to_string();
        Issuer {
            pkcs8: pkcs8.as_ref().to_vec(),
            jwks,
        }
    }

    /// A token of service account `sa` (namespace, name) from pod
    /// `billing-1`, signed under `kid`, expiring `exp_in` seconds from now.
    pub fn token(&self, kid: &str, iss: &str, aud: &str, exp_in: i64, sa: (&str, &str)) -> String {
        self.pod_token(kid, iss, aud, exp_in, sa, ("billing-1", "p1"))
    }

    /// [`Issuer::token`], bound to the pod `pod` (name, uid).
    pub fn pod_token(
        &self,
        kid: &str,
        iss: &str,
        aud: &str,
        exp_in: i64,
        sa: (&str, &str),
        pod: (&str, &str),
    ) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let claims = serde_json::json!({
            "iss": iss, "aud": [aud], "exp": now + exp_in, "iat": now - 5, "nbf": now - 5,
            "sub": format!("system:serviceaccount:{}:{}", sa.0, sa.1),
            "kubernetes.io": {"namespace": sa.0, "serviceaccount": {"name": sa.1, "uid": "u1"},
                              "pod": {"name": pod.0, "uid": pod.1}}
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8),
        )
        .unwrap()
    }
}
