//! What a template evaluates: strings are [`Secret`]s (zeroized on drop),
//! maps are sorted like Go's `fmt` and `encoding/json` print them.

use std::collections::BTreeMap;
use unbaked_api::Secret;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Value {
    /// Go's nil: a missing key, an absent variable.
    #[default]
    Nil,
    Bool(bool),
    Int(i64),
    Str(Secret),
    Map(BTreeMap<String, Value>),
    List(Vec<Value>),
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Str(Secret::from_slice(s.as_bytes()))
    }

    /// Go's truth: false, 0, nil and empty strings, maps and lists are false.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(n) => *n != 0,
            Value::Str(s) => !s.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::List(l) => !l.is_empty(),
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Str(_) => "string",
            Value::Map(_) => "map",
            Value::List(_) => "list",
        }
    }
}
