//! Measures serde binary codecs for procpool's wire. Usage:
//!   codec-bench props          property checks (markdown)
//!   codec-bench untrusted      hostile length prefixes, each decode in a child process
//!   codec-bench bench [scale]  timed workloads (markdown); scale multiplies time budgets
//!   codec-bench all [scale]    all of the above
//!   codec-bench explore        bitcode encodings of lengths

mod alloc;
mod bench;
mod codecs;
mod props;
mod workloads;

#[global_allocator]
static GLOBAL: alloc::Tracking = alloc::Tracking;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("all");
    let scale = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1.0);
    match mode {
        "props" => props::run(),
        "untrusted" => props::untrusted_all(),
        "untrusted-one" => props::untrusted_one(&args[2], &args[3], args[4].parse().unwrap()),
        "explore" => props::explore(),
        "bench" => bench::run(&bench::Cfg { scale }),
        "all" => {
            props::run();
            props::untrusted_all();
            bench::run(&bench::Cfg { scale });
        }
        m => panic!("unknown mode {m}"),
    }
}
