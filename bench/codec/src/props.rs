//! Properties that matter for procpool's wire, checked by running each codec.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::ByteBuf;

use crate::alloc::tracked;
use crate::codecs::{self, Codec};
use crate::for_each_codec;
use crate::workloads;

// ---------------------------------------------------------------- b. serialize once

pub static SER_CALLS: AtomicUsize = AtomicUsize::new(0);

/// Counts its `Serialize::serialize` calls; encodes like the project's `SharedBytes`,
/// as `(u32 index, u64 len)`.
#[derive(Debug, PartialEq)]
pub struct Counted(pub u32, pub u64);
impl Serialize for Counted {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SER_CALLS.fetch_add(1, SeqCst);
        (self.0, self.1).serialize(s)
    }
}
impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Counted, D::Error> {
        let (a, b) = <(u32, u64)>::deserialize(d)?;
        Ok(Counted(a, b))
    }
}

fn calls(f: impl FnOnce()) -> usize {
    SER_CALLS.store(0, SeqCst);
    f();
    SER_CALLS.load(SeqCst)
}

/// Fails in both directions with a message of its own (like `SharedBytes` does).
#[derive(Debug, PartialEq)]
pub struct Failing;
impl Serialize for Failing {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("MY-SER-MESSAGE"))
    }
}
impl<'de> Deserialize<'de> for Failing {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Failing, D::Error> {
        let _ = u32::deserialize(d)?;
        Err(serde::de::Error::custom("MY-DE-MESSAGE"))
    }
}

