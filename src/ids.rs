//! Typed names: a site's ([`SiteId`]) and a group's ([`GroupId`]), so that one can never be
//! passed where the other is meant. Both are the name as configured, serialized as a plain
//! string (the log, snapshots and the API carry the same bytes as before they were typed), and
//! borrow as `str`, so maps keyed by them are looked up with a `&str`.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

macro_rules! name {
    ($(#[$doc:meta])* $id:ident) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $id(String);

        impl $id {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $id {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $id {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<String> for $id {
            fn borrow(&self) -> &String {
                &self.0
            }
        }

        impl AsRef<str> for $id {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $id {
            fn from(name: &str) -> $id {
                $id(name.to_string())
            }
        }

        impl From<String> for $id {
            fn from(name: String) -> $id {
                $id(name)
            }
        }

        impl From<&String> for $id {
            fn from(name: &String) -> $id {
                $id(name.clone())
            }
        }

        impl From<$id> for String {
            fn from(id: $id) -> String {
                id.0
            }
        }

        /// As the name itself (quoted), so messages read the same as before it was typed.
        impl fmt::Debug for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $id {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $id {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $id {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$id> for str {
            fn eq(&self, other: &$id) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$id> for &str {
            fn eq(&self, other: &$id) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$id> for String {
            fn eq(&self, other: &$id) -> bool {
                *self == other.0
            }
        }
    };
}

name!(
    /// A site's name (`[[site]] name`).
    SiteId
);
name!(
    /// A group's name (`[[group]] name`).
    GroupId
);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn ids_serialize_as_their_name_and_are_looked_up_by_str() {
        let site = SiteId::from("east");
        assert_eq!(serde_json::to_string(&site).unwrap(), "\"east\"");
        assert_eq!(rmp_serde::to_vec(&site).unwrap(), rmp_serde::to_vec("east").unwrap(), "the log's bytes unchanged");
        let back: GroupId = serde_json::from_str("\"app\"").unwrap();
        assert_eq!(back, "app");
        let map: BTreeMap<SiteId, u32> = [(site.clone(), 1)].into();
        assert_eq!(map.get("east"), Some(&1));
        assert_eq!(format!("{site}"), "east");
    }
}
