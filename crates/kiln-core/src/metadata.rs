//! Run metadata changes as Trigger.dev's SDK sends them (`metadata.set`,
//! `del`, `append`, `remove`, `increment`, `replace` inside a task, and the
//! same on `metadata.parent` and `metadata.root`), and how they apply to a
//! run's metadata object. Pure: the store applies them under a row lock.
//!
//! A key is a top-level name, or a path from the root when it starts with
//! `$.` (`$.progress.pages`, `$.files[2]`), as Trigger reads it. An
//! operation that cannot apply (appending to a number, removing from
//! something that is not a list) is skipped and reported, as Trigger skips
//! it; it never fails the others.

use serde::Deserialize;
use serde_json::{Map, Value};

/// One change, as the SDK's metadata manager flushes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum MetadataOperation {
    /// `metadata.set(key, value)`.
    Set { key: String, value: Value },
    /// `metadata.del(key)`: a top-level key only, as in Trigger.
    Delete { key: String },
    /// `metadata.append(key, value)`: to a list, starting one if absent.
    Append { key: String, value: Value },
    /// `metadata.remove(key, value)`: every equal item of a list.
    Remove { key: String, value: Value },
    /// `metadata.increment(key, by)` (and `decrement`, with a negative by).
    Increment { key: String, value: f64 },
    /// `metadata.replace(object)`: the whole object.
    Update { value: Map<String, Value> },
}

/// Applies `operations` in order to `metadata`; answers those that could
/// not apply.
pub fn apply<'a>(metadata: &mut Map<String, Value>, operations: &'a [MetadataOperation]) -> Vec<&'a MetadataOperation> {
    let mut skipped = Vec::new();
    for operation in operations {
        if !apply_one(metadata, operation) {
            skipped.push(operation);
        }
    }
    skipped
}

fn apply_one(metadata: &mut Map<String, Value>, operation: &MetadataOperation) -> bool {
    match operation {
        MetadataOperation::Set { key, value } => set(metadata, key, value.clone()),
        MetadataOperation::Delete { key } => {
            metadata.remove(key);
            true
        }
        MetadataOperation::Append { key, value } => match get(metadata, key).cloned() {
            None => set(metadata, key, Value::Array(vec![value.clone()])),
            Some(Value::Array(mut items)) => {
                items.push(value.clone());
                set(metadata, key, Value::Array(items))
            }
            // A path turns a single value into a list; a top-level key
            // does not (Trigger's own asymmetry, kept so that the same
            // task gives the same metadata here).
            Some(existing) if is_path(key) => set(metadata, key, Value::Array(vec![existing, value.clone()])),
            Some(_) => false,
        },
        MetadataOperation::Remove { key, value } => match get(metadata, key).cloned() {
            Some(Value::Array(items)) => {
                let kept = items.into_iter().filter(|item| item != value).collect();
                set(metadata, key, Value::Array(kept))
            }
            _ => false,
        },
        MetadataOperation::Increment { key, value } => {
            let current = get(metadata, key).and_then(Value::as_f64).unwrap_or(0.0);
            set(metadata, key, number(current + value))
        }
        MetadataOperation::Update { value } => {
            *metadata = value.clone();
            true
        }
    }
}

/// A sum as JavaScript would print it: whole numbers without a fraction.
fn number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0 {
        Value::from(value as i64)
    } else {
        serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
    }
}

fn is_path(key: &str) -> bool {
    key.starts_with("$.")
}

/// One step of a `$.` path.
#[derive(Debug, PartialEq)]
enum Step<'a> {
    Field(&'a str),
    Index(usize),
}

/// `$.a.b[2].c` → `a`, `b`, 2, `c`; `None` when it is not a path kiln can
/// follow (an empty name, a bracket that is not an index).
fn steps(key: &str) -> Option<Vec<Step<'_>>> {
    let mut steps = Vec::new();
    for part in key.strip_prefix("$.")?.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(at) => part.split_at(at),
            None => (part, ""),
        };
        if name.is_empty() && steps.is_empty() {
            return None;
        }
        if !name.is_empty() {
            steps.push(Step::Field(name));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let close = inner.find(']')?;
            steps.push(Step::Index(inner[..close].parse().ok()?));
            rest = &inner[close + 1..];
        }
        if !rest.is_empty() {
            return None;
        }
    }
    Some(steps)
}

fn get<'m>(metadata: &'m Map<String, Value>, key: &str) -> Option<&'m Value> {
    if !is_path(key) {
        return metadata.get(key);
    }
    let steps = steps(key)?;
    let (Step::Field(first), rest) = steps.split_first()? else {
        return None;
    };
    let mut value = metadata.get(*first)?;
    for step in rest {
        value = match step {
            Step::Field(name) => value.as_object()?.get(*name)?,
            Step::Index(index) => value.as_array()?.get(*index)?,
        };
    }
    Some(value)
}

