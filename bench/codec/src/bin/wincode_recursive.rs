//! Built only with `--features wincode-recursive`: serde-wincode on a recursive type.
//! Shows whether it compiles (it is expected not to: E0275).
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Tree {
    value: u32,
    children: Vec<Tree>,
}

fn main() {
    let t = Tree { value: 1, children: vec![Tree { value: 2, children: vec![] }] };
    let mut buf = Vec::new();
    t.serialize(serde_wincode::Serializer::<_, wincode::config::Configuration>::new(&mut buf)).unwrap();
    let back = Tree::deserialize(serde_wincode::Deserializer::<_, wincode::config::Configuration>::new(&buf[..])).unwrap();
    assert_eq!(back, t);
    println!("serde-wincode round-tripped a recursive type: {} bytes", buf.len());
}
