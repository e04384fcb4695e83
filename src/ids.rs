//! Typed ids: a site's name ([`SiteId`]), a group's name ([`GroupId`]) and a witness node's
//! number ([`NodeId`], also Raft's node id), so that one can never be passed where another is
//! meant. Each is serialized as the plain name or number (the log, snapshots and the API carry
//! the same bytes as before they were typed); names borrow as `str`, so maps keyed by them are
//! looked up with a `&str`.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! name {
    ($(#[$doc:meta])* $id:ident) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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

/// A witness node's id (`node.id`, ids start at 1 and are never reused).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u64> for NodeId {
    fn from(id: u64) -> NodeId {
        NodeId(id)
    }
}

impl FromStr for NodeId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<NodeId, Self::Err> {
        s.parse().map(NodeId)
    }
}

impl PartialEq<u64> for NodeId {
    fn eq(&self, other: &u64) -> bool {
        self.0 == *other
    }
}

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

    #[test]
    fn node_ids_read_what_plain_numbers_wrote() {
        // Logs and snapshots written before the ids were typed hold plain numbers and names.
        let old: BTreeMap<String, BTreeMap<u64, bool>> = [("east".to_string(), [(2, true)].into())].into();
        let json = serde_json::to_vec(&old).unwrap();
        let new: BTreeMap<SiteId, BTreeMap<NodeId, bool>> = serde_json::from_slice(&json).unwrap();
        assert!(new[&SiteId::from("east")][&NodeId(2)]);
        assert_eq!(serde_json::to_vec(&new).unwrap(), json, "and write the same bytes");
        assert_eq!(rmp_serde::to_vec_named(&NodeId(7)).unwrap(), rmp_serde::to_vec_named(&7u64).unwrap());
        assert_eq!("12".parse::<NodeId>().unwrap(), NodeId(12));
        assert_eq!(format!("{} {:?}", NodeId(3), NodeId(3)), "3 3");
    }
}
