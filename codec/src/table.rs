//! [`clause_enum!`](crate::clause_enum): the table macro that generates an error enum whose
//! variants each cite a clause of the specification, carry a reason code and a message written
//! once. [`DecodeError`](crate::DecodeError) is made with it; so can a caller's enum of the rules
//! that depend on state the codec does not see (a session's protocol violations).

/// Generates an error enum from a table: one row per variant, with the clause it cites, the
/// MQTT 5.0 [`ReasonCode`](crate::ReasonCode) constant that answers it, and its message (a format
/// string over the variant's fields). The enum gets `clause()`, `reason_code()` and `kind()` (the
/// variant's name), with the visibility given to the enum, and `Display`, which writes
/// `[clause] message`. Derives and other attributes go on the enum as usual.
///
/// ```
/// sluice_codec::clause_enum! {
///     /// Rules a peer broke.
///     #[derive(Debug, Clone, Copy, PartialEq, Eq)]
///     pub enum Violation {
///         /// A second CONNACK.
///         SecondConnAck => "MQTT-3.2.0-2", PROTOCOL_ERROR, "a second CONNACK";
///         /// An identifier nobody asked for.
///         UnknownId { id: u16 } => "MQTT-2.2.1-5", PROTOCOL_ERROR, "packet identifier {id} is not in use";
///     }
/// }
/// let v = Violation::UnknownId { id: 7 };
/// assert_eq!(v.clause(), "MQTT-2.2.1-5");
/// assert_eq!(v.reason_code(), sluice_codec::ReasonCode::PROTOCOL_ERROR);
/// assert_eq!(v.kind(), "UnknownId");
/// assert_eq!(v.to_string(), "[MQTT-2.2.1-5] packet identifier 7 is not in use");
/// ```
#[macro_export]
macro_rules! clause_enum {
    (
        $(#[$enum_meta:meta])*
        $vis:vis enum $enum:ident {
            $(
                $(#[$meta:meta])*
                $name:ident $({ $($field:ident : $ty:ty),* $(,)? })? => $clause:expr, $reason:ident, $msg:literal;
            )*
        }
    ) => {
        $(#[$enum_meta])*
        $vis enum $enum {
            $(
                $(#[$meta])*
                $name $({ $(
                    #[allow(missing_docs)]
                    $field: $ty
                ),* })?,
            )*
        }

        impl $enum {
            /// The specification clause (normative statement or section) this error cites.
            #[allow(unused_variables)]
            $vis fn clause(&self) -> &'static str {
                match *self {
                    $(Self::$name $({ $($field),* })? => $clause,)*
                }
            }

            /// The MQTT 5.0 reason code for the DISCONNECT (or CONNACK) that answers it.
            $vis const fn reason_code(&self) -> $crate::ReasonCode {
                match self {
                    $(Self::$name { .. } => $crate::ReasonCode::$reason,)*
                }
            }

            /// A stable name for the error kind (the variant name).
            $vis const fn kind(&self) -> &'static str {
                match self {
                    $(Self::$name { .. } => stringify!($name),)*
                }
            }
        }

        impl ::core::fmt::Display for $enum {
            #[allow(unused_variables)]
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                write!(f, "[{}] ", self.clause())?;
                match self {
                    $(Self::$name $({ $($field),* })? => {
                        write!(f, $msg $($(, $field = $field)*)?)
                    })*
                }
            }
        }
    };
}
