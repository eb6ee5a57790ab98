//! A byte buffer for rendered secrets: zeroized on drop, and on growth the
//! old block is zeroized before it is freed (a plain `Vec` reallocation
//! frees the old block as it was).

use unbaked_api::Secret;
use zeroize::Zeroizing;

#[derive(Default)]
pub struct Buf(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Buf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Buf {
    pub fn new() -> Buf {
        Buf(Zeroizing::new(Vec::with_capacity(256)))
    }

    pub fn push(&mut self, bytes: &[u8]) {
        let need = self.0.len() + bytes.len();
        if need > self.0.capacity() {
            let mut grown = Zeroizing::new(Vec::with_capacity(need.max(self.0.capacity() * 2)));
            grown.extend_from_slice(&self.0);
            // The old block is zeroized as `self.0` is replaced and dropped.
            self.0 = grown;
        }
        self.0.extend_from_slice(bytes);
    }

    pub fn push_str(&mut self, s: &str) {
        self.push(s.as_bytes());
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_secret(self) -> Secret {
        Secret::from(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_keeps_bytes() {
        let mut b = Buf::new();
        for _ in 0..100 {
            b.push(b"0123456789");
        }
        assert_eq!(b.len(), 1000);
        assert!(b.as_bytes().chunks(10).all(|c| c == b"0123456789"));
        assert_eq!(format!("{b:?}"), "[redacted]");
        assert_eq!(b.into_secret().len(), 1000);
    }
}
