//! Shared immutable strings for the registry's stacks, and the interner that shares them.
//!
//! A registry of 100,000 stacks holds the same few thousand values many times over: spaces,
//! integration names and incarnation ids, repositories (ten stacks each), branches, project roots
//! and label sets. [`Text`] is a reference-counted `str` that reads like one (it derefs to `str`,
//! compares with `str` and `String`, and serializes as a JSON string), and [`Interner`] hands out one
//! allocation per distinct value. Stacks built by the fold or loaded from a snapshot go through
//! the registry's interner, so equal values share memory; a `Text` made elsewhere is simply unshared.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An immutable string, cheap to clone; equal values from the registry share one allocation.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text(Arc<str>);

impl Text {
    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
impl Text {
    /// Whether both are one allocation (what the interner is for).
    pub(crate) fn same_allocation(&self, other: &Text) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Default for Text {
    fn default() -> Self {
        Text::from("")
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Text {
    fn from(value: &str) -> Self {
        Text(Arc::from(value))
    }
}

impl From<String> for Text {
    fn from(value: String) -> Self {
        Text(Arc::from(value))
    }
}

impl From<&String> for Text {
    fn from(value: &String) -> Self {
        Text(Arc::from(value.as_str()))
    }
}

impl From<Text> for String {
    fn from(value: Text) -> Self {
        value.0.as_ref().to_owned()
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self == &*other.0
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == &*other.0
    }
}

impl PartialEq<Text> for String {
    fn eq(&self, other: &Text) -> bool {
        **self == *other.0
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Borrowed when the JSON string has no escapes; owned otherwise.
        let value = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Text::from(&*value))
    }
}

/// Hands out one shared allocation per distinct value.
///
/// Values no longer held by anything but the interner are dropped in sweeps, each when the
/// interner has grown to twice its size after the previous one, so its memory stays within a
/// small factor of the live values' whatever the history of the log.
#[derive(Clone, Default)]
pub struct Interner {
    texts: HashSet<Text>,
    lists: HashSet<Arc<[Text]>>,
    /// Entries (texts and lists) after the last sweep.
    swept_at: usize,
}

/// The interner below which no sweep is worth its scan.
const MIN_SWEEP: usize = 4096;

impl Interner {
    /// An empty interner.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared `Text` equal to `value`, if the interner holds one.
    fn get(&self, value: &str) -> Option<Text> {
        self.texts.get(value).cloned()
    }

    /// The shared `Text` equal to `value`.
    pub fn text(&mut self, value: &str) -> Text {
        match self.get(value) {
            Some(text) => text,
            None => self.insert(Text::from(value)),
        }
    }

    /// The shared `Text` equal to `value`, reusing `value`'s allocation when it is the first.
    pub fn share(&mut self, value: &Text) -> Text {
        match self.get(value) {
            Some(text) => text,
            None => self.insert(value.clone()),
        }
    }

    fn insert(&mut self, text: Text) -> Text {
        self.maybe_sweep();
        self.texts.insert(text.clone());
        text
    }

    /// The shared list equal to `values` (each element shared too).
    pub fn list<S: AsRef<str>>(&mut self, values: &[S]) -> Arc<[Text]> {
        let texts: Vec<Text> = values.iter().map(|v| self.text(v.as_ref())).collect();
        if let Some(list) = self.lists.get(texts.as_slice()) {
            return list.clone();
        }
        self.maybe_sweep();
        let list: Arc<[Text]> = Arc::from(texts);
        self.lists.insert(list.clone());
        list
    }

    /// Distinct values held (texts and lists).
    pub fn len(&self) -> usize {
        self.texts.len() + self.lists.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn maybe_sweep(&mut self) {
        if self.len() < MIN_SWEEP.max(2 * self.swept_at) {
            return;
        }
        // Lists first: a dropped list releases its texts.
        self.lists.retain(|list| Arc::strong_count(list) > 1);
        self.texts.retain(|text| Arc::strong_count(&text.0) > 1);
        self.swept_at = self.len();
    }
}

impl fmt::Debug for Interner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interner")
            .field("texts", &self.texts.len())
            .field("lists", &self.lists.len())
            .finish()
    }
}

/// Two interners are always equal: what they hold is a cache of the registry's values, not state.
impl PartialEq for Interner {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_allocation() {
        let mut interner = Interner::new();
        let a = interner.text("PRJ/repo");
        let b = interner.text(&String::from("PRJ/repo"));
        assert!(Arc::ptr_eq(&a.0, &b.0));
        let l1 = interner.list(&["team-a", "terraform"]);
        let l2 = interner.list(&[String::from("team-a"), String::from("terraform")]);
        assert!(Arc::ptr_eq(&l1, &l2));
        assert!(Arc::ptr_eq(&l1[0].0, &interner.text("team-a").0));
        assert_eq!(interner.len(), 4);
    }

    #[test]
    fn unused_values_are_swept_and_live_ones_kept() {
        let mut interner = Interner::new();
        let kept = interner.text("kept");
        for i in 0..100_000 {
            let _ = interner.text(&format!("transient-{i}"));
        }
        // Bounded: never more than twice the live values plus the sweep floor.
        assert!(interner.len() <= 2 * MIN_SWEEP, "{}", interner.len());
        assert!(Arc::ptr_eq(&kept.0, &interner.text("kept").0));
    }

    #[test]
    fn reads_and_writes_as_a_json_string() {
        let text: Text = serde_json::from_str(r#""a\"b""#).unwrap();
        assert_eq!(text, "a\"b");
        assert_eq!(serde_json::to_string(&text).unwrap(), r#""a\"b""#);
        assert_eq!(format!("{text} {text:?}"), "a\"b \"a\\\"b\"");
        let owned = "a\"b".to_owned();
        assert_eq!(text, owned);
        assert_eq!(owned, text);
        assert_eq!("a\"b", text);
    }
}
