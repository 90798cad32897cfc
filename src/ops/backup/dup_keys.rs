//! A pre-pass over a backup's bytes that refuses an object naming a key
//! twice. serde_json keeps the last of two equal keys without a word, so a
//! file could show one `status` to a reader and restore another.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

/// Walks one JSON value, knowing the path that leads to it.
struct Walk<'p>(&'p str);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        loop {
            let path = format!("{}[{i}]", self.0);
            if seq.next_element_seed(Walk(&path))?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.0.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.0)
            };
            if !seen.insert(key) {
                return Err(A::Error::custom(format!(
                    "{path}: the key is given twice (a backup names each key once)"
                )));
            }
            map.next_value_seed(Walk(&path))?;
        }
        Ok(())
    }
}

/// Refuse the document if any object in it names a key twice; the error
/// names the path to the second one.
pub fn refuse_duplicate_keys(bytes: &[u8]) -> anyhow::Result<()> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    Walk("").deserialize(&mut de)?;
    de.end()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::refuse_duplicate_keys;

    #[test]
    fn a_key_given_twice_is_named_by_its_path() {
        assert!(refuse_duplicate_keys(br#"{"a": [{"b": 1, "c": 2}], "d": {"b": 1}}"#).is_ok());
        let err = refuse_duplicate_keys(br#"{"a": [{"b": 1}, {"b": 1, "c": 2, "b": 3}]}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("a[1].b: the key is given twice"), "{err}");
    }
}
