//! The one type that holds secret bytes.

use std::fmt;
use zeroize::Zeroizing;

/// Secret bytes: zeroized on drop (capacity included), `Debug` prints
/// `[redacted]`, no `Display`, no `Serialize`. Reach the bytes with
/// [`Secret::expose_secret`] only where they must leave the process.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    pub fn from_slice(bytes: &[u8]) -> Self {
        Secret::new(bytes.to_vec())
    }

    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Zeroizing<Vec<u8>>> for Secret {
    fn from(bytes: Zeroizing<Vec<u8>>) -> Self {
        Secret(bytes)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Serde glue for wire fields that carry a secret as base64. A wire type
/// opts in with `#[serde(with = "unbaked_api::secret::base64")]`.
pub mod base64 {
    use super::Secret;
    use ::base64::engine::general_purpose::STANDARD;
    use ::base64::Engine;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use zeroize::Zeroizing;

    pub fn serialize<S: Serializer>(secret: &Secret, s: S) -> Result<S::Ok, S::Error> {
        let encoded = Zeroizing::new(STANDARD.encode(secret.expose_secret()));
        s.serialize_str(&encoded)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        // Borrowed when the input has no escapes (base64 never does), so no
        // copy outlives the caller's (zeroized) request buffer.
        let encoded: std::borrow::Cow<'de, str> = Deserialize::deserialize(d)?;
        let encoded = Zeroizing::new(encoded.into_owned());
        let mut out = Zeroizing::new(Vec::with_capacity(encoded.len() / 4 * 3 + 3));
        STANDARD
            .decode_vec(encoded.as_bytes(), &mut out)
            .map_err(|_| D::Error::custom("secret value is not valid base64"))?;
        Ok(Secret::from(out))
    }

    /// The same for a map of key to secret.
    pub mod map {
        use super::super::Secret;
        use serde::de::{MapAccess, Visitor};
        use serde::ser::SerializeMap;
        use serde::{Deserializer, Serializer};
        use std::collections::BTreeMap;
        use std::fmt;

        struct Wire<'a>(&'a Secret);
        impl serde::Serialize for Wire<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                super::serialize(self.0, s)
            }
        }
        struct WireOwned(Secret);
        impl<'de> serde::Deserialize<'de> for WireOwned {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                super::deserialize(d).map(WireOwned)
            }
        }

        pub fn serialize<S: Serializer>(
            map: &BTreeMap<String, Secret>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(map.len()))?;
            for (k, v) in map {
                m.serialize_entry(k, &Wire(v))?;
            }
            m.end()
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<BTreeMap<String, Secret>, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = BTreeMap<String, Secret>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a map of key to base64 secret value")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                    let mut out = BTreeMap::new();
                    while let Some((k, WireOwned(v))) = a.next_entry::<String, WireOwned>()? {
                        out.insert(k, v);
                    }
                    Ok(out)
                }
            }
            d.deserialize_map(V)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::from_slice(b"hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
    }

    #[test]
    fn base64_round_trip_through_a_wire_type() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct W {
            #[serde(with = "crate::secret::base64")]
            v: Secret,
        }
        let json = serde_json::to_string(&W {
            v: Secret::from_slice(b"\x00\xffpw"),
        })
        .unwrap();
        assert!(!json.contains("pw"));
        let back: W = serde_json::from_str(&json).unwrap();
        assert_eq!(back.v.expose_secret(), b"\x00\xffpw");
        assert!(serde_json::from_str::<W>(r#"{"v":"!!"}"#).is_err());
    }
}