// ---------------------------------------------------------------- g. serde features

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(untagged)]
pub enum Untagged {
    Num(u64),
    Text(String),
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Inner {
    pub a: u32,
    pub b: String,
}
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Flattened {
    pub id: u64,
    #[serde(flatten)]
    pub inner: Inner,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(tag = "t")]
pub enum Internally {
    A { x: u32 },
    B { y: String },
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(tag = "t", content = "c")]
pub enum Adjacently {
    A(u32),
    B(String),
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct SkipIfNone {
    pub a: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub b: Option<u32>,
    pub c: u32,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Renamed {
    #[serde(rename = "other")]
    pub a: u32,
    #[serde(skip)]
    pub skipped: u32,
    pub c: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Unit;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Tree {
    pub value: u32,
    pub children: Vec<Tree>,
}

/// Serialized with `collect_seq` over an iterator without an exact length.
#[derive(Debug, PartialEq)]
pub struct UnsizedSeq(pub Vec<u32>);
impl Serialize for UnsizedSeq {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().filter(|_| true))
    }
}
impl<'de> Deserialize<'de> for UnsizedSeq {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<UnsizedSeq, D::Error> {
        Ok(UnsizedSeq(Vec::deserialize(d)?))
    }
}

fn roundtrip<C: Codec, T: Serialize + DeserializeOwned + PartialEq + Debug>(v: &T) -> String {
    let r = catch_unwind(AssertUnwindSafe(|| {
        let mut buf = Vec::new();
        if let Err(e) = C::enc(&mut buf, v) {
            return format!("encode error: {}", short(&e));
        }
        match C::dec::<T>(&buf) {
            Err(e) => format!("decode error: {}", short(&e)),
            Ok(back) if back == *v => "ok".to_string(),
            Ok(back) => format!("WRONG VALUE: {back:?}"),
        }
    }));
    r.unwrap_or_else(|p| {
        let m = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("PANIC: {}", short(&m))
    })
}

fn short(s: &str) -> String {
    let s = s.replace('|', "/").replace('\n', " ");
    if s.len() > 90 { format!("{}…", &s[..s.char_indices().nth(88).map(|x| x.0).unwrap_or(s.len())]) } else { s }
}

fn enc_bytes<C: Codec, T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    let mut b = Vec::new();
    C::enc(&mut b, v).unwrap();
    b
}

pub fn run() {
    let names: Vec<&str> = codecs::NAMES.to_vec();
    let header = |first: &str| {
        println!("| {first} | {} |", names.join(" | "));
        println!("|---|{}", "---|".repeat(names.len()));
    };

    // a. appending.
    println!("\n### a. Appending into an existing `&mut Vec<u8>`\n");
    println!("Heap allocations made while encoding into a frame buffer that already has 3 bytes and 1 MiB of spare capacity (the value is built before counting starts) (the prefix must stay, the bytes appended must equal a standalone encoding).\n");
    header("value");
    let rec = workloads::records(1).remove(0);
    macro_rules! append_row {
        ($label:expr, $v:expr) => {{
            let mut cells = vec![];
            let v = $v;
            for_each_codec!(C => {
                let alone = enc_bytes::<C, _>(v);
                let mut buf = Vec::with_capacity(1 << 20);
                buf.extend_from_slice(&[0xAA, 0xBB, 0xCC]);
                let (r, st) = tracked(|| C::enc(&mut buf, v));
                r.unwrap();
                let ok = &buf[..3] == &[0xAA, 0xBB, 0xCC] && &buf[3..] == &alone[..];
                cells.push(format!("{} alloc{} ({} B){}", st.count, if st.count == 1 { "" } else { "s" }, st.bytes, if ok { "" } else { " MISMATCH" }));
            });
            println!("| {} | {} |", $label, cells.join(" | "));
        }};
    }
    append_row!("`(u64,)`", &(12345u64,));
    append_row!("`String` (21 chars)", &rec.name);
    append_row!("one record (struct-heavy)", &rec);
    append_row!("`ByteBuf` 64 KiB", &ByteBuf::from(vec![7u8; 65536]));

    // b. serialize called once.
    println!("\n### b. `Serialize::serialize` calls per encode (counter in a `SharedBytes`-like type)\n");
    header("value");
    let mut cells = vec![];
    for_each_codec!(C => {
        cells.push(calls(|| { let mut b = Vec::new(); C::enc(&mut b, &Counted(1, 2)).unwrap(); }).to_string());
    });
    println!("| `Counted` via the append path above | {} |", cells.join(" | "));
    let mut cells = vec![];
    for_each_codec!(C => {
        cells.push(calls(|| { let mut b = Vec::new(); C::enc(&mut b, &(vec![Counted(1, 2), Counted(3, 4), Counted(5, 6)], 9u8)).unwrap(); }).to_string());
    });
    println!("| `(vec![Counted;3], u8)` via the append path (want 3) | {} |", cells.join(" | "));
    println!("\nOther entry points (calls for one `Counted`):\n");
    let c = Counted(1, 2);
    let other: Vec<(&str, usize)> = vec![
        ("bincode1::serialize (returns Vec)", calls(|| { bincode1::serialize(&c).unwrap(); })),
        ("bincode1::serialize_into(&mut Vec)", calls(|| { bincode1::serialize_into(&mut Vec::new(), &c).unwrap(); })),
        ("postcard::to_allocvec", calls(|| { postcard::to_allocvec(&c).unwrap(); })),
        ("postcard::to_extend(v, Vec)", calls(|| { postcard::to_extend(&c, Vec::new()).unwrap(); })),
        ("postcard::to_io(v, &mut Vec)", calls(|| { postcard::to_io(&c, &mut Vec::new()).unwrap(); })),
        ("postcard custom Flavor appending (codec above)", calls(|| { codecs::Postcard::enc(&mut Vec::new(), &c).unwrap(); })),
        ("bitcode::serialize", calls(|| { bitcode::serialize(&c).unwrap(); })),
        ("wincode::serialize::<SerdeCompat<T>> (wincode's own entry)", calls(|| {
            <serde_wincode::SerdeCompat<Counted> as wincode::Serialize>::serialize(&c).unwrap();
        })),
        ("wincode::serialize_into(&mut Vec, SerdeCompat)", calls(|| {
            let mut v = Vec::new();
            <serde_wincode::SerdeCompat<Counted> as wincode::Serialize>::serialize_into(&mut v, &c).unwrap();
        })),
        ("serde_wincode::Serializer::new(&mut Vec) (codec above)", calls(|| { codecs::WincodeDefault::enc(&mut Vec::new(), &c).unwrap(); })),
        ("bincode2 serde::encode_to_vec(legacy)", calls(|| { bincode2::serde::encode_to_vec(&c, bincode2::config::legacy()).unwrap(); })),
        ("bincode2 serde::encode_into_std_write(&mut Vec)", calls(|| { codecs::Bincode2::enc(&mut Vec::new(), &c).unwrap(); })),
    ];
    println!("| entry point | serialize calls |\n|---|---:|");
    for (n, k) in other {
        println!("| `{n}` | {k} |");
    }

    // Errors carry the type's own message?
    println!("\n### Custom error messages from a value's own Serialize / Deserialize\n");
    header("direction");
    let mut se = vec![];
    let mut de = vec![];
    for_each_codec!(C => {
        let e = C::enc(&mut Vec::new(), &Failing).unwrap_err();
        se.push(short(&e));
        let bytes = enc_bytes::<C, _>(&5u32);
        let e = C::dec::<Failing>(&bytes).unwrap_err();
        de.push(short(&e));
    });
    println!("| serialize → `custom(\"MY-SER-MESSAGE\")` | {} |", se.join(" | "));
    println!("| deserialize → `custom(\"MY-DE-MESSAGE\")` | {} |", de.join(" | "));

    // Same bytes as bincode 1?
    println!("\n### Byte-for-byte identical to bincode 1's encoding?\n");
    header("value");
    let recs = workloads::records(10_000);
    let facts = workloads::factorials(3000);
    let floats: Vec<f64> = (0..100_000).map(|i| i as f64 * 0.37).collect();
    let bb = ByteBuf::from((0..100_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    let mut cells = vec![];
    for_each_codec!(C => {
        let mut same = 0;
        let mut total = 0;
        let mut check = |a: Vec<u8>, b: Vec<u8>| { total += 1; if a == b { same += 1; } };
        for i in (0..100_000u64).step_by(7) { check(enc_bytes::<C, _>(&(i,)), enc_bytes::<codecs::Bincode1, _>(&(i,))); }
        for f in &facts { check(enc_bytes::<C, _>(f), enc_bytes::<codecs::Bincode1, _>(f)); }
        check(enc_bytes::<C, _>(&recs), enc_bytes::<codecs::Bincode1, _>(&recs));
        check(enc_bytes::<C, _>(&floats), enc_bytes::<codecs::Bincode1, _>(&floats));
        check(enc_bytes::<C, _>(&bb), enc_bytes::<codecs::Bincode1, _>(&bb));
        check(enc_bytes::<C, _>(&Counted(3, 4)), enc_bytes::<codecs::Bincode1, _>(&Counted(3, 4)));
        check(enc_bytes::<C, _>(&(Some('x'), Untagged::Num(3), std::time::Duration::new(1, 2))), enc_bytes::<codecs::Bincode1, _>(&(Some('x'), Untagged::Num(3), std::time::Duration::new(1, 2))));
        cells.push(format!("{same}/{total}"));
    });
    println!("| values identical (14,286 `(u64,)`, 3,000 factorials, the 10k records, 100k f64, a ByteBuf, a `Counted`, a mixed tuple) | {} |", cells.join(" | "));

    // c. fixed width.
    println!("\n### c. Encoded length of `(u64,)` for the values 0..100000 (length in bytes: how many values)\n");
    header("what");
    let mut dist = vec![];
    let mut dist_u32 = vec![];
    let mut small = vec![];
    for_each_codec!(C => {
        let mut h: BTreeMap<usize, usize> = BTreeMap::new();
        for i in 0..100_000u64 {
            *h.entry(enc_bytes::<C, _>(&(i,)).len()).or_default() += 1;
        }
        dist.push(h.iter().map(|(l, n)| format!("{l} B: {n}")).collect::<Vec<_>>().join(", "));
        let mut h: BTreeMap<usize, usize> = BTreeMap::new();
        for i in 0..100_000u32 {
            *h.entry(enc_bytes::<C, _>(&(i, i as u64)).len()).or_default() += 1;
        }
        dist_u32.push(h.iter().map(|(l, n)| format!("{l} B: {n}")).collect::<Vec<_>>().join(", "));
        small.push(format!("{}/{}/{}", enc_bytes::<C, _>(&(0u64,)).len(), enc_bytes::<C, _>(&(u64::MAX,)).len(), enc_bytes::<C, _>(&(-1i64,)).len()));
    });
    println!("| `(u64,)`, 0..100000 | {} |", dist.join(" | "));
    println!("| `(u32, u64)` (a `SharedBytes`), 0..100000 | {} |", dist_u32.join(" | "));
    println!("| bytes for `(0u64,)` / `(u64::MAX,)` / `(-1i64,)` | {} |", small.join(" | "));

    // d. 1-tuple.
    println!("\n### d. Does `(a,)` encode exactly as `a`?\n");
    header("a");
    macro_rules! tuple_row {
        ($label:expr, $v:expr) => {{
            let mut cells = vec![];
            for_each_codec!(C => {
                let one = enc_bytes::<C, _>(&($v,));
                let alone = enc_bytes::<C, _>(&$v);
                cells.push(if one == alone { format!("yes ({} B)", one.len()) } else { format!("NO ({} vs {} B)", one.len(), alone.len()) });
            });
            println!("| {} | {} |", $label, cells.join(" | "));
        }};
    }
    tuple_row!("`77u64`", 77u64);
    tuple_row!("`u64::MAX`", u64::MAX);
    tuple_row!("`String` \"hello\"", String::from("hello"));
    tuple_row!("`Vec<u32>` of 5", vec![1u32, 2, 3, 4, 5]);
    tuple_row!("a record", rec.clone());
    tuple_row!("`BigUint` 100!", workloads::factorials(100).pop().unwrap());
    tuple_row!("`Option<u8>` Some(3)", Some(3u8));

    // e. trailing bytes.
    println!("\n### e. Trailing bytes: decode `u64` from its encoding plus one extra byte\n");
    header("input");
    let mut cells = vec![];
    for_each_codec!(C => {
        let mut b = enc_bytes::<C, _>(&5u64);
        b.push(0x00);
        cells.push(match C::dec::<u64>(&b) { Ok(v) => format!("ignored (Ok({v}))"), Err(e) => format!("error: {}", short(&e)) });
    });
    println!("| `enc(5u64) ++ [0]` | {} |", cells.join(" | "));
    let mut cells = vec![];
    for_each_codec!(C => {
        let b = enc_bytes::<C, _>(&5u64);
        cells.push(match C::dec::<u64>(&b[..b.len().saturating_sub(1)]) { Ok(v) => format!("Ok({v})"), Err(e) => format!("error: {}", short(&e)) });
    });
    println!("| `enc(5u64)` less its last byte | {} |", cells.join(" | "));
    // Ways to detect trailing bytes where the default ignores them.
    let mut b = enc_bytes::<codecs::Bincode1, _>(&5u64);
    b.push(0);
    use bincode1::Options;
    let strict_b1 = bincode1::DefaultOptions::new().with_fixint_encoding().reject_trailing_bytes().deserialize::<u64>(&b);
    let mut rest: &[u8] = &b;
    let w = u64::deserialize(serde_wincode::Deserializer::<_, codecs::WinCfg1G>::new(&mut rest));
    let pc = enc_bytes::<codecs::Postcard, _>(&5u64).into_iter().chain([0u8]).collect::<Vec<u8>>();
    let p = postcard::take_from_bytes::<u64>(&pc);
    println!("\nStrict alternatives on the same input: bincode1 `DefaultOptions::new().with_fixint_encoding().reject_trailing_bytes()` → {:?}; postcard `take_from_bytes` → {:?} (remainder to check); serde-wincode `Deserializer::new(&mut slice)` → {:?}, {} byte(s) left in the slice to check.",
        strict_b1.map_err(|e| e.to_string()), p.map(|(v, r)| (v, r.len())).map_err(|e| e.to_string()), w.map_err(|e| e.to_string()), rest.len());

    // g. serde features.
    // Panics are caught and reported in the table; keep their messages off stderr.
    std::panic::set_hook(Box::new(|_| {}));
    println!("\n### g. Round trips of serde features (non-self-describing formats)\n");
    header("value");
    macro_rules! rt_row {
        ($label:expr, $ty:ty, $v:expr) => {{
            let v: $ty = $v;
            let mut cells = vec![];
            for_each_codec!(C => { cells.push(roundtrip::<C, $ty>(&v)); });
            println!("| {} | {} |", $label, cells.join(" | "));
        }};
    }
    // Recursive types: serde-wincode's (de)serializer wraps its writer/reader in one more
    // `&mut` per level, so a recursive type does not compile with it (E0275, shown by
    // src/bin/wincode_recursive.rs); those cells are filled in by hand.
    macro_rules! rt_row_rec {
        ($label:expr, $ty:ty, $v:expr) => {{
            let v: $ty = $v;
            let nc = "does not compile (E0275)".to_string();
            let cells = vec![
                roundtrip::<codecs::Bincode1, $ty>(&v),
                roundtrip::<codecs::Postcard, $ty>(&v),
                roundtrip::<codecs::Bitcode, $ty>(&v),
                nc.clone(),
                nc,
                roundtrip::<codecs::Bincode2, $ty>(&v),
            ];
            println!("| {} | {} |", $label, cells.join(" | "));
        }};
    }
    rt_row_rec!("`serde_json::Value` object", serde_json::Value, serde_json::json!({"a": 1, "b": [true, "x"]}));
    rt_row_rec!("`Vec<serde_json::Value>` `[1, \"a\"]` (mixed kinds)", Vec<serde_json::Value>, vec![serde_json::json!(1), serde_json::json!("a")]);
    rt_row_rec!("recursive struct `Tree { value, children: Vec<Tree> }`", Tree, Tree { value: 1, children: vec![Tree { value: 2, children: vec![] }] });
    rt_row!("`#[serde(untagged)]` enum", Untagged, Untagged::Text("hi".into()));
    rt_row!("`#[serde(flatten)]` field", Flattened, Flattened { id: 1, inner: Inner { a: 2, b: "z".into() } });
    rt_row!("`#[serde(tag = \"t\")]` (internally tagged)", Internally, Internally::B { y: "q".into() });
    rt_row!("`#[serde(tag, content)]` (adjacently tagged)", Adjacently, Adjacently::B("q".into()));
    rt_row!("`skip_serializing_if` (field None)", SkipIfNone, SkipIfNone { a: 1, b: None, c: 3 });
    rt_row!("`rename` + `skip` fields", Renamed, Renamed { a: 1, skipped: 0, c: "c".into() });
    rt_row!("`collect_seq` of an iterator without exact length", UnsizedSeq, UnsizedSeq(vec![1, 2, 3]));
    rt_row!("`u128::MAX` / `i128::MIN`", (u128, i128), (u128::MAX, i128::MIN));
    rt_row!("`char` '€'", char, '€');
    rt_row!("`HashMap<String, u32>`", HashMap<String, u32>, [("a".to_string(), 1u32), ("b".to_string(), 2)].into_iter().collect());
    rt_row!("`BTreeMap<u32, Vec<String>>`", BTreeMap<u32, Vec<String>>, [(1u32, vec!["x".to_string()])].into_iter().collect());
    rt_row!("`std::time::Duration`", std::time::Duration, std::time::Duration::new(3, 5));
    rt_row!("`std::net::IpAddr`", std::net::IpAddr, "10.1.2.3".parse().unwrap());
    rt_row!("unit struct, `()`, `Option<()>`", (Unit, (), Option<()>), (Unit, (), Some(())));
    rt_row!("`Box<str>`, `Option<Box<[u8]>>`", (Box<str>, Option<Box<[u8]>>), ("s".into(), Some(vec![1u8].into_boxed_slice())));
    rt_row!("`num_bigint::BigUint` 30!", num_bigint::BigUint, workloads::factorials(30).pop().unwrap());
    rt_row!("`num_bigint::BigInt` -(30!)", num_bigint::BigInt, -num_bigint::BigInt::from(workloads::factorials(30).pop().unwrap()));
    rt_row!("`f64::NAN` bits / `-0.0`", (u64, f64), (f64::NAN.to_bits(), -0.0));
    let _ = std::panic::take_hook();
}

// ---------------------------------------------------------------- e. hostile lengths

/// The bytes, for codec `codec`, of a length prefix that claims `n` and then zero padding to
/// 16 bytes in all. For bitcode the prefix is its column of lengths (see `bitcode_len`).
pub fn hostile(codec: &str, n: u64) -> Vec<u8> {
    let mut b = match codec {
        "postcard" => {
            let mut v = vec![];
            let mut x = n;
            loop {
                let byte = (x & 0x7f) as u8;
                x >>= 7;
                if x == 0 {
                    v.push(byte);
                    break;
                }
                v.push(byte | 0x80);
            }
            v
        }
        "bitcode" => bitcode_len(n),
        _ => n.to_le_bytes().to_vec(),
    };
    b.resize(16, 0);
    b
}

/// bitcode's serde format for a `Vec<u8>` starts with its length column: a byte `255` for a
/// length of 255 or more, then the large lengths packed; we take the prefix that bitcode itself
/// writes for a real vector of `probe` bytes and patch the packed length, which is checked
/// by `explore`.
pub fn bitcode_len(n: u64) -> Vec<u8> {
    // Filled in from `explore`: 255, then a packed-int header, then the value.
    let mut v = vec![255u8];
    v.extend_from_slice(&bitcode_packed_usize(n));
    v
}

/// Bytes bitcode writes for one packed usize of value `n` ≥ 255 (found by `explore`).
fn bitcode_packed_usize(n: u64) -> Vec<u8> {
    // One packed integer: its byte width class then the integer, little endian.
    let probe = bitcode::serialize(&vec![n as usize]).unwrap();
    // `vec![n]` as a Vec<usize> of length 1: [len column = 1][packed ints = n]
    probe[1..].to_vec()
}

pub fn untrusted_one(codec: &str, case: &str, claim: u64) {
    let input = hostile(codec, claim);
    crate::alloc::GUARD.store(true, SeqCst);
    macro_rules! go {
        ($C:ty) => {{
            let (r, st) = tracked(|| match case {
                "Vec<u8>" => <$C>::dec::<Vec<u8>>(&input).map(|v| v.len()),
                "ByteBuf" => <$C>::dec::<ByteBuf>(&input).map(|v| v.len()),
                "String" => <$C>::dec::<String>(&input).map(|v| v.len()),
                "Vec<u64>" => <$C>::dec::<Vec<u64>>(&input).map(|v| v.len()),
                _ => unreachable!(),
            });
            let what = match r {
                Ok(n) => format!("Ok(len {n})"),
                Err(e) => format!("error: {}", short(&e)),
            };
            println!("RESULT {} ; largest allocation {} B", what, st.max_req);
        }};
    }
    match codec {
        "bincode1" => go!(codecs::Bincode1),
        "postcard" => go!(codecs::Postcard),
        "bitcode" => go!(codecs::Bitcode),
        "wincode(def)" => go!(codecs::WincodeDefault),
        "wincode(1G)" => go!(codecs::Wincode1G),
        "bincode2(ref)" => go!(codecs::Bincode2),
        _ => unreachable!(),
    }
}

pub fn untrusted_all() {
    let exe = std::env::current_exe().unwrap();
    for claim in [1u64 << 40, 1u64 << 29] {
        println!("\n### e. Decoding a 16-byte input whose length prefix claims {claim} (2^{}) elements\n", claim.trailing_zeros());
        println!("Each in a child process; the allocator refuses (and reports) any request over 1 GiB, which aborts the child.\n");
        let names = codecs::NAMES;
        println!("| type | {} |", names.join(" | "));
        println!("|---|{}", "---|".repeat(names.len()));
        for case in ["Vec<u8>", "ByteBuf", "String", "Vec<u64>"] {
            let mut cells = vec![];
            for codec in names {
                let input = hostile(codec, claim);
                let out = std::process::Command::new(&exe)
                    .args(["untrusted-one", codec, case, &claim.to_string()])
                    .output()
                    .unwrap();
                let so = String::from_utf8_lossy(&out.stdout);
                let se = String::from_utf8_lossy(&out.stderr);
                let res = so.lines().find_map(|l| l.strip_prefix("RESULT ")).map(str::to_string);
                let cell = match res {
                    Some(r) => r,
                    None => format!(
                        "child died ({}); {}",
                        out.status,
                        short(se.lines().find(|l| l.starts_with("GUARD")).unwrap_or(se.lines().next().unwrap_or("")))
                    ),
                };
                cells.push(format!("{cell} [in: {}]", hex(&input[..input.iter().rposition(|&b| b != 0).map(|p| p + 1).unwrap_or(1)])));
            }
            println!("| `{case}` | {} |", cells.join(" | "));
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join("")
}

/// Prints some bitcode encodings, to see how its lengths look; and checks that postcard's
/// own entry points are no faster than the appending Flavor used in the benchmarks.
pub fn explore() {
    let facts = workloads::factorials(3000);
    let args: Vec<(u64,)> = (0..100_000u64).map(|i| (i,)).collect();
    for round in 0..3 {
        let t = std::time::Instant::now();
        let mut frame = Vec::new();
        for f in &facts { codecs::Postcard::enc(&mut frame, f).unwrap(); }
        let a = t.elapsed();
        let t = std::time::Instant::now();
        let mut frame2 = Vec::new();
        for f in &facts { frame2.extend_from_slice(&postcard::to_allocvec(f).unwrap()); }
        let b = t.elapsed();
        let t = std::time::Instant::now();
        let mut frame3 = Vec::new();
        for f in &args { codecs::Postcard::enc(&mut frame3, f).unwrap(); }
        let c = t.elapsed();
        let t = std::time::Instant::now();
        let mut frame4 = Vec::new();
        for f in &args { frame4.extend_from_slice(&postcard::to_allocvec(f).unwrap()); }
        let d = t.elapsed();
        assert_eq!(frame, frame2);
        assert_eq!(frame3, frame4);
        println!("round {round}: postcard factorials: Flavor {a:?}, to_allocvec+copy {b:?}; (u64,) x100k: Flavor {c:?}, to_allocvec+copy {d:?}");
    }
    for n in [3usize, 254, 255, 300, 70_000] {
        let v = vec![0u8; n];
        let b = bitcode::serialize(&v).unwrap();
        println!("bitcode Vec<u8> len {n}: {} bytes, head {}", b.len(), hex(&b[..b.len().min(12)]));
        let b = bitcode::serialize(&vec![n]).unwrap();
        println!("bitcode vec![{n}usize]: {}", hex(&b));
    }
    let b = bitcode::serialize(&vec![1usize << 40]).unwrap();
    println!("bitcode vec![1<<40 usize]: {}", hex(&b));
    for c in codecs::NAMES {
        println!("{c} hostile 2^40: {}", hex(&hostile(c, 1 << 40)));
    }
    // Check that our bitcode length prefix is the one bitcode reads: splice it in front of
    // the rest of a real encoding of 300 and 70000 bytes.
    for n in [300usize, 70_000] {
        let real = bitcode::serialize(&vec![9u8; n]).unwrap();
        let ours = bitcode_len(n as u64);
        assert_eq!(&real[..ours.len()], &ours[..], "prefix for {n}");
        let mut spliced = ours.clone();
        spliced.extend_from_slice(&real[ours.len()..]);
        let back: Vec<u8> = bitcode::deserialize(&spliced).unwrap();
        println!("bitcode prefix check {n}: prefix {} decodes to len {}", hex(&ours), back.len());
    }
}
