//! Reading Redis replies as plain values: stream entries and their fields.

use redis::Value;

/// One stream entry: its id and its fields.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// The value of field `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(field, _)| field == name.as_bytes())
            .map(|(_, value)| value.as_slice())
    }

    /// Field `name` as text.
    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.get(name)?).ok()
    }

    /// Field `name` as a number.
    pub(crate) fn number<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.text(name)?.parse().ok()
    }

    /// Takes field `name` out, to keep its bytes without a copy.
    pub(crate) fn take(&mut self, name: &str) -> Option<Vec<u8>> {
        let at = self
            .fields
            .iter()
            .position(|(field, _)| field == name.as_bytes())?;
        Some(self.fields.swap_remove(at).1)
    }
}

/// A reply that holds entries in one of the shapes Redis gives them.
pub(crate) enum Reply {
    /// `XREAD`/`XREADGROUP`: `[[stream, [entry, …]], …]`, or nil when nothing came.
    Read(Value),
    /// `XAUTOCLAIM`: `[cursor, [entry, …], [deleted id, …]]`.
    Claimed(Value),
}

/// The entries in a reply; entries whose fields are nil (deleted since they were read) are
/// left out.
pub(crate) fn entries(reply: Reply) -> Vec<Entry> {
    let mut found = Vec::new();
    match reply {
        Reply::Read(Value::Array(streams)) => {
            for stream in streams {
                if let Value::Array(mut parts) = stream
                    && parts.len() == 2
                {
                    push_entries(parts.pop().expect("2 parts"), &mut found);
                }
            }
        }
        Reply::Read(Value::Map(streams)) => {
            for (_, list) in streams {
                push_entries(list, &mut found);
            }
        }
        Reply::Claimed(Value::Array(mut parts)) if parts.len() >= 2 => {
            parts.truncate(2);
            push_entries(parts.pop().expect("2 parts"), &mut found);
        }
        _ => {}
    }
    found
}

fn push_entries(list: Value, found: &mut Vec<Entry>) {
    let Value::Array(list) = list else {
        return;
    };
    for entry in list {
        let Value::Array(mut parts) = entry else {
            continue;
        };
        if parts.len() != 2 {
            continue;
        }
        let fields = parts.pop().expect("2 parts");
        let Some(id) = as_text(parts.pop().expect("2 parts")) else {
            continue;
        };
        let Value::Array(flat) = fields else {
            continue;
        };
        let mut pairs = Vec::with_capacity(flat.len() / 2);
        let mut flat = flat.into_iter();
        while let (Some(field), Some(value)) = (flat.next(), flat.next()) {
            if let (Some(field), Some(value)) = (as_bytes(field), as_bytes(value)) {
                pairs.push((field, value));
            }
        }
        found.push(Entry { id, fields: pairs });
    }
}

/// A string reply's bytes.
pub(crate) fn as_bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        _ => None,
    }
}

/// A string reply as text.
pub(crate) fn as_text(value: Value) -> Option<String> {
    String::from_utf8(as_bytes(value)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn entries_of_a_read_and_of_a_claim() {
        let entry =
            |id: &str| Value::Array(vec![bulk(id), Value::Array(vec![bulk("j"), bulk("7")])]);
        let read = Value::Array(vec![Value::Array(vec![
            bulk("stream"),
            Value::Array(vec![entry("1-0"), entry("2-0")]),
        ])]);
        let found = entries(Reply::Read(read));
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].id, "2-0");
        assert_eq!(found[1].number::<u64>("j"), Some(7));
        // A claimed entry deleted since: nil fields, left out.
        let deleted = Value::Array(vec![bulk("3-0"), Value::Nil]);
        let claimed = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![entry("4-0"), deleted]),
            Value::Array(vec![]),
        ]);
        let found = entries(Reply::Claimed(claimed));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, "4-0");
        assert!(entries(Reply::Read(Value::Nil)).is_empty());
    }
}