/// Sets `key`, making the objects a path passes through (an index past a
/// list's end pads it with nulls, as JavaScript's arrays do). False when
/// the path crosses a value that is neither.
fn set(metadata: &mut Map<String, Value>, key: &str, value: Value) -> bool {
    if !is_path(key) {
        metadata.insert(key.to_owned(), value);
        return true;
    }
    let Some(steps) = steps(key) else { return false };
    let Some((Step::Field(first), rest)) = steps.split_first() else {
        return false;
    };
    let mut slot = metadata.entry((*first).to_owned()).or_insert(Value::Null);
    for step in rest {
        slot = match step {
            Step::Field(name) => {
                if slot.is_null() {
                    *slot = Value::Object(Map::new());
                }
                let Some(object) = slot.as_object_mut() else {
                    return false;
                };
                object.entry((*name).to_owned()).or_insert(Value::Null)
            }
            Step::Index(index) => {
                if slot.is_null() {
                    *slot = Value::Array(Vec::new());
                }
                let Some(items) = slot.as_array_mut() else { return false };
                if items.len() <= *index {
                    items.resize(index + 1, Value::Null);
                }
                &mut items[*index]
            }
        };
    }
    *slot = value;
    true
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(start: Value, operations: Value) -> (Value, usize) {
        let Value::Object(mut metadata) = start else {
            panic!("an object")
        };
        let operations: Vec<MetadataOperation> = serde_json::from_value(operations).expect("operations");
        let skipped = apply(&mut metadata, &operations).len();
        (Value::Object(metadata), skipped)
    }

    #[test]
    fn the_sdks_operations_apply_in_order() {
        let (metadata, skipped) = run(
            json!({ "keep": 1, "gone": true, "list": ["a", "b", "a"] }),
            json!([
                { "type": "set", "key": "progress", "value": 0.5 },
                { "type": "delete", "key": "gone" },
                { "type": "append", "key": "list", "value": "c" },
                { "type": "append", "key": "new", "value": { "x": 1 } },
                { "type": "remove", "key": "list", "value": "a" },
                { "type": "increment", "key": "count", "value": 2 },
                { "type": "increment", "key": "count", "value": -0.5 },
                { "type": "increment", "key": "keep", "value": 1 },
            ]),
        );
        assert_eq!(skipped, 0);
        assert_eq!(
            metadata,
            json!({ "keep": 2, "list": ["b", "c"], "new": [{ "x": 1 }], "progress": 0.5, "count": 1.5 })
        );
    }

    #[test]
    fn paths_reach_into_objects_and_lists() {
        let (metadata, skipped) = run(
            json!({ "status": { "text": "old" }, "files": ["a"] }),
            json!([
                { "type": "set", "key": "$.status.progress", "value": 10 },
                { "type": "set", "key": "$.files[2]", "value": "c" },
                { "type": "set", "key": "$.deep.er[1].name", "value": "n" },
                { "type": "append", "key": "$.status.text", "value": "new" },
                { "type": "increment", "key": "$.status.progress", "value": 5 },
            ]),
        );
        assert_eq!(skipped, 0);
        assert_eq!(
            metadata,
            json!({
                "status": { "text": ["old", "new"], "progress": 15 },
                "files": ["a", null, "c"],
                "deep": { "er": [null, { "name": "n" }] },
            })
        );
    }

    #[test]
    fn what_cannot_apply_is_skipped_and_the_rest_applies() {
        let (metadata, skipped) = run(
            json!({ "n": 1, "text": "t" }),
            json!([
                { "type": "append", "key": "n", "value": 2 },
                { "type": "remove", "key": "text", "value": "t" },
                { "type": "set", "key": "$.text.inner", "value": 1 },
                { "type": "set", "key": "$.bad[x]", "value": 1 },
                { "type": "set", "key": "ok", "value": true },
            ]),
        );
        assert_eq!(skipped, 4);
        assert_eq!(metadata, json!({ "n": 1, "text": "t", "ok": true }));
    }

    #[test]
    fn replace_takes_the_whole_object_and_unknown_types_are_refused() {
        let (metadata, _) = run(
            json!({ "a": 1 }),
            json!([{ "type": "update", "value": { "b": 2 } }, { "type": "set", "key": "c", "value": 3 }]),
        );
        assert_eq!(metadata, json!({ "b": 2, "c": 3 }));
        assert!(serde_json::from_value::<MetadataOperation>(json!({ "type": "explode", "key": "a" })).is_err());
    }
}
