//! How the file's keys are declared: [`file_keys!`] turns one line per numeric key into
//! everything the key needs, so that a key cannot be read without being checked, listed in
//! `--help` or documented with its range.

use super::error::ConfigError;
use super::range::KeyRange;

/// Declares the config file: its struct, with the keys that are not numbers written out as
/// fields, and the numeric keys one line each:
///
/// ```text
/// /// Doc comment: what the key does, and why its range is what it is.
/// toml_name (CONSTANT): resolved_type = default, Unit min..=max;
/// toml_name (CONSTANT): resolved_type = default, Unit min..=max, 0 means "what 0 does";
/// ```
///
/// `numeric in "table." { … }` declares the keys of a TOML table: messages, `--help` and the
/// README name them `table.toml_name`.
///
/// From each numeric line follow: the file's field (`Option<u64>`, so that an out-of-range
/// value is refused naming its range rather than as a type error); `CONSTANT`, the key's
/// [`KeyRange`]; its place in `NUMERIC_KEYS` (declaration order, which is the README's);
/// and its field of `Numbers`, the resolved value of `resolved_type`. A default may use
/// the keys declared above it by name (their resolved values). Two compile-time checks per
/// key: `CONSTANT` is `toml_name` in capitals, and the range fits `resolved_type`.
macro_rules! file_keys {
    (
        $(#[$file_attr:meta])*
        $vis:vis struct $File:ident $fields:tt
        numeric { $($keys:tt)* }
    ) => {
        $crate::config::declare::file_keys! {
            $(#[$file_attr])* $vis struct $File $fields numeric in "" { $($keys)* }
        }
    };
    (
        $(#[$file_attr:meta])*
        $vis:vis struct $File:ident {
            $( $(#[$field_attr:meta])* $field:ident : $field_ty:ty, )*
        }
        numeric in $table:literal {
            $(
                $(#[$doc:meta])*
                $name:ident ($KEY:ident) : $ty:ty = $default:expr,
                    $unit:ident $range:expr $(, 0 means $zero:literal)?;
            )*
        }
    ) => {
        $(#[$file_attr])*
        $vis struct $File {
            $( $(#[$field_attr])* pub(super) $field: $field_ty, )*
            $( pub(super) $name: Option<u64>, )*
        }

        $(
            $(#[$doc])*
            pub const $KEY: $crate::config::KeyRange = $crate::config::KeyRange::new(
                concat!($table, stringify!($name)),
                *$range.start(),
                *$range.end(),
                $crate::config::Unit::$unit,
            ) $(.or_zero($zero))?;

            const _: () = {
                assert!(
                    $crate::config::declare::is_capitals_of(stringify!($KEY), stringify!($name)),
                    concat!(stringify!($KEY), " must be ", stringify!($name), " in capitals"),
                );
                assert!(
                    $KEY.max <= <$ty as $crate::config::declare::Number>::LARGEST,
                    concat!("the range of ", stringify!($name), " must fit its type"),
                );
            };
        )*

        /// Every numeric key of the file, in the README's order.
        pub const NUMERIC_KEYS: &[$crate::config::KeyRange] = &[$($KEY),*];

        /// Every numeric key's value, resolved: the file's, or else the default.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(super) struct Numbers {
            $( pub(super) $name: $ty, )*
        }

        impl Numbers {
            /// The values with no file: each key's default.
            pub(super) fn defaults() -> Self {
                $( let $name: $ty = $default; )*
                Self { $($name),* }
            }

            /// The file's values, each checked against its key's range; the first key out
            /// of range, in declaration order, is the error.
            pub(super) fn resolve(
                file: &$File,
            ) -> Result<Self, $crate::config::ConfigError> {
                $(
                    let $name: $ty =
                        $crate::config::declare::resolve(&$KEY, file.$name, || $default)?;
                )*
                Ok(Self { $($name),* })
            }
        }
    };
}
pub(super) use file_keys;

/// What a numeric key resolves to. Each declaration asserts at compile time that its range
/// fits its type, so converting a checked value loses nothing.
pub(super) trait Number: Copy {
    /// The type's largest value, as a `u64`.
    const LARGEST: u64;
    fn from_checked(value: u64) -> Self;
    fn to_u64(self) -> u64;
}

impl Number for u64 {
    const LARGEST: u64 = u64::MAX;
    fn from_checked(value: u64) -> Self {
        value
    }
    fn to_u64(self) -> u64 {
        self
    }
}

impl Number for usize {
    const LARGEST: u64 = usize::MAX as u64;
    fn from_checked(value: u64) -> Self {
        Self::try_from(value).unwrap_or(Self::MAX)
    }
    fn to_u64(self) -> u64 {
        u64::try_from(self).unwrap_or(u64::MAX)
    }
}

impl Number for u8 {
    const LARGEST: u64 = u8::MAX as u64;
    fn from_checked(value: u64) -> Self {
        Self::try_from(value).unwrap_or(Self::MAX)
    }
    fn to_u64(self) -> u64 {
        u64::from(self)
    }
}

impl Number for u32 {
    const LARGEST: u64 = u32::MAX as u64;
    fn from_checked(value: u64) -> Self {
        Self::try_from(value).unwrap_or(Self::MAX)
    }
    fn to_u64(self) -> u64 {
        u64::from(self)
    }
}

/// One numeric key's value: the file's, or else `default()`, refused outside the key's
/// range. Defaults are checked too: a default that grows with another key (the backlog
/// budgets) must stay in range as well.
pub(super) fn resolve<T: Number>(
    key: &KeyRange,
    file: Option<u64>,
    default: impl FnOnce() -> T,
) -> Result<T, ConfigError> {
    let value = file.unwrap_or_else(|| default().to_u64());
    key.check(value).map(T::from_checked)
}

/// Whether `constant` is `name` in capitals (`MAX_DEPTH` and `max_depth`).
pub(super) const fn is_capitals_of(constant: &str, name: &str) -> bool {
    let (constant, name) = (constant.as_bytes(), name.as_bytes());
    if constant.len() != name.len() {
        return false;
    }
    let mut i = 0;
    while i < name.len() {
        if constant[i] != name[i].to_ascii_uppercase() {
            return false;
        }
        i += 1;
    }
    true
}
