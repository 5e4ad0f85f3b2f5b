//! The macro that builds an op family's registry from its table: the
//! registrations, the lookup from an [`Op`](crate::Op) and the pattern macro
//! for the family's variants. The data-movement, weighted-layer and
//! normalization families use it (`movement.rs`, `linear.rs`, `norm.rs`).

/// Builds a family's registry. The invocation:
///
/// ```text
/// op_family! {
///     /// docs of the table
///     static TABLE: [Spec];
///     /// docs of the lookup
///     fn lookup;
///     /// docs of the pattern macro
///     macro pattern_op;
///     Variant => { field: value, ... },
///     ...
/// }
/// ```
///
/// gives `pub static TABLE: &[Spec]`, one `Spec` per entry (its `name` the
/// variant's, the other fields the entry's), `Op::lookup(&self) ->
/// Option<&'static Spec>`, and the exported macro `pattern_op!()`, a pattern
/// matching every variant of the family, so that a `match` arm
/// `pattern_op!() => ...` stays exhaustive whatever the family holds.
macro_rules! op_family {
    (
        $(#[$table_meta:meta])* static $table:ident : [$spec:ident];
        $(#[$fn_meta:meta])* fn $lookup:ident;
        $(#[$macro_meta:meta])* macro $pattern:ident;
        $( $variant:ident => { $($key:ident : $val:expr),* $(,)? } ),* $(,)?
    ) => {
        $(#[$table_meta])*
        pub static $table: &[$spec] = &[$(
            $spec {
                name: stringify!($variant),
                $($key: $val),*
            }
        ),*];

        #[allow(clippy::enum_variant_names)]
        enum Ix { $($variant),* }

        impl $crate::Op {
            $(#[$fn_meta])*
            pub fn $lookup(&self) -> Option<&'static $spec> {
                let ix = match self {
                    $($crate::Op::$variant { .. } => Ix::$variant as usize,)*
                    _ => return None,
                };
                Some(&$table[ix])
            }
        }

        $(#[$macro_meta])*
        #[macro_export]
        macro_rules! $pattern {
            () => { $($crate::Op::$variant { .. })|* };
        }
    };
}
