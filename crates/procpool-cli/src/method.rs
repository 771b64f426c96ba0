//! One workload run by each of Pool's methods, so that every experiment offers the same
//! choice of `--method`.

use std::fmt;

use anyhow::Result;
use procpool::{MapOptions, Pool, Task};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How the calls of an experiment are run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Method {
    /// In this process, one after another.
    Serial,
    /// `pool.apply` for each call: one at a time, in workers.
    Apply,
    /// `pool.apply_async` for each call, then `get` on each.
    ApplyAsync,
    /// `pool.map` over all calls.
    Map,
    /// `pool.map_async`, then `get`.
    MapAsync,
    /// `pool.imap`, results in order as they come.
    Imap,
    /// `pool.imap_unordered`, results in any order (sorted back here by the caller).
    ImapUnordered,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Serial => "serial",
            Method::Apply => "apply",
            Method::ApplyAsync => "apply_async",
            Method::Map => "map",
            Method::MapAsync => "map_async",
            Method::Imap => "imap",
            Method::ImapUnordered => "imap_unordered",
        })
    }
}

/// Runs `f` on every input with `method`, returning the outputs in input order.
///
/// `pool` is used by every method but `Serial`. `imap_unordered`'s outputs come back in
/// arrival order; `key` puts them back in input order. `done` is told how many more outputs
/// are in, as they come: one at a time, except for `map` and `map_async`, whose outputs come
/// all at once.
pub fn run_all<F, A, R>(
    pool: Option<&Pool>,
    method: Method,
    f: F,
    inputs: Vec<A>,
    chunksize: Option<usize>,
    key: impl Fn(&R) -> usize,
    done: &mut dyn FnMut(u64),
) -> Result<Vec<R>>
where
    F: Task<(A,), Output = R> + Fn(A) -> R,
    A: Serialize + DeserializeOwned + Clone,
    R: DeserializeOwned,
{
    let options = chunksize.map_or_else(MapOptions::new, |c| MapOptions::new().chunksize(c));
    let mut one = |r| {
        done(1);
        r
    };
    let pool = match (method, pool) {
        (Method::Serial, _) => return Ok(inputs.into_iter().map(|a| one(f(a))).collect()),
        (_, Some(pool)) => pool,
        (_, None) => anyhow::bail!("method {method} needs a pool"),
    };
    let all = |outputs: Vec<R>, done: &mut dyn FnMut(u64)| {
        done(outputs.len() as u64);
        outputs
    };
    Ok(match method {
        Method::Serial => unreachable!("handled above"),
        Method::Apply => inputs
            .into_iter()
            .map(|a| pool.apply(f, (a,)).map(&mut one))
            .collect::<Result<_, _>>()?,
        Method::ApplyAsync => {
            let pending: Vec<_> = inputs
                .into_iter()
                .map(|a| pool.apply_async(f, (a,)))
                .collect::<Result<_, _>>()?;
            pending
                .iter()
                .map(|p| p.get().map(&mut one))
                .collect::<Result<_, _>>()?
        }
        Method::Map => all(pool.map_with(f, inputs, options)?, done),
        Method::MapAsync => all(pool.map_async_with(f, inputs, options)?.get()?, done),
        Method::Imap => pool
            .imap_with(f, inputs, options)?
            .map(|r| r.map(&mut one))
            .collect::<Result<_, _>>()?,
        Method::ImapUnordered => {
            let mut outputs: Vec<R> = pool
                .imap_unordered_with(f, inputs, options)?
                .map(|r| r.map(&mut one))
                .collect::<Result<_, _>>()?;
            outputs.sort_by_key(|o| key(o));
            outputs
        }
    })
}
