//! One table per vocabulary enum: each value and its name, so that
//! `as_str`, `Display`, serde and `all` cannot disagree.

/// Implements, for a fieldless enum, from one table of `Variant => "name"`:
/// `all()`, `as_str()`, a crate-private `from_name()`, `Display`, and serde
/// as the name.
macro_rules! named {
    ($ty:ident { $($variant:ident => $name:literal,)+ }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const fn all() -> &'static [$ty] {
                &[$($ty::$variant),+]
            }

            /// Its name, as `Display` and serde write it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }

            /// The value named `name`, if any.
            pub(crate) fn from_name(name: &str) -> Option<$ty> {
                match name {
                    $($name => Some($ty::$variant),)+
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<$ty, D::Error> {
                const NAMES: &[&str] = &[$($name),+];
                let name = <::std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                $ty::from_name(&name).ok_or_else(|| {
                    <D::Error as ::serde::de::Error>::unknown_variant(&name, NAMES)
                })
            }
        }
    };
}

pub(crate) use named;
