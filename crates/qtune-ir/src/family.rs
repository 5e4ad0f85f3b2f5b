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

/// The Top op table's rows of a family, one per Top op: `rows` holds each
/// op's `[top, operands, attributes, name, notes]`; ops sharing a Top op
/// (which give the same operands and attributes) make one row naming them
/// all, with their notes joined.
pub(crate) fn merged_top_rows(mut rows: Vec<[&'static str; 5]>) -> Vec<[String; 5]> {
    rows.sort_by_key(|r| r[0]);
    let mut out: Vec<[String; 5]> = Vec::new();
    for r in rows {
        match out.last_mut() {
            Some(last) if last[0] == r[0] => {
                last[3] = format!("{} / {}", last[3], r[3]);
                if !r[4].is_empty() {
                    last[4] = if last[4].is_empty() {
                        r[4].to_string()
                    } else {
                        format!("{}; {}", last[4], r[4])
                    };
                }
            }
            _ => out.push(r.map(String::from)),
        }
    }
    out
}
