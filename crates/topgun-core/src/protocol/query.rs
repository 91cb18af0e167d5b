//! The query language of live queries (PROTOCOL.md §5): `Query`, predicate trees, sorting
//! and aggregations.

use super::enums::{AggFunc, PredicateOp, SortDirection};
use super::error::{DecodeError, Path};
use super::msgpack::{Next, Reader, Writer};
use super::wire::{Field, Wire};
use crate::value::{CompactString, Value, ValueMap};

wire_struct! {
    /// A node of a predicate tree.
    pub struct PredicateNode {
        pub op: PredicateOp = "op",
        /// The field tested; may be a dot path (`address.city`).
        pub attribute: Option<CompactString> = "attribute",
        /// The operand. Tri-state: `value: null` (compare with null) differs from absent.
        pub value: Field<Value> = "value",
        pub children: Option<Vec<PredicateNode>> = "children",
        /// `auth.<path>` or `data.<path>`, replacing `value` in server-side policies.
        pub value_ref: Option<CompactString> = "valueRef",
        /// Full-text operators (`match*`): the query text.
        pub query: Option<CompactString> = "query",
        pub match_options: Option<Value> = "matchOptions",
        pub slop: Option<u32> = "slop",
        pub prefix: Option<CompactString> = "prefix",
        pub max_expansions: Option<u32> = "maxExpansions",
    }
}

impl PredicateNode {
    /// A leaf comparing `attribute` with `value`.
    pub fn leaf(op: PredicateOp, attribute: &str, value: Value) -> Self {
        Self {
            op,
            attribute: Some(attribute.into()),
            value: Field::Value(value),
            ..Self::branch(op, Vec::new())
        }
    }

    /// A node combining `children` (`and`, `or`, `not`).
    pub fn branch(op: PredicateOp, children: Vec<PredicateNode>) -> Self {
        Self {
            op,
            attribute: None,
            value: Field::Absent,
            children: (!children.is_empty()).then_some(children),
            value_ref: None,
            query: None,
            match_options: None,
            slop: None,
            prefix: None,
            max_expansions: None,
        }
    }
}

wire_struct! {
    pub struct SortField {
        pub field: CompactString = "field",
        pub direction: SortDirection = "direction",
    }
}

/// Sort keys in order. Decodes the array form `[{field, direction}]` the TS client sends and
/// the record form `{field: direction}` of its schema (in key order); encodes the array form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sort(pub Vec<SortField>);

impl Wire for Sort {
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        match r.next() {
            Next::Array => Vec::<SortField>::decode(r, at).map(Self),
            Next::Map => {
                let mut fields = Vec::new();
                r.read_map(at, |r, field| {
                    let direction = SortDirection::decode(r, at.key(field))?;
                    fields.push(SortField {
                        field: field.into(),
                        direction,
                    });
                    Ok(())
                })?;
                Ok(Self(fields))
            }
            Next::Nil | Next::Scalar => Err(r.wrong_type(at, "an array or a map")),
        }
    }

    fn encode(&self, w: &mut Writer) {
        self.0.encode(w);
    }
}

wire_struct! {
    pub struct Aggregation {
        pub func: AggFunc = "func",
        /// Not needed for `count`.
        pub field: Option<CompactString> = "field",
    }
}

wire_struct! {
    /// What a live query selects (PROTOCOL.md §5.1).
    #[derive(Default)]
    pub struct Query {
        /// Equality on top-level fields; all must match.
        pub where_: Option<ValueMap> = "where",
        pub predicate: Option<PredicateNode> = "predicate",
        pub sort: Option<Sort> = "sort",
        pub limit: Option<u32> = "limit",
        pub cursor: Option<CompactString> = "cursor",
        pub group_by: Option<Vec<String>> = "groupBy",
        pub aggregations: Option<Vec<Aggregation>> = "aggregations",
        /// The TS client copies `QUERY_SUB.fields` here too.
        pub fields: Option<Vec<String>> = "fields",
    }
}
