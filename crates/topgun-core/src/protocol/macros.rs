//! Macros that derive [`Wire`](super::wire::Wire) for message structs and string enums from
//! one declaration, so a field's Rust name, wire key and type are written once.

/// Declares a struct encoded as a MsgPack map and derives its `Wire` and `WireFields`.
///
/// Decoding walks the map once: known keys are decoded (a repeated key: the last wins),
/// unknown keys are skipped, and an absent key is `Wire::absent` (an error for required
/// fields, `None`/`Absent` for optional ones). Encoding writes fields in declaration order
/// and omits those whose value `is_absent`.
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty = $key:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field: $ty, )*
        }

        impl $crate::protocol::wire::Wire for $name {
            #[allow(unused_mut)]
            fn decode(
                r: &mut $crate::protocol::msgpack::Reader<'_>,
                at: $crate::protocol::error::Path<'_>,
            ) -> Result<Self, $crate::protocol::error::DecodeError> {
                $( let mut $field: Option<$ty> = None; )*
                r.read_fields(at, |r, key| {
                    $(
                        if key == $key.as_bytes() {
                            $field = Some(<$ty as $crate::protocol::wire::Wire>::decode(
                                r,
                                at.key($key),
                            )?);
                            return Ok(());
                        }
                    )*
                    let key = r.unknown_key(key, at)?;
                    r.skip(at.key(key))
                })?;
                Ok(Self {
                    $( $field: match $field {
                        Some(v) => v,
                        None => <$ty as $crate::protocol::wire::Wire>::absent(at.key($key))?,
                    }, )*
                })
            }

            fn encode(&self, w: &mut $crate::protocol::msgpack::Writer) {
                w.map_header($crate::protocol::wire::WireFields::field_count(self));
                $crate::protocol::wire::WireFields::encode_fields(self, w);
            }
        }

        impl $crate::protocol::wire::WireFields for $name {
            fn field_count(&self) -> usize {
                0 $( + usize::from(!$crate::protocol::wire::Wire::is_absent(&self.$field)) )*
            }

            #[allow(unused_variables)]
            fn encode_fields(&self, w: &mut $crate::protocol::msgpack::Writer) {
                $(
                    if !$crate::protocol::wire::Wire::is_absent(&self.$field) {
                        w.str($key);
                        $crate::protocol::wire::Wire::encode(&self.$field, w);
                    }
                )*
            }
        }
    };
}

/// Declares a fieldless enum carried on the wire as one of a fixed set of strings.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name { $( $(#[$vmeta])* $variant, )* }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [Self] = &[$( Self::$variant ),*];

            /// The wire string.
            pub fn as_str(self) -> &'static str {
                match self { $( Self::$variant => $text, )* }
            }

            /// The variant named by a wire string.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $( $text => Some(Self::$variant), )* _ => None }
            }
        }

        impl $crate::protocol::wire::Wire for $name {
            fn decode(
                r: &mut $crate::protocol::msgpack::Reader<'_>,
                at: $crate::protocol::error::Path<'_>,
            ) -> Result<Self, $crate::protocol::error::DecodeError> {
                let text = r.read_str(at)?;
                Self::parse(text).ok_or_else(|| {
                    $crate::protocol::error::DecodeError::at(
                        at,
                        $crate::protocol::error::ErrorKind::UnknownVariant {
                            value: text.to_owned(),
                            expected: concat!($( $text, " " ),*),
                        },
                    )
                })
            }

            fn encode(&self, w: &mut $crate::protocol::msgpack::Writer) {
                w.str(self.as_str());
            }
        }
    };
}
