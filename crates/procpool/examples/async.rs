//! Pool results awaited from async code: a paginated crawl, one page per worker process,
//! awaited with `tokio::join!` beside other async work, and a race with `tokio::select!`
//! between the crawl and a deadline.
//!
//! Run it with `cargo run --release -p procpool --example async`. procpool has no async
//! runtime of its own: its results wake whatever task awaits them.

use std::time::Duration;

use procpool::Pool;

/// One page of a timeline: what a worker makes of "fetching" page `page` of `pages`. A
/// stand-in for a request, as CPU work, so that the example runs anywhere.
#[procpool::task]
fn fetch_page(page: u32, pages: u32) -> Vec<u64> {
    let first = u64::from(page) * 200;
    (first..first + 200)
        .filter(|id| id % u64::from(pages) != 0)
        .collect()
}

/// Something else the program does meanwhile, on the same thread.
async fn tick(times: u32) -> u32 {
    for _ in 0..times {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    times
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::builder().processes(4).build()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    runtime.block_on(async {
        // Ten pages, each in a worker, awaited together with the ticks of a timer.
        let pages = pool.starmap_async(fetch_page, (0..10).map(|page| (page, 10)))?;
        let (pages, ticks) = tokio::join!(pages.into_future(), tick(3));
        let reposts: usize = pages?.iter().map(Vec::len).sum();
        println!("{reposts} reposts in 10 pages, while the timer ticked {ticks} times");

        // The first page against a deadline: whichever comes first wins.
        let first = pool.apply_async(fetch_page, (0, 10))?;
        tokio::select! {
            page = first => println!("page 0 first: {} reposts", page?.len()),
            () = tokio::time::sleep(Duration::from_secs(30)) => println!("the deadline first"),
        }
        Ok::<_, procpool::Error>(())
    })?;
    pool.close();
    pool.join()?;
    Ok(())
}
