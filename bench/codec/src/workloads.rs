//! Workloads: the values the benchmarks encode.

use num_bigint::BigUint;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub enum Kind {
    Empty,
    Count(u32),
    Pair(i16, i16),
    Named { tag: u8, weight: f32 },
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct Pos {
    pub x: i64,
    pub y: i64,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct Rec {
    pub name: String,
    pub id: u32,
    pub score: f64,
    pub parent: Option<u64>,
    pub samples: Vec<u16>,
    pub kind: Kind,
    pub pos: Pos,
}

pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// 10,000 records: a ~21-char name, u32, f64, Option<u64> (half Some), 8 u16, an enum with
/// data (four variants in turn), a nested struct of two i64.
pub fn records(n: usize) -> Vec<Rec> {
    let mut rng = Rng::new(42);
    (0..n)
        .map(|i| {
            let r = rng.next();
            Rec {
                name: format!("record-{:06}-{:07}", i, r % 10_000_000),
                id: (r >> 32) as u32,
                score: (r % 1_000_000) as f64 / 7.0,
                parent: if i % 2 == 0 { Some(rng.next() >> 20) } else { None },
                samples: (0..8).map(|_| rng.next() as u16).collect(),
                kind: match i % 4 {
                    0 => Kind::Empty,
                    1 => Kind::Count(r as u32),
                    2 => Kind::Pair(r as i16, (r >> 16) as i16),
                    _ => Kind::Named { tag: r as u8, weight: (r % 1000) as f32 * 0.5 },
                },
                pos: Pos { x: rng.next() as i64, y: -(i as i64) },
            }
        })
        .collect()
}

/// n! for n in 1..=max.
pub fn factorials(max: u32) -> Vec<BigUint> {
    let mut out = Vec::with_capacity(max as usize);
    let mut f = BigUint::from(1u32);
    for n in 1..=max {
        f *= n;
        out.push(f.clone());
    }
    out
}
